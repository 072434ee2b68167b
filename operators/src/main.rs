use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Parser, ValueEnum};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use ossature_operator::adapters::Calls;
use ossature_operator::adapters::keycloak::Keycloak;
use ossature_operator::adapters::openbao::OpenBao;
use ossature_operator::adapters::pulsar::Pulsar;
use ossature_operator::context::{Context, Settings};
use ossature_operator::controllers::Controllers;
use ossature_operator::metrics::Metrics;
use tracing::{error, info};

/// Runs Ossature's Tenant, Scope and Environment controllers: each Tenant
/// becomes a namespace with quota and network policies, a Keycloak realm, a
/// Pulsar tenant and OpenBao paths; each Scope a nested Keycloak group and
/// RBAC that cascades down the tree; each Environment a namespace and a Pulsar
/// namespace. Each reports one Ready condition naming what blocks.
///
/// With `--local-stack` it brings up the embedded local stack first and takes
/// everything from it. Otherwise backend addresses and credentials come from
/// flags or from the variables `ossature-dev env` prints, and the CRDs must be
/// installed first: `kubectl apply -f crds/yaml/`.
#[derive(Parser, Debug)]
#[command(name = "ossature-operator", version)]
struct Args {
    /// Keycloak base URL.
    #[arg(long, env = "OSSATURE_KEYCLOAK_URL")]
    keycloak_url: Option<String>,
    /// Keycloak master-realm admin user.
    #[arg(long, env = "OSSATURE_KEYCLOAK_ADMIN_USER")]
    keycloak_admin_user: Option<String>,
    /// Keycloak master-realm admin password.
    #[arg(long, env = "OSSATURE_KEYCLOAK_ADMIN_PASSWORD", hide_env_values = true)]
    keycloak_admin_password: Option<String>,
    /// Pulsar admin REST URL.
    #[arg(long, env = "OSSATURE_PULSAR_ADMIN_URL")]
    pulsar_admin_url: Option<String>,
    /// OpenBao address.
    #[arg(long, env = "OSSATURE_OPENBAO_ADDR")]
    openbao_addr: Option<String>,
    /// OpenBao token allowed to manage mounts and policies.
    #[arg(long, env = "OSSATURE_OPENBAO_TOKEN", hide_env_values = true)]
    openbao_token: Option<String>,
    /// Bring up the embedded local stack (`ossature-dev up`), install the CRDs
    /// into it and take every backend address from it.
    #[arg(long)]
    local_stack: bool,
    /// Pulsar clusters of a residency region, as REGION=CLUSTER[,CLUSTER...]; repeat per region.
    #[arg(long = "residency", value_parser = parse_residency, default_values = ["eu=standalone", "us=standalone"])]
    residency: Vec<(String, Vec<String>)>,
    /// Seconds between periodic reconciles that detect and correct drift.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(5..=86400))]
    resync_seconds: u64,
    /// Longest wait, in seconds, between retries of a failing object.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    max_backoff_seconds: u64,
    /// Objects of each kind reconciled at once; bounds the load on Keycloak and Pulsar.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=64))]
    concurrency: u16,
    /// Manage only the Tenants matching this label selector (and their
    /// Scopes and Environments), e.g. `ossature.dev/shard=a`. Instances with
    /// disjoint selectors share a cluster; one without a selector manages
    /// every Tenant, so run it alone.
    #[arg(long, value_parser = parse_selector)]
    selector: Option<String>,
    /// Most dedicated realms (`isolation: Realm`) given out on this Keycloak;
    /// past it a tenant is Stalled with reason RealmCapacityReached. Realm
    /// creation and admin calls slow down with every realm.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=1000))]
    max_dedicated_realms: u64,
    /// Namespace of the Leases that elect the one instance managing the
    /// shared realms and that hold tenants' custom domains (one per domain,
    /// named `ossature-domain.<domain>`, its holder the tenant).
    #[arg(long, default_value = "kube-system")]
    lease_namespace: String,
    /// Namespace of the Secrets of AcmeIssuers: the account credentials the
    /// operator writes, and the External Account Binding keys it reads.
    #[arg(long, default_value = "kube-system")]
    acme_namespace: String,
    /// Domain under which every tenant's names sit: tenant `acme` owns
    /// `acme.<root-domain>` and the names below it, and may obtain
    /// certificates for those only (checked at admission). One per cluster.
    #[arg(long, env = "OSSATURE_ROOT_DOMAIN", default_value = "ossature.test", value_parser = parse_root_domain)]
    root_domain: String,
    /// Caddy's admin API: tenant hosts are served at this edge, each with
    /// its certificate, mutual TLS and allowed source ranges.
    #[arg(long, env = "OSSATURE_EDGE_ADMIN_URL")]
    edge_admin_url: Option<String>,
    /// Name of the Caddy HTTP server that serves tenant hosts.
    #[arg(long, default_value = "edge")]
    edge_server: String,
    /// Directory of the edge's key files: Caddy reads them, nobody else
    /// should (created with mode 0700).
    #[arg(long, env = "OSSATURE_EDGE_CERT_DIR")]
    edge_cert_dir: Option<std::path::PathBuf>,
    /// The AcmeIssuer that signs the certificate of each tenant's host at
    /// the edge. Without it, each tenant's own CA signs it.
    #[arg(long, env = "OSSATURE_HOST_ISSUER")]
    host_issuer: Option<String>,
    /// The DNS server (address:port) asked for the TXT records that prove
    /// tenants' custom domains. Default: the system's resolver.
    #[arg(long, env = "OSSATURE_DNS_SERVER")]
    dns_server: Option<SocketAddr>,
    /// Run without an edge: tenants get no host, host certificate or route.
    #[arg(long)]
    no_edge: bool,
    /// Where `/metrics` and `/healthz` are served.
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics_addr: SocketAddr,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

/// The AcmeIssuer of the local stack's Pebble, written (server-side apply)
/// at start; its name.
async fn local_acme_issuer(client: &Client, env: &BTreeMap<String, String>) -> Result<String> {
    const NAME: &str = "ossature-local";
    let bundle = std::fs::read_to_string(&env["OSSATURE_ACME_CA_BUNDLE"])
        .context("reading the trust bundle of the stack's ACME directory")?;
    let issuer = serde_json::json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": "AcmeIssuer",
        "metadata": {"name": NAME},
        "spec": {
            "directory": env["OSSATURE_ACME_DIRECTORY"],
            "emails": ["platform@ossature.test"],
            "caBundle": bundle,
            "solver": {"challTestSrv": {"url": env["OSSATURE_ACME_CHALLENGE_ADMIN_URL"]}},
        },
    });
    kube::Api::<ossature_crds::AcmeIssuer>::all(client.clone())
        .patch(
            NAME,
            &kube::api::PatchParams::apply(ossature_operator::kubernetes::FIELD_MANAGER).force(),
            &kube::api::Patch::Apply(issuer),
        )
        .await
        .context("writing the local stack's AcmeIssuer")?;
    Ok(NAME.to_string())
}

