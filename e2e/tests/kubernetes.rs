//! A Deployment on the real kube-apiserver gets a Running pod (kwok plays the
//! kubelet), and deleting its namespace really removes it.

use std::time::Duration;

use anyhow::{Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use ossature_e2e::{Check, Stack, eventually, unique, with_cleanup};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_pod_runs_and_namespace_deletes() -> Result<()> {
    let stack = Stack::get().await?;
    let client = stack.kube_client().await?;
    let name = unique("e2e");

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "ossature.dev/e2e": "true" } }
    }))?;
    namespaces.create(&PostParams::default(), &ns).await?;

    let body = run_deployment(&client, &name).await;
    let cleanup = delete_namespace(&namespaces, &name).await;
    with_cleanup(body, cleanup)
}

async fn run_deployment(client: &Client, ns: &str) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": {
                    // kwok's fake nodes may carry its usual taint; tolerate it.
                    "tolerations": [{ "key": "kwok.x-k8s.io/node", "operator": "Exists" }],
                    "containers": [{ "name": "web", "image": "ossature-e2e-web:1" }]
                }
            }
        }
    }))?;
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = ListParams::default().labels("app=web");
    let running = eventually(
        "a Running pod of the Deployment",
        Duration::from_secs(120),
        Duration::from_secs(2),
        || async {
            let list = pods.list(&selector).await?;
            let phases: Vec<String> = list
                .items
                .iter()
                .map(|p| {
                    let phase = p.status.as_ref().and_then(|s| s.phase.clone());
                    format!(
                        "{}={}",
                        p.metadata.name.as_deref().unwrap_or("?"),
                        phase.as_deref().unwrap_or("<none>")
                    )
                })
                .collect();
            let running = list
                .items
                .into_iter()
                .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
            Ok(match running {
                Some(pod) => Check::Done(pod),
                None => Check::Pending(format!("pods: {phases:?}")),
            })
        },
    )
    .await?;

    // A Running pod must have been placed on a node by the real scheduler.
    let node = running.spec.as_ref().and_then(|s| s.node_name.clone());
    if node.as_deref().unwrap_or_default().is_empty() {
        bail!("Running pod has no nodeName");
    }

    let available = eventually(
        "the Deployment to report 1 available replica",
        Duration::from_secs(60),
        Duration::from_secs(2),
        || async {
            let d = deployments.get("web").await?;
            let available = d.status.and_then(|s| s.available_replicas).unwrap_or(0);
            Ok(if available == 1 {
                Check::Done(available)
            } else {
                Check::Pending(format!("availableReplicas={available}"))
            })
        },
    )
    .await?;
    assert_eq!(available, 1);
    Ok(())
}

async fn delete_namespace(namespaces: &Api<Namespace>, name: &str) -> Result<()> {
    namespaces.delete(name, &DeleteParams::default()).await?;
    eventually(
        "the namespace to be gone",
        Duration::from_secs(180),
        Duration::from_secs(2),
        || async {
            Ok(match namespaces.get_opt(name).await? {
                None => Check::Done(()),
                Some(ns) => Check::Pending(format!("phase {:?}", ns.status.and_then(|s| s.phase))),
            })
        },
    )
    .await
}
