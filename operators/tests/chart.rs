//! The Helm chart (`charts/ossature`) against the real stack: it lints,
//! renders objects that kubeconform (with schemas made from this apiserver's
//! OpenAPI) and the apiserver (a server-side dry run) accept, its values
//! schema refuses bad values with a message, its RBAC has no wildcard and
//! matches what the code needs, and it installs, upgrades over a live
//! tenant and uninstalls, leaving tenants and CRDs alone. The tenant is
//! provisioned by this release's operator running with the chart's own
//! ServiceAccount (a TokenRequest token), so the chart's rules are proven
//! for a tenant's whole onboarding.
//!
//! The chart's CRDs are never installed into the shared stack (another
//! test's CRDs may be newer): the install skips them and their upgrade
//! command runs as a server-side dry run.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::Kubeconfig;
use ossature_crds::Tenant;
use ossature_e2e::chart::{self, Helm};
use serde_json::{Value, json};

use common::{kube_client, kubectl, labelled, start_operator_with, wait_for};

async fn stack() -> BTreeMap<String, String> {
    ossature_e2e::install_crypto_provider();
    ossature_bootstrap::ensure_up().await.unwrap()
}

fn chart_dir() -> String {
    chart::chart_dir().to_string_lossy().into_owned()
}

fn values() -> String {
    chart::test_values().to_string_lossy().into_owned()
}

/// The chart's documented CRD upgrade (`kubectl apply --server-side` of its
/// `crds/`), as a server-side dry run: the shared stack's CRDs stay as they are.
fn apply_crds_as_documented(env: &BTreeMap<String, String>) {
    let crds = chart::chart_dir().join("crds");
    kubectl(
        env,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
            "-f",
            &crds.to_string_lossy(),
        ],
    );
}

/// `helm template` of the chart with the test values and `extra` flags.
fn render(helm: &Helm, namespace: &str, extra: &[&str]) -> Vec<Value> {
    let (chart, values) = (chart_dir(), values());
    let mut args = vec!["template", "r", &chart, "-n", namespace, "-f", &values];
    args.extend(extra);
    chart::documents(&helm.ok(&args).unwrap()).unwrap()
}

