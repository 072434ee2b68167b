//! KEDA's CRDs are part of the apiserver's readiness: taken from KEDA's Go
//! module at the pinned version (its CRD files only), applied at `up`,
//! their schemas enforced by the apiserver; one gone missing is reported,
//! and `up` puts it back.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use ossature_bootstrap::components::Component;
use ossature_bootstrap::keda::{self, VERSION_LABEL};
use ossature_bootstrap::stack::{self, State};
use ossature_bootstrap::versions::Versions;
use ossature_bootstrap::{Layout, ensure_up};
use serde_json::json;

async fn client(env: &std::collections::BTreeMap<String, String>) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(&env["KUBECONFIG"]).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

#[tokio::test]
async fn kedas_crds_are_installed_from_its_module_and_put_back_when_missing() {
    let env = ensure_up().await.unwrap();
    let layout = Layout::from_env().unwrap();
    let version = Versions::pinned().keda.version;
    let crds: Api<CustomResourceDefinition> = Api::all(client(&env).await);

    // The cache holds KEDA's CRD files and nothing else.
    let dir = keda::artifact(&Versions::pinned()).dir(&layout);
    let files = keda::files(&dir).unwrap();
    let names: Vec<String> = files.iter().filter_map(|f| keda::crd_name(f)).collect();
    assert_eq!(names.len(), files.len(), "{files:?}");
    for wanted in ["scaledobjects.keda.sh", "triggerauthentications.keda.sh"] {
        assert!(names.iter().any(|n| n == wanted), "{names:?}");
    }
    for file in &files {
        let crd = keda::read(file, &version).unwrap();
        assert!(crd.spec.group.ends_with("keda.sh"), "{}", file.display());
    }

    for name in &names {
        let crd = crds.get(name).await.unwrap();
        assert!(established(&crd), "{name} is established");
        assert_eq!(
            crd.metadata.labels.unwrap()[VERSION_LABEL],
            version,
            "{name} is of the pinned release"
        );
    }

    // KEDA's own schema is enforced: a ScaledObject without a target is refused.
    let scaled = kube::discovery::ApiResource {
        group: "keda.sh".into(),
        version: "v1alpha1".into(),
        api_version: "keda.sh/v1alpha1".into(),
        kind: "ScaledObject".into(),
        plural: "scaledobjects".into(),
    };
    let objects: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client(&env).await, "default", &scaled);
    let dry_run = PatchParams {
        dry_run: true,
        ..PatchParams::apply("ossature-test").force()
    };
    let apply = |spec: serde_json::Value| {
        let objects = objects.clone();
        let dry_run = dry_run.clone();
        async move {
            let object = json!({
                "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                "metadata": {"name": "keda-schema-check"}, "spec": spec,
            });
            objects
                .patch("keda-schema-check", &dry_run, &Patch::Apply(object))
                .await
        }
    };
    let refused = apply(json!({"triggers": [{"type": "cpu", "metadata": {"value": "50"}}]}))
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("scaleTargetRef"), "{refused}");
    apply(json!({
        "scaleTargetRef": {"name": "app"},
        "minReplicaCount": 1, "maxReplicaCount": 2,
        "triggers": [{"type": "cpu", "metadata": {"value": "50"}}],
    }))
    .await
    .unwrap();

    // One the stack's users do not use goes missing.
    let victim = "clustertriggerauthentications.keda.sh";
    crds.delete(victim, &DeleteParams::default()).await.unwrap();
    let gone = || async { crds.get_opt(victim).await.unwrap().is_none() };
    for _ in 0..60 {
        if gone().await {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let apiserver = |rows: Vec<stack::Row>| {
        let row = rows
            .into_iter()
            .find(|r| r.component == Component::KubeApiserver);
        row.expect("the apiserver has a row").state
    };
    let state = apiserver(stack::status(&layout).await);
    let State::NotReady(why) = state else {
        panic!("an apiserver without KEDA's CRDs is not ready, not {state:?}");
    };
    assert!(why.contains(victim) && why.contains("missing"), "{why}");

    ensure_up().await.unwrap();
    assert!(established(&crds.get(victim).await.unwrap()));
    assert_eq!(apiserver(stack::status(&layout).await), State::Ready);
}
