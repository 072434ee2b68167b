//! The operator's CRDs in the cluster: installed only for the local stack,
//! required everywhere.

use std::time::Duration;

use anyhow::{Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};

use ossature_model::names::FIELD_MANAGER;

/// Installs the CRDs (server-side apply) and waits until they are served.
pub async fn install(client: &kube::Client) -> Result<()> {
    apply(client, &ossature_crds::all(), FIELD_MANAGER).await
}

/// Applies `crds` under `manager` and waits until each is served.
pub async fn apply(
    client: &kube::Client,
    crds: &[CustomResourceDefinition],
    manager: &str,
) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(manager).force();
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(crd)).await?;
    }
    for _ in 0..120 {
        if established(client, crds).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    established(client, crds).await
}

/// Fails, saying how to fix it, unless every CRD is installed and established.
pub async fn require(client: &kube::Client) -> Result<()> {
    established(client, &ossature_crds::all()).await
}

async fn established(client: &kube::Client, wanted: &[CustomResourceDefinition]) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in wanted {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let Some(live) = crds.get_opt(&name).await? else {
            bail!(
                "CRD {name} is not installed; install the CRDs with `kubectl apply -f crds/yaml/`"
            );
        };
        let established = live
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if !established {
            bail!("CRD {name} is not established yet; retry in a moment");
        }
    }
    Ok(())
}
