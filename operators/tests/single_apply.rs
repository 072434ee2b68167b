//! One `kubectl apply` of a whole tenant file converges at the operator's
//! default settings, whatever the order of its Tenant, Scopes and
//! Environments, applied plainly, server-side or with kustomize; a namespace
//! that belongs to something else is refused, and accepted once labelled.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use ossature_crds::{Environment, Scope, Tenant};
use serde_json::json;

/// `examples/acme.yaml` as tenant `name`, its Tenant labelled for the test's
/// operator, its documents in the order `order` gives (its Namespaces first).
fn tenant_file(name: &str, sel: &str, order: fn(&mut Vec<String>)) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/acme.yaml");
    let text = std::fs::read_to_string(path).unwrap().replace("acme", name);
    let documents: Vec<String> = text
        .split("\n---\n")
        .map(|d| {
            d.replace(
                &format!("kind: Tenant\nmetadata:\n  name: {name}\n"),
                &format!(
                    "kind: Tenant\nmetadata:\n  name: {name}\n  labels:\n    {TEST_LABEL}: \"{sel}\"\n"
                ),
            )
        })
        .collect();
    // Namespaces first, as kubectl needs (kustomize sorts them so itself);
    // everything else in the order asked for.
    let (namespaces, mut documents): (Vec<String>, Vec<String>) = documents
        .into_iter()
        .partition(|d| d.contains("\nkind: Namespace\n"));
    assert!(
        !namespaces.is_empty(),
        "the file starts with its namespaces"
    );
    order(&mut documents);
    namespaces
        .into_iter()
        .chain(documents)
        .collect::<Vec<_>>()
        .join("\n---\n")
}

