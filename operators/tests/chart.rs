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
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::config::Kubeconfig;
use ossature_crds::Tenant;
use ossature_e2e::chart::{self, Helm};
use serde::Deserialize;
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

    // Secrets: none in the operator's own ClusterRole; by default only the
    // right to bind the Secrets role, which the operator is told of.
    assert!(
        !rules.iter().any(|r| r["resources"]
            .as_array()
            .unwrap()
            .contains(&json!("secrets"))),
        "the operator's ClusterRole grants Secrets"
    );
    let bind = rules
        .iter()
        .find(|r| r["resources"] == json!(["clusterroles"]))
        .expect("a rule to bind the Secrets role");
    assert_eq!(bind["verbs"], json!(["bind"]));
    assert_eq!(
        bind["resourceNames"],
        json!(["r-ossature-operator-secrets"])
    );
    let secrets_role = named(&objects, "ClusterRole", "r-ossature-operator-secrets");
    assert_eq!(
        secrets_role["rules"],
        json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]}])
    );
    named(&objects, "RoleBinding", "r-ossature-operator-secrets");
    let args = |objects: &[Value]| -> Vec<String> {
        serde_json::from_value(
            named(objects, "Deployment", "r-ossature-operator")["spec"]["template"]["spec"]
                ["containers"][0]["args"]
                .clone(),
        )
        .unwrap()
    };
    assert!(args(&objects).contains(&"--secrets-role=r-ossature-operator-secrets".to_string()));
    // Or, asked for, Secrets everywhere through one binding.
    let cluster = render(
        &helm,
        "ossature-system",
        &["--set", "operator.secretsAccess=cluster"],
    );
    named(
        &cluster,
        "ClusterRoleBinding",
        "r-ossature-operator-secrets",
    );
    assert!(
        !args(&cluster)
            .iter()
            .any(|a| a.starts_with("--secrets-role"))
    );
    assert!(
        chart::of_kind(&cluster, "ValidatingAdmissionPolicy")
            .iter()
            .all(|p| !p["metadata"]["name"].as_str().unwrap().contains("secrets")),
        "no binding policy without bindings"
    );

    // With one release per shard, one installs the cluster-wide policies.
    let shard = render(
        &helm,
        "ossature-system",
        &["--set", "operator.admissionPolicies=false"],
    );
    let kept: Vec<&str> = chart::of_kind(&shard, "ValidatingAdmissionPolicy")
        .into_iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        kept,
        [
            "r-ossature-control-plane-namespaces",
            "r-ossature-operator-secrets-bindings",
            "r-ossature-operator-tenant-labels"
        ],
        "only the release's own policies are left"
    );

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

    // The alert rules are the plain rule file, as it is, where
    // PrometheusRule is served; the dashboard is the chart's JSON, in a
    // ConfigMap Grafana's sidecar picks up.
    assert!(chart::of_kind(&objects, "PrometheusRule").is_empty());
    let ruled = render(
        &helm,
        "ossature-system",
        &["--api-versions", "monitoring.coreos.com/v1/PrometheusRule"],
    );
    let rules = named(&ruled, "PrometheusRule", "r-ossature");
    let file = |name: &str| std::fs::read_to_string(chart::chart_dir().join(name)).unwrap();
    let plain: Value = serde_norway::from_str(&file("files/alerts.yaml")).unwrap();
    assert_eq!(rules["spec"], plain);
    let refused = refusal(&helm, &["prometheusRule.enabled=true"]);
    assert!(
        refused.contains("serves no monitoring.coreos.com/v1 PrometheusRule"),
        "{refused}"
    );
    let dashboard = named(&objects, "ConfigMap", "r-ossature-dashboard");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value = serde_json::from_str(&file("files/dashboard.json")).unwrap();
    let rendered: Value =
        serde_json::from_str(dashboard["data"]["ossature.json"].as_str().unwrap()).unwrap();
    assert_eq!(rendered, shipped);
    let without = render(
        &helm,
        "ossature-system",
        &["--set", "grafanaDashboard.enabled=false"],
    );
    assert!(chart::of_kind(&without, "ConfigMap").is_empty());
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
            &["operator.secretsAccess=everywhere"],
            "at '/operator/secretsAccess'",
        ),
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

/// A release of the chart installed for one test, in a namespace of its
/// own holding the Secrets its values name; kwok runs its pods.
struct Release {
    env: BTreeMap<String, String>,
    admin: kube::Client,
    helm: Helm,
    namespace: String,
    name: String,
    /// `-f` files: the test values, then the stack's.
    values: Vec<String>,
}

