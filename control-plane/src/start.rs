//! From flags to a serving control plane: the apiserver's client, its own
//! namespace, the shared watches, token checks, idempotency, audit and the
//! listener, until a shutdown signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use ossature_crds::Tenant;

use crate::audit::Audit;
use crate::auth::{Authenticator, Operators};
use crate::authorize::Authorization;
use crate::cli::Args;
use crate::idempotency::Idempotency;
use crate::server::{self, App};
use crate::watch::Watches;

/// A control plane serving in this process.
pub struct Running {
    /// Where it listens (the port chosen when `--listen` asked for 0).
    pub addr: SocketAddr,
    pub app: Arc<App>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops serving.
    pub fn stop(self) {
        self.task.abort();
    }
}

pub async fn run(mut args: Args) -> Result<()> {
    let client = client(&mut args).await?;
    let running = spawn(args, client, shutdown_signal()).await?;
    let _ = running.task.await;
    // Answers sent are stored before the process ends.
    running.app.idempotency.flush().await;
    tracing::info!("ossature-control-plane stopped");
    Ok(())
}

/// The apiserver's client: the local stack's, or the one the environment
/// names (in-cluster, or a kubeconfig).
async fn client(args: &mut Args) -> Result<Client> {
    #[cfg(feature = "local-stack")]
    if args.local_stack() {
        return crate::local_stack::bring_up(args).await;
    }
    let _ = &args;
    Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster, or KUBECONFIG)")
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Makes the control plane's namespace unless it is there.
async fn ensure_namespace(client: &Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(name).await?.is_some() {
        return Ok(());
    }
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &namespace).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| {
            format!("creating the namespace {name} (--state-namespace) failed; create it, or name one that exists")
        }),
    }
}

/// Starts serving with `client` until `shutdown`.
pub async fn spawn(
    args: Args,
    client: Client,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Running> {
    Api::<Tenant>::all(client.clone())
        .list(&ListParams::default().limit(1))
        .await
        .context(
            "listing Tenants failed; are Ossature's CRDs installed? (kubectl apply -f crds/yaml/)",
        )?;
    crate::rbac::require_rights(&client, &args.state_namespace).await?;
    ensure_namespace(&client, &args.state_namespace).await?;
    let keycloak_url = args.keycloak_url.clone().context(
        "--keycloak-url (or OSSATURE_KEYCLOAK_URL) is required unless --local-stack is given",
    )?;
    let operators = args.operators_realm.clone().map(|realm| Operators {
        realm,
        group: args.operators_group.clone(),
        audience: args.operators_audience.clone(),
    });
    let auth = Authenticator::new(
        &keycloak_url,
        args.keycloak_issuer_url.as_deref(),
        operators,
    )?;
    let watches = Watches::start(&client);
    tokio::time::timeout(Duration::from_secs(60), watches.ready())
        .await
        .context("the watches of Tenants, Scopes, Environments, TenantRoles, Certificates, Topics, ServiceIdentities and Workloads did not list within 60 s; are this release's CRDs installed? (kubectl apply -f crds/yaml/)")??;
    let plan = args.platform().map_err(|problem| {
        anyhow::anyhow!("--root-domain, --residency or --host-issuer: {problem}")
    })?;
    let authorization = Arc::new(Authorization::new()?);
    // Every tenant's grants are loaded before the first request is served.
    authorization.load_all(&watches);
    tokio::spawn(authorization.clone().follow(watches.clone()));
    let idempotency = Idempotency::new(
        client.clone(),
        &args.state_namespace,
        Duration::from_secs(args.idempotency_ttl_hours * 3600),
    );
    tokio::spawn(idempotency.clone().sweep_forever());
    let streams = crate::events::Streams::start(watches.clone());
    let app = Arc::new(App {
        client,
        watches,
        auth,
        authorization,
        plan,
        idempotency,
        streams,
        audit: Audit::open(&args.audit_log)?,
        limiter: server::rate_limiter(args.rate_limit_per_second, args.rate_limit_burst),
        max_body_bytes: usize::try_from(args.max_body_bytes).unwrap_or(usize::MAX),
        metrics: Default::default(),
    });
    // Callers not seen for a while are forgotten: the limiter stays small.
    let limited = app.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            limited.limiter.retain_recent();
        }
    });
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(server::tls_config(cert, key)?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding --listen {}", args.listen))?;
    let addr = listener.local_addr()?;
    let router = server::router(app.clone(), &args.cors_origins);
    tracing::info!(
        %addr,
        tls = tls.is_some(),
        "ossature-control-plane serving; API document at /openapi.json"
    );
    let task = tokio::spawn(server::serve(listener, router, tls, shutdown));
    Ok(Running { addr, app, task })
}
