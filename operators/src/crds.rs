//! The operator's CRDs in the cluster: installed only for the local stack,
//! required everywhere.

use std::time::Duration;

use anyhow::{Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};

use crate::kubernetes::FIELD_MANAGER;

/// Installs the CRDs (server-side apply) and waits until they are served.
pub async fn install(client: &kube::Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in ossature_crds::all() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        crds.patch(&name, &params, &Patch::Apply(&crd)).await?;
    }
    for _ in 0..120 {
        if require(client).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    require(client).await
}

/// Fails, saying how to fix it, unless every CRD is installed and established.
pub async fn require(client: &kube::Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in ossature_crds::all() {
        let name = crd.metadata.name.unwrap_or_default();
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
