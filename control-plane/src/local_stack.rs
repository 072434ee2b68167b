//! `--local-stack`: the embedded local stack brought up, and the apiserver
//! and Keycloak taken from it. Behind the `local-stack` feature (on by
//! default); an image for a cluster is built without it.

use anyhow::{Context as _, Result};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::cli::Args;

/// Brings the stack up and fills what the flags leave out from it; the
/// client of its apiserver.
pub async fn bring_up(args: &mut Args) -> Result<Client> {
    let env = ossature_bootstrap::ensure_up()
        .await
        .context("bringing up the local stack")?;
    if args.keycloak_url.is_none() {
        args.keycloak_url = env.get("OSSATURE_KEYCLOAK_URL").cloned();
    }
    let kubeconfig = Kubeconfig::read_from(&env["KUBECONFIG"])?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    tracing::info!(kubeconfig = %env["KUBECONFIG"], "local stack is up");
    Ok(Client::try_from(config)?)
}