impl Release {
    async fn install(env: &BTreeMap<String, String>, extra: Value) -> Release {
        let admin = kube_client(env).await;
        let helm = Helm::new(Path::new(&env["KUBECONFIG"])).await.unwrap();
        let namespace = ossature_e2e::unique("chart");
        let name = ossature_e2e::unique("oss");
        create_namespace(&Api::all(admin.clone()), &namespace, json!({})).await;
        // The Secrets the values name, with the stack's credentials.
        let secrets: Api<Secret> = Api::namespaced(admin.clone(), &namespace);
        let pulsar_token = std::fs::read_to_string(&env["OSSATURE_PULSAR_TOKEN_FILE"]).unwrap();
        for (secret, data) in [
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
                    &serde_json::from_value(
                        json!({"metadata": {"name": secret}, "stringData": data}),
                    )
                    .unwrap(),
                )
                .await
                .unwrap();
        }
        // kwok's node may carry its taint; the stack's policies already
        // exist (other tests' operators wrote them), so this release leaves
        // them be.
        let toleration = json!([{"key": "kwok.x-k8s.io/node", "operator": "Exists"}]);
        let mut stack_values = json!({
            "operator": {"admissionPolicies": false, "tolerations": toleration},
            "controlPlane": {"tolerations": toleration},
        });
        merge(&mut stack_values, extra);
        let stack_values = temp_file(
            "values.yaml",
            &serde_json::to_string(&stack_values).unwrap(),
        );
        let release = Release {
            env: env.clone(),
            admin,
            helm,
            namespace,
            name,
            values: vec![values(), stack_values.to_string_lossy().into_owned()],
        };
        release.deploy("install", &[]).unwrap();
        release
    }

    /// `helm install` or `upgrade` of the release with its values.
    fn deploy(&self, verb: &str, extra: &[&str]) -> anyhow::Result<String> {
        let chart_path = chart_dir();
        let mut args = vec![verb, &self.name, &chart_path, "-n", &self.namespace];
        for file in &self.values {
            args.extend(["-f", file]);
        }
        args.extend(["--skip-crds", "--wait", "--timeout", "3m"]);
        args.extend(extra);
        self.helm.ok(&args)
    }

    fn operator_name(&self) -> String {
        format!("{}-ossature-operator", self.name)
    }

    fn control_plane_name(&self) -> String {
        format!("{}-ossature-control-plane", self.name)
    }

    /// The stack's environment with a kubeconfig holding only a token of
    /// the operator's ServiceAccount.
    async fn operator_env(&self) -> BTreeMap<String, String> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.admin.clone(), &self.namespace);
        let token = common::account_token(&accounts, &self.operator_name()).await;
        let mut env = self.env.clone();
        env.insert(
            "KUBECONFIG".into(),
            kubeconfig_with_token(&self.env, &token)
                .to_string_lossy()
                .into_owned(),
        );
        env
    }

    /// Runs `body`, then uninstalls the release and deletes its namespace,
    /// whatever `body` did.
    async fn around(&self, body: impl std::future::Future<Output = ()>) {
        let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(body)).await;
        let _ = self
            .helm
            .run(&["uninstall", &self.name, "-n", &self.namespace, "--wait"]);
        let _ = Api::<Namespace>::all(self.admin.clone())
            .delete(&self.namespace, &DeleteParams::default())
            .await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