/// The edge's adapter, unless the operator runs without one.
fn edge(
    args: &Args,
    calls: &Calls,
) -> Result<Option<ossature_operator::adapters::edge::caddy::CaddyEdge>> {
    let Some(url) = args.edge_admin_url.as_deref().filter(|_| !args.no_edge) else {
        return Ok(None);
    };
    let dir = args
        .edge_cert_dir
        .clone()
        .context("--edge-cert-dir (or OSSATURE_EDGE_CERT_DIR) is required with --edge-admin-url")?;
    // Instances with disjoint selectors keep apart at a shared edge too.
    let instance = match &args.selector {
        Some(selector) => {
            let digest = ring::digest::digest(&ring::digest::SHA256, selector.as_bytes());
            let hex: String = digest.as_ref()[..5]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("s-{hex}")
        }
        None => "ossature".to_string(),
    };
    // Each instance its own files: one never removes what another's
    // configuration still loads.
    let dir = dir.join(&instance);
    Ok(Some(
        ossature_operator::adapters::edge::caddy::CaddyEdge::new(
            url,
            &args.edge_server,
            &instance,
            dir,
            calls.clone(),
        )?,
    ))
}

fn parse_root_domain(value: &str) -> Result<String, String> {
    if ossature_operator::admission::valid_root_domain(value) {
        Ok(value.to_string())
    } else {
        Err(format!(
            "{value:?} is not a lowercase DNS name of at least two labels, such as apps.example.com"
        ))
    }
}

fn parse_selector(value: &str) -> Result<String, String> {
    let value = value.trim();
    let term = |t: &str| {
        let t = t.trim();
        let key = t.split(['=', '!']).next().unwrap_or_default().trim();
        let valid_key = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
        valid_key && !t.contains(' ') || t.contains(" in ") || t.contains(" notin ")
    };
    if value.is_empty() || !value.split(',').all(term) {
        return Err(format!(
            "{value:?} is not a label selector such as `ossature.dev/shard=a` or `team in (x,y)`"
        ));
    }
    Ok(value.to_string())
}

