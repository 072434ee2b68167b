//! `--local-stack`: the embedded local stack brought up, the CRDs installed
//! into it, and every backend taken from it. Behind the `local-stack`
//! feature (on by default); the image the chart ships is built without it.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use ossature_model::names::FIELD_MANAGER;
use tracing::info;

use crate::cli::Args;

/// Brings the stack up and fills what the flags leave out from it; the
/// client of its apiserver.
pub async fn bring_up(args: &mut Args) -> Result<(Client, kube::Config)> {
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
    if args.pulsar_token_file.is_none() {
        args.pulsar_token_file = env.get("OSSATURE_PULSAR_TOKEN_FILE").map(Into::into);
    }
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
    let client = Client::try_from(config.clone())?;
    crate::crds::install(&client).await?;
    // The stack's Pebble is the platform's ACME CA: tenant hosts get
    // certificates from it, with no object to write.
    if !args.no_edge && args.host_issuer.is_none() && args.selector.is_none() {
        args.host_issuer = Some(acme_issuer(&client, &env).await?);
    }
    info!(kubeconfig = %env["KUBECONFIG"], "local stack is up; CRDs installed");
    Ok((client, config))
}

/// The AcmeIssuer of the local stack's Pebble, written (server-side apply)
/// at start; its name.
async fn acme_issuer(client: &Client, env: &BTreeMap<String, String>) -> Result<String> {
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
            &kube::api::PatchParams::apply(FIELD_MANAGER).force(),
            &kube::api::Patch::Apply(issuer),
        )
        .await
        .context("writing the local stack's AcmeIssuer")?;
    Ok(NAME.to_string())
}