/// `extra`'s fields over `base`'s, objects merged key by key.
fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(base), Value::Object(extra)) => {
            for (key, value) in extra {
                merge(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, extra) => *base = extra,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn install_upgrade_over_a_live_tenant_and_uninstall() {
    let env = stack().await;
    let release = Release::install(&env, json!({})).await;
    let (admin, helm, namespace) = (
        release.admin.clone(),
        Helm::new(Path::new(&env["KUBECONFIG"])).await.unwrap(),
        release.namespace.clone(),
    );
    let (operator_name, control_plane_name) =
        (release.operator_name(), release.control_plane_name());
    let body = async {
        wait_available(
            &admin,
            &namespace,
            &[&operator_name, &control_plane_name],
            1,
        )
        .await;

        // This release's operator, as the chart's ServiceAccount, onboards a
        // tenant: every call it makes for one is allowed by the chart.
        let operator_env = release.operator_env().await;
        let selector = format!("chart-{}", common::suffix());
        let lease_namespace = format!("--lease-namespace={namespace}");
        let acme_namespace = format!("--acme-namespace={namespace}");
        let secrets_role = format!("--secrets-role={operator_name}-secrets");
        let operator = start_operator_with(
            &operator_env,
            &selector,
            &[
                "--no-edge",
                &lease_namespace,
                &acme_namespace,
                &secrets_role,
            ],
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
        release
            .deploy(
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
            .ok(&["get", "manifest", &release.name, "-n", &namespace])
            .unwrap();
        let created = chart::documents(&manifest).unwrap();
        assert!(
            created.len() >= 20,
            "the release holds {} objects",
            created.len()
        );
        helm.ok(&[
            "uninstall",
            &release.name,
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
    release.around(body).await;
}

/// `examples/acme.yaml`, its tenant renamed `tenant` (every name derived
/// from it follows) and labelled for the operator of test `selector`.
fn acme_example(tenant: &str, selector: &str) -> Vec<DynamicObject> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/acme.yaml");
    let text = std::fs::read_to_string(path)
        .unwrap()
        .replace("acme", tenant);
    serde_norway::Deserializer::from_str(&text)
        .map(|document| {
            let mut object = DynamicObject::deserialize(document).unwrap();
            if object.types.as_ref().unwrap().kind == "Tenant" {
                object
                    .metadata
                    .labels
                    .get_or_insert_with(Default::default)
                    .insert(ossature_e2e::TEST_LABEL.into(), selector.into());
            }
            object
        })
        .collect()
}

/// The API of `object`'s kind, as discovery finds it.
async fn api_of(client: &kube::Client, object: &DynamicObject) -> Api<DynamicObject> {
    let types = object.types.as_ref().unwrap();
    let (group, version) = types
        .api_version
        .split_once('/')
        .unwrap_or(("", &types.api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, &types.kind);
    let (resource, _) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
    match &object.metadata.namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// The apiserver's answer to a call made with `client`'s credentials: its
/// HTTP status, 200 when it succeeded.
fn status_of<T>(result: Result<T, kube::Error>) -> u16 {
    match result {
        Ok(_) => 200,
        Err(kube::Error::Api(status)) => status.code,
        Err(other) => panic!("no answer from the apiserver: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_flow_runs_with_the_charts_rights_and_no_more() {
    let env = stack().await;
    let release = Release::install(&env, json!({"controlPlane": {"enabled": false}})).await;
    let admin = release.admin.clone();
    let namespace = release.namespace.clone();
    let operator_name = release.operator_name();
    let body = async {
        let operator_env = release.operator_env().await;
        let operator_client = kube_client(&operator_env).await;
        let selector = format!("lp-{}", common::suffix());
        let operator = start_operator_with(
            &operator_env,
            &selector,
            &[
                "--no-edge",
                &format!("--lease-namespace={namespace}"),
                &format!("--acme-namespace={namespace}"),
                &format!("--secrets-role={operator_name}-secrets"),
            ],
        );
        let operator_log = operator.log.clone();

        // The README's apply, as a user does it (with the stack's admin),
        // and everything Ready.
        let tenant = format!("lp{}", common::suffix().replace('-', ""));
        let objects = acme_example(&tenant, &selector);
        for object in &objects {
            api_of(&admin, object)
                .await
                .create(&PostParams::default(), object)
                .await
                .unwrap();
        }
        for object in objects
            .iter()
            .filter(|o| o.types.as_ref().unwrap().kind != "Namespace")
        {
            common::wait_dynamic_ready(
                &api_of(&admin, object).await,
                object,
                Duration::from_secs(240),
            )
            .await;
        }

        // Secrets are its own only where it bound itself: the tenant's and
        // the environments' namespaces.
        let tenant_namespace = format!("tn-{tenant}");
        let prod = format!("tn-{tenant}--prod");
        for bound in [&tenant_namespace, &prod, &format!("tn-{tenant}--staging")] {
            let binding =
                Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(admin.clone(), bound)
                    .get("ossature-operator-secrets")
                    .await
                    .unwrap_or_else(|e| panic!("no Secrets binding in {bound}: {e}"));
            assert_eq!(binding.role_ref.name, format!("{operator_name}-secrets"));
            let subject = &binding.subjects.unwrap()[0];
            assert_eq!(
                (
                    subject.kind.as_str(),
                    subject.name.as_str(),
                    subject.namespace.as_deref()
                ),
                (
                    "ServiceAccount",
                    operator_name.as_str(),
                    Some(namespace.as_str())
                )
            );
        }
        // Its watch there works: a certificate's Secret deleted by hand
        // comes back.
        let prod_secrets: Api<Secret> = Api::namespaced(admin.clone(), &prod);
        let certificate_secrets = prod_secrets
            .list(
                &kube::api::ListParams::default()
                    .labels(ossature_model::certificates::secret::CERTIFICATE_LABEL),
            )
            .await
            .unwrap();
        let deleted = certificate_secrets
            .items
            .first()
            .expect("the services' certificates have Secrets in their namespace")
            .clone();
        let deleted_name = deleted.metadata.name.clone().unwrap();
        prod_secrets
            .delete(&deleted_name, &DeleteParams::default())
            .await
            .unwrap();
        wait_for(
            &format!("Secret {prod}/{deleted_name} put back"),
            Duration::from_secs(60),
            || {
                let (secrets, name, uid) = (
                    prod_secrets.clone(),
                    deleted_name.clone(),
                    deleted.metadata.uid.clone(),
                );
                async move {
                    let back = secrets.get_opt(&name).await.ok()??;
                    (back.metadata.uid != uid).then_some(())
                }
            },
        )
        .await;

        // What it never needs, it is refused: Secrets elsewhere, Nodes,
        // RBAC beyond its own, and the way around it.
        let secrets_in = |ns: &str| Api::<Secret>::namespaced(operator_client.clone(), ns);
        let refused = [
            (
                "a Secret in kube-system",
                status_of(secrets_in("kube-system").list(&Default::default()).await),
            ),
            (
                "Secrets of every namespace",
                status_of(
                    Api::<Secret>::all(operator_client.clone())
                        .list(&Default::default())
                        .await,
                ),
            ),
            (
                "a Secret in default",
                status_of(
                    secrets_in("default")
                        .create(
                            &PostParams::default(),
                            &serde_json::from_value(json!({"metadata": {"name": "lp"}})).unwrap(),
                        )
                        .await,
                ),
            ),
            (
                "Nodes",
                status_of(
                    Api::<k8s_openapi::api::core::v1::Node>::all(operator_client.clone())
                        .list(&Default::default())
                        .await,
                ),
            ),
        ];
        let binding = |ns: &str, role: &str| -> k8s_openapi::api::rbac::v1::RoleBinding {
            serde_json::from_value(json!({
                "metadata": {"name": "lp-escalation", "namespace": ns},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": operator_name, "namespace": namespace}],
            }))
            .unwrap()
        };
        let bindings_in = |ns: &str| {
            Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(operator_client.clone(), ns)
        };
        let secrets_role = format!("{operator_name}-secrets");
        let kube_system = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some("kube-system".into()),
                labels: Some(
                    [(
                        ossature_model::names::TENANT_LABEL.to_string(),
                        tenant.clone(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        let escalations = [
            ("cluster-admin in its tenant's namespace", status_of(bindings_in(&tenant_namespace).create(&PostParams::default(), &binding(&tenant_namespace, "cluster-admin")).await)),
            ("its Secrets role in kube-system", status_of(bindings_in("kube-system").create(&PostParams::default(), &binding("kube-system", &secrets_role)).await)),
            ("kube-system labelled as a tenant's", status_of(Api::<Namespace>::all(operator_client.clone()).patch("kube-system", &kube::api::PatchParams::apply("lp-test"), &kube::api::Patch::Apply(&kube_system)).await)),
            ("a ClusterRoleBinding", status_of(Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(operator_client.clone()).create(&PostParams::default(), &serde_json::from_value(json!({
                "metadata": {"name": "lp-escalation"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": secrets_role},
                "subjects": [{"kind": "ServiceAccount", "name": operator_name, "namespace": namespace}],
            })).unwrap()).await)),
        ];
        for (what, status) in refused.iter().chain(&escalations) {
            assert_eq!(
                *status, 403,
                "the operator's credentials were not refused {what}"
            );
        }

        // Not one call of the flow so far was refused.
        let log = std::fs::read_to_string(&operator_log).unwrap();
        let refusals: Vec<&str> = log
            .lines()
            // RBAC's refusals and admission policies'.
            .filter(|l| l.contains("forbidden: User") || l.contains("denied request"))
            .collect();
        assert!(
            refusals.is_empty(),
            "calls refused:\n{}",
            refusals.join("\n")
        );

        // Offboarding, with the same rights, removes everything (a
        // namespace being deleted loses its Secrets binding early: a
        // reconcile caught there is retried, and must not hold it up).
        let tenants: Api<Tenant> = Api::all(admin.clone());
        common::delete_tenants(&tenants, &[&tenant]).await;
        for gone in [&tenant_namespace, &prod] {
            wait_for(
                &format!("namespace {gone} gone"),
                Duration::from_secs(120),
                || {
                    let namespaces = Api::<Namespace>::all(admin.clone());
                    async move { namespaces.get_opt(gone).await.ok()?.is_none().then_some(()) }
                },
            )
            .await;
        }
        drop(operator);
    };
    release.around(body).await;
}