/// What helm says when it refuses to render the chart with the test values
/// and `set` (`--set` each).
fn refusal(helm: &Helm, set: &[&str]) -> String {
    let (chart, values) = (chart_dir(), values());
    let mut args = vec!["template", "r", &chart, "-f", &values];
    for value in set {
        args.extend(["--set", value]);
    }
    helm.refused(&args).unwrap()
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    chart::of_kind(objects, kind)
        .into_iter()
        .find(|o| o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

async fn create_namespace(namespaces: &Api<Namespace>, name: &str, labels: Value) {
    let namespace = json!({"metadata": {"name": name, "labels": labels}});
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(namespace).unwrap(),
        )
        .await
        .unwrap();
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}-{name}", ossature_e2e::unique("chart")));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chart_lints_and_renders_what_the_apiserver_and_kubeconform_accept() {
    let env = stack().await;
    let helm = Helm::new(Path::new(&env["KUBECONFIG"])).await.unwrap();
    let admin = kube_client(&env).await;
    let (chart_path, values) = (chart_dir(), values());
    helm.ok(&["lint", "--strict", &chart_path, "-f", &values])
        .unwrap();

    let namespace = ossature_e2e::unique("chart-render");
    let rendered = helm
        .ok(&[
            "template",
            "r",
            &chart_path,
            "-n",
            &namespace,
            "-f",
            &values,
            "--include-crds",
        ])
        .unwrap();
    let objects = chart::documents(&rendered).unwrap();

    // Every object against schemas made from this apiserver's OpenAPI.
    let schemas = std::env::temp_dir().join(ossature_e2e::unique("chart-schemas"));
    chart::write_schemas(&admin, &objects, &schemas)
        .await
        .unwrap();
    let file = temp_file("rendered.yaml", &rendered);
    let report = chart::kubeconform(&schemas, &[&file]).await.unwrap();
    assert!(report.contains("Invalid: 0, Errors: 0"), "{report}");
    assert!(report.contains("Skipped: 0"), "{report}");

    // And against the apiserver itself, in a namespace that warns of any
    // pod template short of the restricted Pod Security Standard.
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let restricted = json!({
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/audit": "restricted",
    });
    create_namespace(&namespaces, &namespace, restricted).await;
    let applied = std::process::Command::new("kubectl")
        .env("KUBECONFIG", &env["KUBECONFIG"])
        .args([
            "apply",
            "--dry-run=server",
            "--server-side",
            "--force-conflicts",
            "--field-manager=ossature-chart-test",
            "-f",
        ])
        .arg(&file)
        .output()
        .unwrap();
    namespaces
        .delete(&namespace, &DeleteParams::default())
        .await
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&applied.stdout),
        String::from_utf8_lossy(&applied.stderr)
    );
    assert!(applied.status.success(), "{said}");
    assert!(!said.contains("would violate PodSecurity"), "{said}");
    let _ = std::fs::remove_dir_all(&schemas);
    let _ = std::fs::remove_file(&file);

    // The CRDs are the generator's, and the upgrade path the chart
    // documents is one the apiserver takes.
    let mut crds: Vec<Value> = chart::of_kind(&objects, "CustomResourceDefinition")
        .into_iter()
        .cloned()
        .collect();
    crds.sort_by_key(|c| c["metadata"]["name"].to_string());
    let mut generated: Vec<Value> = ossature_crds::all()
        .iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect();
    generated.sort_by_key(|c| c["metadata"]["name"].to_string());
    assert_eq!(crds, generated, "the chart's crds/ are not the generator's");
    apply_crds_as_documented(&env);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chart_grants_what_the_code_needs_without_wildcards() {
    let env = stack().await;
    let helm = Helm::new(Path::new(&env["KUBECONFIG"])).await.unwrap();
    let objects = render(
        &helm,
        "ossature-system",
        &["--set", "platform.rootDomain=apps.example.com"],
    );
    let wildcards = chart::wildcard_rules(&objects);
    assert!(
        wildcards.is_empty(),
        "wildcards in rendered RBAC: {wildcards:?}"
    );

    // The admission policies are the operator's own, for this root domain,
    // and the only ones it may patch.
    let policies = ossature_operator::admission::policies("apps.example.com");
    for (name, policy) in &policies {
        let rendered = named(&objects, "ValidatingAdmissionPolicy", name);
        assert_eq!(rendered["spec"], policy["spec"], "policy {name}");
        named(&objects, "ValidatingAdmissionPolicyBinding", name);
    }
    let role = named(&objects, "ClusterRole", "r-ossature-operator");
    let rules = role["rules"].as_array().unwrap();
    let names_of = |group: &str| -> Vec<String> {
        let rule = rules
            .iter()
            .find(|r| r["apiGroups"][0] == group)
            .unwrap_or_else(|| panic!("no rule on {group}"));
        let mut names: Vec<String> = rule["resourceNames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };
    let mut wanted: Vec<String> = policies.iter().map(|(n, _)| n.to_string()).collect();
    wanted.sort();
    assert_eq!(names_of("admissionregistration.k8s.io"), wanted);
    let mut crds: Vec<String> = ossature_crds::all()
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .chain(["scaledobjects.keda.sh".to_string()])
        .collect();
    crds.sort();
    assert_eq!(names_of("apiextensions.k8s.io"), crds);
    for rule in rules {
        let verbs = rule["verbs"].as_array().unwrap();
        if rule["apiGroups"][0] == "admissionregistration.k8s.io" {
            assert!(!verbs.contains(&json!("create")), "{rule}");
        }
    }

    // With one release per shard, one installs the cluster-wide policies.
    let shard = render(
        &helm,
        "ossature-system",
        &["--set", "operator.admissionPolicies=false"],
    );
    let kept: Vec<&Value> = chart::of_kind(&shard, "ValidatingAdmissionPolicy");
    assert_eq!(kept.len(), 1, "only the control plane's own policy is left");

    // The image the chart runs is this release's.
    let chart_yaml = std::fs::read_to_string(chart::chart_dir().join("Chart.yaml")).unwrap();
    assert!(
        chart_yaml.contains(&format!("appVersion: \"{}\"", env!("CARGO_PKG_VERSION"))),
        "Chart.yaml's appVersion is not the operator's version {}",
        env!("CARGO_PKG_VERSION")
    );

    // A ServiceMonitor only where its API is served, and a clear refusal
    // when one is asked for where it is not.
    assert!(chart::of_kind(&objects, "ServiceMonitor").is_empty());
    let monitored = render(
        &helm,
        "ossature-system",
        &["--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"],
    );
    let monitor = named(&monitored, "ServiceMonitor", "r-ossature-operator");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    let refused = refusal(&helm, &["serviceMonitor.enabled=true"]);
    assert!(
        refused.contains("serves no monitoring.coreos.com/v1 ServiceMonitor"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_values_schema_refuses_bad_values_with_a_message() {
    let env = stack().await;
    let helm = Helm::new(Path::new(&env["KUBECONFIG"])).await.unwrap();
    let chart_path = chart_dir();
    let cases: &[(&[&str], &str)] = &[
        (
            &["operator.replicas=two"],
            "at '/operator/replicas': got string, want integer",
        ),
        (
            &["operator.replicas=9"],
            "at '/operator/replicas': maximum: got 9, want 5",
        ),
        (
            &["controlPlane.replicas=-1"],
            "at '/controlPlane/replicas': minimum: got -1, want 0",
        ),
        (
            &["operator.concurency=4"],
            "additional properties 'concurency' not allowed",
        ),
        (
            &["keycloak.admin.password=hunter2"],
            "credentials are never values: put it in a Secret and name the Secret in keycloak.admin.existingSecret",
        ),
        (&["openbao.token.value=s.hunter2"], "at '/openbao/token'"),
        (
            &["platform.rootDomain=localhost"],
            "at '/platform/rootDomain'",
        ),
        (&["platform.autoscaler=always"], "at '/platform/autoscaler'"),
        (
            &["controlPlane.corsOrigins[0]=console.example.com"],
            "at '/controlPlane/corsOrigins/0'",
        ),
        (
            &["keycloak.admin.existingSecret=Not_A_Name"],
            "at '/keycloak/admin/existingSecret'",
        ),
    ];
    for (set, message) in cases {
        let said = refusal(&helm, set);
        assert!(said.contains(message), "{set:?}: {said}");
        assert!(
            !said.contains("hunter2"),
            "a refusal repeats a credential: {said}"
        );
    }
    // A credential given inline as a whole value, instead of a Secret.
    let said = refusal(&helm, &["openbao.token=s.hunter2"]);
    assert!(said.contains("openbao.token.existingSecret"), "{said}");
    assert!(!said.contains("hunter2"), "{said}");
    // What a backend needs and was not given is named, with an example.
    let said = helm.refused(&["template", "r", &chart_path]).unwrap();
    assert!(
        said.contains("keycloak.url: the operator needs Keycloak's base URL"),
        "{said}"
    );
}

/// The stack's kubeconfig with `token` as its only credential.
fn kubeconfig_with_token(env: &BTreeMap<String, String>, token: &str) -> PathBuf {
    let mut kubeconfig = Kubeconfig::read_from(&env["KUBECONFIG"]).unwrap();
    for user in &mut kubeconfig.auth_infos {
        user.auth_info = Some(serde_json::from_value(json!({"token": token})).unwrap());
    }
    temp_file("kubeconfig", &serde_json::to_string(&kubeconfig).unwrap())
}

async fn wait_available(client: &kube::Client, namespace: &str, names: &[&str], generation: i64) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    for name in names {
        wait_for(
            &format!("Deployment {name} available"),
            Duration::from_secs(180),
            || {
                let deployments = deployments.clone();
                async move {
                    let d = deployments.get(name).await.ok()?;
                    let replicas = d.spec.replicas;
                    let status = d.status?;
                    let observed = status.observed_generation.unwrap_or(0);
                    let available = status.conditions.unwrap_or_default().iter().any(|c| {
                        c.type_.as_deref() == Some("Available")
                            && c.status.as_deref() == Some("True")
                    });
                    (observed >= generation
                        && available
                        && status.updated_replicas == replicas
                        && status.available_replicas == replicas)
                        .then_some(())
                }
            },
        )
        .await;
    }
}

/// The arguments of a Deployment's first container.
async fn container_args(deployments: &Api<Deployment>, name: &str) -> Vec<String> {
    let deployment = serde_json::to_value(deployments.get(name).await.unwrap()).unwrap();
    serde_json::from_value(deployment["spec"]["template"]["spec"]["containers"][0]["args"].clone())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn install_upgrade_over_a_live_tenant_and_uninstall() {
    let env = stack().await;
    let admin = kube_client(&env).await;
    let helm = Helm::new(Path::new(&env["KUBECONFIG"])).await.unwrap();
    let (chart_path, values) = (chart_dir(), values());
    let namespace = ossature_e2e::unique("chart");
    let release = ossature_e2e::unique("oss");
    let operator_name = format!("{release}-ossature-operator");
    let control_plane_name = format!("{release}-ossature-control-plane");
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    create_namespace(&namespaces, &namespace, json!({})).await;
    // The Secrets the values name, with the stack's credentials.
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &namespace);
    let pulsar_token = std::fs::read_to_string(&env["OSSATURE_PULSAR_TOKEN_FILE"]).unwrap();
    for (name, data) in [
        (
            "ossature-keycloak-admin",
            json!({"username": env["OSSATURE_KEYCLOAK_ADMIN_USER"], "password": env["OSSATURE_KEYCLOAK_ADMIN_PASSWORD"]}),
        ),
        (
            "ossature-pulsar-token",
            json!({"token": pulsar_token.trim()}),
        ),
        (
            "ossature-openbao-token",
            json!({"token": env["OSSATURE_OPENBAO_TOKEN"]}),
        ),
    ] {
        secrets
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))
                    .unwrap(),
            )
            .await
            .unwrap();
    }
    // kwok's node may carry its taint; the stack's policies already exist
    // (other tests' operators wrote them), so this release leaves them be.
    let stack_values = temp_file(
        "values.yaml",
        &serde_json::to_string(&json!({
            "operator": {"admissionPolicies": false, "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists"}]},
            "controlPlane": {"tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists"}]},
        }))
        .unwrap(),
    );
    let stack_values = stack_values.to_string_lossy().into_owned();
    // `helm install` or `upgrade` of the release with the stack's values.
    let deploy = |verb: &'static str, extra: &[&'static str]| {
        let mut args = vec![
            verb,
            &release,
            &chart_path,
            "-n",
            &namespace,
            "-f",
            &values,
            "-f",
            &stack_values,
        ];
        args.extend(["--skip-crds", "--wait", "--timeout", "3m"]);
        args.extend(extra);
        helm.ok(&args)
    };
    let installed = deploy("install", &[]);
    let body = async {
        installed.unwrap();
        wait_available(
            &admin,
            &namespace,
            &[&operator_name, &control_plane_name],
            1,
        )
        .await;

        // This release's operator, as the chart's ServiceAccount, onboards a
        // tenant: every call it makes for one is allowed by the chart.
        let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), &namespace);
        let token = common::account_token(&accounts, &operator_name).await;
        let mut operator_env = env.clone();
        operator_env.insert(
            "KUBECONFIG".into(),
            kubeconfig_with_token(&env, &token)
                .to_string_lossy()
                .into_owned(),
        );
        let selector = format!("chart-{}", common::suffix());
        let lease_namespace = format!("--lease-namespace={namespace}");
        let acme_namespace = format!("--acme-namespace={namespace}");
        let operator = start_operator_with(
            &operator_env,
            &selector,
            &["--no-edge", &lease_namespace, &acme_namespace],
        );
        let tenants: Api<Tenant> = Api::all(admin.clone());
        let tenant_name = format!("chart-{}", common::suffix());
        tenants
            .create(
                &PostParams::default(),
                &labelled(common::tenant(&tenant_name), &selector),
            )
            .await
            .unwrap();
        let before =
            common::wait_tenant_ready(&tenants, &tenant_name, Duration::from_secs(240)).await;

        // An upgrade with other values rolls the Deployments and leaves the
        // tenant as it was.
        let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &namespace);
        let generation = deployments
            .get(&operator_name)
            .await
            .unwrap()
            .metadata
            .generation
            .unwrap();
        apply_crds_as_documented(&env);
        deploy(
            "upgrade",
            &[
                "--set",
                "operator.concurrency=8",
                "--set",
                "controlPlane.rateLimitPerSecond=30",
            ],
        )
        .unwrap();
        wait_available(
            &admin,
            &namespace,
            &[&operator_name, &control_plane_name],
            generation + 1,
        )
        .await;
        let args = container_args(&deployments, &operator_name).await;
        assert!(args.contains(&"--concurrency=8".to_string()), "{args:?}");
        let args = container_args(&deployments, &control_plane_name).await;
        assert!(
            args.contains(&"--rate-limit-per-second=30".to_string()),
            "{args:?}"
        );
        let after = tenants.get(&tenant_name).await.unwrap();
        assert!(
            common::ready(&after),
            "the tenant is no longer Ready after the upgrade"
        );
        assert_eq!(after.metadata.uid, before.metadata.uid);
        assert_eq!(after.metadata.generation, before.metadata.generation);
        assert_eq!(
            after.status.as_ref().map(|s| &s.conditions),
            before.status.as_ref().map(|s| &s.conditions),
            "the upgrade changed the tenant's conditions"
        );
        drop(operator);

        // Uninstall removes every object of the release, and no tenant or CRD.
        let manifest = helm
            .ok(&["get", "manifest", &release, "-n", &namespace])
            .unwrap();
        let created = chart::documents(&manifest).unwrap();
        assert!(
            created.len() >= 20,
            "the release holds {} objects",
            created.len()
        );
        helm.ok(&[
            "uninstall",
            &release,
            "-n",
            &namespace,
            "--wait",
            "--timeout",
            "3m",
        ])
        .unwrap();
        for object in &created {
            let (kind, name) = (
                &object["kind"],
                object["metadata"]["name"].as_str().unwrap(),
            );
            let resource = match object["apiVersion"].as_str().unwrap().split_once('/') {
                Some((group, version)) => format!("{}.{version}.{group}", kind.as_str().unwrap()),
                None => kind.as_str().unwrap().to_string(),
            };
            let mut args = vec!["get", &resource, name, "--ignore-not-found", "-o", "name"];
            if object["metadata"]["namespace"].is_string() {
                args.extend(["-n", &namespace]);
            }
            let left = kubectl(&env, &args);
            assert!(
                left.trim().is_empty(),
                "{resource} {name} outlived the release"
            );
        }
        let kept = tenants.get(&tenant_name).await.unwrap();
        assert_eq!(kept.metadata.uid, before.metadata.uid);
        assert!(kept.metadata.deletion_timestamp.is_none());
        kubectl(&env, &["get", "crd", "tenants.ossature.dev"]);

        // Cleanup: an operator with the stack's own credentials removes it.
        let cleaner = start_operator_with(
            &env,
            &selector,
            &["--no-edge", &lease_namespace, &acme_namespace],
        );
        common::delete_tenants(&tenants, &[&tenant_name]).await;
        drop(cleaner);
    };
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(body)).await;
    let _ = helm.run(&["uninstall", &release, "-n", &namespace, "--wait"]);
    let _ = namespaces
        .delete(&namespace, &DeleteParams::default())
        .await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