async fn wait_all_ready(client: &kube::Client, name: &str) {
    let tenants: Api<Tenant> = Api::all(client.clone());
    wait_tenant_ready(&tenants, name, Duration::from_secs(60)).await;
    let ns = format!("tn-{name}");
    let scopes: Api<Scope> = Api::namespaced(client.clone(), &ns);
    let environments: Api<Environment> = Api::namespaced(client.clone(), &ns);
    wait_for(
        &format!("every scope and environment of {name} Ready"),
        // Well below the default resync of 300 s: only watches get here.
        Duration::from_secs(45),
        || {
            let (scopes, environments) = (scopes.clone(), environments.clone());
            async move {
                let scopes = scopes.list(&Default::default()).await.ok()?.items;
                let environments = environments.list(&Default::default()).await.ok()?.items;
                let ready = |conditions: Option<&Vec<_>>| {
                    conditions.is_some_and(|c| {
                        condition(c, "Ready").is_some_and(|(status, _)| status == "True")
                    })
                };
                (scopes.len() == 4
                    && environments.len() == 2
                    && scopes
                        .iter()
                        .all(|s| ready(s.status.as_ref().map(|s| &s.conditions)))
                    && environments
                        .iter()
                        .all(|e| ready(e.status.as_ref().map(|s| &s.conditions))))
                .then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_apply_of_a_tenant_file_converges() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let _operator = start_operator(&env, &sel);
    let dir = std::env::temp_dir().join(format!("ossature-single-apply-{sel}"));
    std::fs::create_dir_all(&dir).unwrap();

    let plain = format!("pl{}", suffix());
    let server = format!("ss{}", suffix());
    let kustomized = format!("kz{}", suffix());
    // The Tenant last and children before parents.
    let file = dir.join("plain.yaml");
    std::fs::write(&file, tenant_file(&plain, &sel, |d| d.reverse())).unwrap();
    kubectl(&env, &["apply", "-f", file.to_str().unwrap()]);
    // As the example is written.
    let file = dir.join("server.yaml");
    std::fs::write(&file, tenant_file(&server, &sel, |_| {})).unwrap();
    kubectl(
        &env,
        &["apply", "--server-side", "-f", file.to_str().unwrap()],
    );
    // Environments first, then the Tenant, then the scopes.
    let kustomization = dir.join("kustomize");
    std::fs::create_dir_all(&kustomization).unwrap();
    std::fs::write(
        kustomization.join("tenant.yaml"),
        tenant_file(&kustomized, &sel, |d| d.rotate_left(5)),
    )
    .unwrap();
    std::fs::write(
        kustomization.join("kustomization.yaml"),
        "resources:\n  - tenant.yaml\n",
    )
    .unwrap();
    kubectl(&env, &["apply", "-k", kustomization.to_str().unwrap()]);

    for name in [&plain, &server, &kustomized] {
        wait_all_ready(&client, name).await;
    }

    let tenants: Api<Tenant> = Api::all(client.clone());
    for name in [&plain, &server, &kustomized] {
        tenants
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    for name in [&plain, &server, &kustomized] {
        wait_tenant_gone(&tenants, name, Duration::from_secs(120)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kubectl delete --wait` returns only when the tenant's namespaces are gone,
/// so the same file applied at once converges again, every object Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_tenant_applied_again_at_once_converges() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let _operator = start_operator(&env, &sel);
    let dir = std::env::temp_dir().join(format!("ossature-reapply-{sel}"));
    std::fs::create_dir_all(&dir).unwrap();
    let name = format!("ra{}", suffix());
    let file = dir.join("tenant.yaml");
    std::fs::write(&file, tenant_file(&name, &sel, |_| {})).unwrap();
    let file = file.to_str().unwrap();

    kubectl(&env, &["apply", "-f", file]);
    wait_all_ready(&client, &name).await;

    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let owned = format!("{}={name}", ossature_model::names::TENANT_LABEL);
    let before = namespaces
        .list(&kube::api::ListParams::default().labels(&owned))
        .await
        .unwrap()
        .items;
    assert_eq!(before.len(), 3, "tn-{name} and two environment namespaces");

    kubectl(
        &env,
        &["delete", "tenant", &name, "--wait", "--timeout=180s"],
    );
    // Nothing of the tenant is left, not even terminating.
    for namespace in &before {
        let namespace = namespace.metadata.name.as_deref().unwrap();
        assert!(
            namespaces.get_opt(namespace).await.unwrap().is_none(),
            "{namespace} still exists when the delete returned"
        );
    }

    kubectl(&env, &["apply", "-f", file]);
    wait_all_ready(&client, &name).await;

    let tenants: Api<Tenant> = Api::all(client.clone());
    tenants
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_tenant_gone(&tenants, &name, Duration::from_secs(120)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_of_something_else_is_refused_until_labelled() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let _operator = start_operator(&env, &sel);
    let name = format!("fo{}", suffix());
    let ns = format!("tn-{name}");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns, "labels": {"team": "other"}}}))
                .unwrap(),
        )
        .await
        .unwrap();
    let tenants: Api<Tenant> = Api::all(client.clone());
    tenants
        .create(&PostParams::default(), &labelled(bare_tenant(&name), &sel))
        .await
        .unwrap();
    let status = wait_for("Stalled NamespaceNotOwned", Duration::from_secs(30), || {
        let tenants = tenants.clone();
        let name = name.clone();
        async move {
            let status = tenants.get(&name).await.ok()?.status?;
            (condition(&status.conditions, "Stalled")?
                == ("True".into(), "NamespaceNotOwned".into()))
                .then_some(status)
        }
    })
    .await;
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains("ossature.dev/tenant"),
        "the message says how to fix it: {}",
        ready.message
    );
    assert_eq!(realm(&env, &name).await.0, 404, "nothing is provisioned");

    // Labelled for the tenant, it is adopted within seconds.
    namespaces
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"ossature.dev/tenant": name}}})),
        )
        .await
        .unwrap();
    wait_tenant_ready(&tenants, &name, Duration::from_secs(45)).await;
    tenants
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait_tenant_gone(&tenants, &name, Duration::from_secs(120)).await;
}
