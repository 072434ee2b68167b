//! From flags to running controllers: the backends' clients, the settings,
//! the kinds and their context, the metrics server, and the shared realms'
//! manager, until a shutdown signal.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use kube::Client;
use ossature_model::Platform;
use ossature_model::workloads::Autoscaler;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::adapters::Calls;
use crate::adapters::edge::caddy::CaddyEdge;
use crate::adapters::keycloak::Keycloak;
use crate::adapters::openbao::OpenBao;
use crate::adapters::pulsar::{Pulsar, TokenFile};
use crate::cli::{Args, AutoscalerChoice};
use crate::context::{Backends, Context, Settings};
use crate::leader::Leadership;
use crate::metrics::Metrics;

pub async fn run(mut args: Args) -> Result<()> {
    let (client, config) = client(&mut args).await?;
    crate::crds::require(&client).await?;
    crate::admission::ensure(&client, &args.root_domain)
        .await
        .context("writing the admission policy of certificate names")?;
    let calls = Calls::default();
    let metrics = Metrics::new(&calls);
    let mut settings = settings(&args)?;
    settings.secrets = crate::secrets_access::SecretsAccess::resolve(
        &client,
        args.secrets_role.as_deref(),
        &crate::leader::lease_name(args.selector.as_deref()),
    )
    .await?;
    let kinds =
        crate::controllers::kinds(&client, args.selector.as_deref(), metrics.work().clone());
    let identity = format!(
        "{}-{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "ossature".into()),
        std::process::id()
    );
    let stop = CancellationToken::new();
    let lease = crate::leader::lease_name(args.selector.as_deref());
    let (leadership, campaign) = if args.no_leader_election {
        (Leadership::always(stop.clone()), None)
    } else {
        let (leadership, campaign) = crate::leader::campaign(
            lease_client(config)?,
            args.lease_namespace.clone(),
            lease.clone(),
            identity.clone(),
            stop.clone(),
        );
        (leadership, Some(campaign))
    };
    let backends = backends(&args, client, calls)?;
    metrics.zero(&metrics.work().controllers());
    metrics.collect(crate::metrics::Observed {
        census: kinds.census(),
        stores: kinds.handles().0,
        selector: args.selector.clone(),
        health: backends.health.clone(),
        leadership: leadership.clone(),
        lease,
    });
    let ctx = Arc::new(Context::new(
        backends,
        settings,
        metrics.clone(),
        kinds.handles(),
        leadership,
    ));
    crate::health::start(ctx.clone());

    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding the metrics address {}", args.metrics_addr))?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || async move { metrics.render() }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            error!("metrics server stopped: {e}");
        }
    });
    info!(
        metrics = %args.metrics_addr,
        selector = args.selector.as_deref().unwrap_or("(every tenant)"),
        "ossature-operator started"
    );
    let held = crate::shared::hold(ctx.clone(), args.lease_namespace.clone(), identity.clone());
    let work = async {
        tokio::select! {
            _ = kinds.run(ctx.clone(), args.concurrency) => {}
            _ = crate::shared::manage_realms(ctx.clone(), held) => {}
        }
    };
    tokio::pin!(work);
    tokio::select! {
        _ = &mut work => {}
        _ = shutdown_signal() => {}
    }
    // Stopping: reconciles in flight end at their next step, the watches
    // close, and the Leases are handed over; all within a few seconds,
    // whatever a backend is doing.
    info!("stopping");
    stop.cancel();
    let handover = async {
        let _ = (&mut work).await;
        if let Some(campaign) = campaign {
            let _ = campaign.await;
        }
        crate::shared::release(&ctx, &args.lease_namespace, &identity).await;
    };
    if tokio::time::timeout(STOP_WITHIN, handover).await.is_err() {
        warn!("stopped before everything was handed over");
    }
    info!("ossature-operator stopped");
    Ok(())
}

/// A stop (SIGTERM) ends the process within this time; the chart's
/// termination grace period is longer.
pub const STOP_WITHIN: Duration = Duration::from_secs(4);

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// A client for the leader Lease whose calls give up within
/// [`crate::leader::CALL_TIMEOUT`].
fn lease_client(mut config: kube::Config) -> Result<Client> {
    let timeout = Some(crate::leader::CALL_TIMEOUT);
    config.connect_timeout = timeout;
    config.read_timeout = timeout;
    config.write_timeout = timeout;
    Client::try_from(config).context("building the Lease client")
}