fn parse_residency(value: &str) -> Result<(String, Vec<String>), String> {
    let (region, clusters) = value
        .split_once('=')
        .ok_or_else(|| format!("{value:?} is not REGION=CLUSTER[,CLUSTER...]"))?;
    let clusters: Vec<String> = clusters
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect();
    if region.trim().is_empty() || clusters.is_empty() {
        return Err(format!("{value:?} needs a region and at least one cluster"));
    }
    Ok((region.trim().to_string(), clusters))
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let filter =
        // vaultrs logs an expected answer (a mount not there yet) as an
        // error; the adapters report what matters themselves.
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| "info,vaultrs=off,rustify=off".into());
    match args.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => {
            use std::io::IsTerminal;
            let ansi = std::io::stdout().is_terminal();
            tracing_subscriber::fmt()
                .with_ansi(ansi)
                .with_env_filter(filter)
                .init()
        }
    }

    let mut args = args;
    let client = if args.local_stack {
        let env = ossature_bootstrap::ensure_up()
            .await
            .context("bringing up the local stack")?;
        let take = |slot: &mut Option<String>, name: &str| {
            if slot.is_none() {
                *slot = env.get(name).cloned();
            }
        };
        take(&mut args.keycloak_url, "OSSATURE_KEYCLOAK_URL");
        take(
            &mut args.keycloak_admin_user,
            "OSSATURE_KEYCLOAK_ADMIN_USER",
        );
        take(
            &mut args.keycloak_admin_password,
            "OSSATURE_KEYCLOAK_ADMIN_PASSWORD",
        );
        take(&mut args.pulsar_admin_url, "OSSATURE_PULSAR_ADMIN_URL");
        take(&mut args.openbao_addr, "OSSATURE_OPENBAO_ADDR");
        take(&mut args.openbao_token, "OSSATURE_OPENBAO_TOKEN");
        if !args.no_edge {
            take(&mut args.edge_admin_url, "OSSATURE_EDGE_ADMIN_URL");
            if args.edge_cert_dir.is_none() {
                args.edge_cert_dir = env.get("OSSATURE_EDGE_CERT_DIR").map(Into::into);
            }
        }
        let kubeconfig = Kubeconfig::read_from(&env["KUBECONFIG"])?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        let client = Client::try_from(config)?;
        ossature_operator::crds::install(&client).await?;
        // The stack's Pebble is the platform's ACME CA: tenant hosts get
        // certificates from it, with no object to write.
        if !args.no_edge && args.host_issuer.is_none() && args.selector.is_none() {
            args.host_issuer = Some(local_acme_issuer(&client, &env).await?);
        }
        info!(kubeconfig = %env["KUBECONFIG"], "local stack is up; CRDs installed");
        client
    } else {
        Client::try_default()
            .await
            .context("connecting to the Kubernetes API")?
    };
    ossature_operator::crds::require(&client).await?;
    ossature_operator::admission::ensure(&client, &args.root_domain)
        .await
        .context("writing the admission policy of certificate names")?;
    let calls = Calls::default();
    let edge = edge(&args, &calls)?;
    let required = |value: Option<String>, flag: &str, var: &str| {
        value.with_context(|| {
            format!("--{flag} (or {var}) is required unless --local-stack is given")
        })
    };
    let keycloak_url = required(args.keycloak_url, "keycloak-url", "OSSATURE_KEYCLOAK_URL")?;
    let keycloak_admin_user = required(
        args.keycloak_admin_user,
        "keycloak-admin-user",
        "OSSATURE_KEYCLOAK_ADMIN_USER",
    )?;
    let keycloak_admin_password = required(
        args.keycloak_admin_password,
        "keycloak-admin-password",
        "OSSATURE_KEYCLOAK_ADMIN_PASSWORD",
    )?;
    let pulsar_admin_url = required(
        args.pulsar_admin_url,
        "pulsar-admin-url",
        "OSSATURE_PULSAR_ADMIN_URL",
    )?;
    let openbao_addr = required(args.openbao_addr, "openbao-addr", "OSSATURE_OPENBAO_ADDR")?;
    let openbao_token = required(
        args.openbao_token,
        "openbao-token",
        "OSSATURE_OPENBAO_TOKEN",
    )?;

    let metrics = Metrics::new(&calls);
    let settings = Settings {
        clusters_by_region: args.residency.into_iter().collect::<BTreeMap<_, _>>(),
        resync: Duration::from_secs(args.resync_seconds),
        max_backoff: Duration::from_secs(args.max_backoff_seconds),
        selector: args.selector.clone(),
        max_dedicated_realms: args.max_dedicated_realms as usize,
        root_domain: args.root_domain.clone(),
        host_issuer: args.host_issuer.clone(),
        acme_namespace: args.acme_namespace.clone(),
        lease_namespace: args.lease_namespace.clone(),
    };
    let controllers = Controllers::new(&client, args.selector.as_deref());
    let mut ctx = Context::new(
        client.clone(),
        Keycloak::new(
            &keycloak_url,
            &keycloak_admin_user,
            &keycloak_admin_password,
            calls.clone(),
        )?,
        Pulsar::new(&pulsar_admin_url, calls.clone())?,
        OpenBao::new(&openbao_addr, &openbao_token, calls.clone())?,
        calls,
        settings,
        metrics.clone(),
        controllers.stores(),
    );
    if let Some(edge) = edge {
        ctx = ctx.with_edge(ossature_operator::edge::Edges::start(edge));
    }
    ctx = ctx.with_dns(
        ossature_operator::dns::Dns::new(args.dns_server)
            .map_err(anyhow::Error::msg)
            .context("--dns-server")?,
    );
    let ctx = Arc::new(ctx);

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
    let identity = format!(
        "{}-{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "ossature".into()),
        std::process::id()
    );
    let held = ossature_operator::shared::hold(
        ctx.clone(),
        args.lease_namespace.clone(),
        identity.clone(),
    );
    tokio::select! {
        _ = controllers.run(ctx.clone(), args.concurrency) => {}
        _ = ossature_operator::shared::manage_realms(ctx.clone(), held) => {}
    }
    ossature_operator::shared::release(&ctx, &args.lease_namespace, &identity).await;
    info!("ossature-operator stopped");
    Ok(())
}