/// The apiserver's client: the local stack's, or the one the environment
/// names (in-cluster, or a kubeconfig).
async fn client(args: &mut Args) -> Result<(Client, kube::Config)> {
    #[cfg(feature = "local-stack")]
    if args.local_stack() {
        return crate::local_stack::bring_up(args).await;
    }
    let _ = &args;
    let config = kube::Config::infer()
        .await
        .context("finding the Kubernetes API (in-cluster, or KUBECONFIG)")?;
    let client = Client::try_from(config.clone()).context("connecting to the Kubernetes API")?;
    Ok((client, config))
}

fn settings(args: &Args) -> Result<Settings> {
    let platform = Platform {
        root_domain: args.root_domain.clone(),
        residency: args.residency(),
        host_issuer: args.host_issuer.clone(),
        max_dedicated_realms: args.max_dedicated_realms as usize,
    };
    if let Some(problem) = platform.problems().into_iter().next() {
        anyhow::bail!("{problem}");
    }
    Ok(Settings {
        platform,
        resync: Duration::from_secs(args.resync_seconds),
        max_backoff: Duration::from_secs(args.max_backoff_seconds),
        selector: args.selector.clone(),
        acme_namespace: args.acme_namespace.clone(),
        lease_namespace: args.lease_namespace.clone(),
        token_key: args.pulsar_token_key.clone(),
        autoscaler: match args.autoscaler {
            AutoscalerChoice::Auto => None,
            AutoscalerChoice::Keda => Some(Autoscaler::Keda),
            AutoscalerChoice::Hpa => Some(Autoscaler::Hpa),
        },
        secrets: crate::secrets_access::SecretsAccess::Cluster,
    })
}

fn backends(args: &Args, client: Client, calls: Calls) -> Result<Backends> {
    let required = |value: &Option<String>, flag: &str, var: &str| {
        value.clone().with_context(|| {
            format!("--{flag} (or {var}) is required unless --local-stack is given")
        })
    };
    let keycloak = Keycloak::new(
        &required(&args.keycloak_url, "keycloak-url", "OSSATURE_KEYCLOAK_URL")?,
        &required(
            &args.keycloak_admin_user,
            "keycloak-admin-user",
            "OSSATURE_KEYCLOAK_ADMIN_USER",
        )?,
        &required(
            &args.keycloak_admin_password,
            "keycloak-admin-password",
            "OSSATURE_KEYCLOAK_ADMIN_PASSWORD",
        )?,
        calls.clone(),
    )?;
    let pulsar = Pulsar::new(
        &required(
            &args.pulsar_admin_url,
            "pulsar-admin-url",
            "OSSATURE_PULSAR_ADMIN_URL",
        )?,
        args.pulsar_token_file
            .as_ref()
            .map(|path| {
                TokenFile::read(path)
                    .with_context(|| format!("--pulsar-token-file {}", path.display()))
            })
            .transpose()?,
        calls.clone(),
    )?;
    let openbao = OpenBao::new(
        &required(&args.openbao_addr, "openbao-addr", "OSSATURE_OPENBAO_ADDR")?,
        &required(
            &args.openbao_token,
            "openbao-token",
            "OSSATURE_OPENBAO_TOKEN",
        )?,
        calls.clone(),
    )?;
    let health = crate::health::Health::default();
    let dns = crate::dns::Dns::new(args.dns_server)
        .map_err(anyhow::Error::msg)
        .context("--dns-server")?;
    Ok(Backends {
        edge: edge(args, &calls)?.map(|edge| crate::edge::Edges::start(edge, health.clone())),
        client,
        keycloak,
        pulsar,
        openbao,
        dns: Some(dns),
        calls,
        health,
    })
}

/// The name of an operator's configuration at the edge: instances with
/// disjoint selectors keep apart at a shared edge too.
pub fn edge_instance(selector: Option<&str>) -> String {
    match selector {
        Some(selector) => {
            let digest = ring::digest::digest(&ring::digest::SHA256, selector.as_bytes());
            format!("s-{}", ossature_model::names::hex(&digest.as_ref()[..5]))
        }
        None => "ossature".to_string(),
    }
}

/// The edge's adapter, unless the operator runs without one.
fn edge(args: &Args, calls: &Calls) -> Result<Option<CaddyEdge>> {
    let Some(url) = args.edge_admin_url.as_deref().filter(|_| !args.no_edge) else {
        return Ok(None);
    };
    let dir = args
        .edge_cert_dir
        .clone()
        .context("--edge-cert-dir (or OSSATURE_EDGE_CERT_DIR) is required with --edge-admin-url")?;
    let instance = edge_instance(args.selector.as_deref());
    // Each instance its own files: one never removes what another's
    // configuration still loads.
    let dir = dir.join(&instance);
    Ok(Some(CaddyEdge::new(
        url,
        &args.edge_server,
        &instance,
        dir,
        calls.clone(),
    )?))
}
