//! The control plane runs with only the rights `ossature-control-plane rbac`
//! grants: a ServiceAccount of the test's own, bound to exactly those rules,
//! with a token from the TokenRequest API, serves the whole API flow (every
//! command, dry runs, replays, an expired key taken over and swept, every
//! query, offboarding) without one call refused by the apiserver; the same
//! token is refused Secrets, Nodes, RBAC escalation and ConfigMaps outside
//! the control plane's namespace.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::http::{Request, Response, StatusCode};
use common::*;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams,
    PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use ossature_control_plane::rbac::{self, Grantee};
use ossature_crds::{
    Certificate, Environment, Scope, ServiceIdentity, TenantRole, Topic, Workload,
};
use serde_json::{Value, json};

/// The apiserver calls it refused, as `METHOD path`.
#[derive(Clone, Default)]
struct Refusals(Arc<Mutex<Vec<String>>>);

impl<S> tower::Layer<S> for Refusals {
    type Service = Recorded<S>;
    fn layer(&self, inner: S) -> Recorded<S> {
        Recorded {
            inner,
            refusals: self.clone(),
        }
    }
}

/// A client's service that notes every 403 the apiserver answers.
struct Recorded<S> {
    inner: S,
    refusals: Refusals,
}

impl<S, B, R> tower::Service<Request<B>> for Recorded<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let call = format!("{} {}", request.method(), request.uri());
        let refusals = self.refusals.clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            if response.status() == StatusCode::FORBIDDEN {
                refusals.0.lock().unwrap().push(call);
            }
            Ok(response)
        })
    }
}

/// The stack's kubeconfig with `token` as its only credential.
fn kubeconfig_with_token(
    env: &std::collections::BTreeMap<String, String>,
    token: &str,
) -> Kubeconfig {
    let mut kubeconfig = Kubeconfig::read_from(&env["KUBECONFIG"]).unwrap();
    for user in &mut kubeconfig.auth_infos {
        user.auth_info = Some(serde_json::from_value(json!({"token": token})).unwrap());
    }
    kubeconfig
}

/// A client of the apiserver with `token`, noting refusals in `refusals`.
async fn client_with_token(
    env: &std::collections::BTreeMap<String, String>,
    token: &str,
    refusals: &Refusals,
) -> Client {
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig_with_token(env, token),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    kube::client::ClientBuilder::try_from(config)
        .unwrap()
        .with_layer(refusals)
        .build()
}

/// What the test installed: removed when it ends, also when it fails.
struct Installed {
    kubeconfig: String,
    grantee: Grantee,
    tenant: String,
}

impl Installed {
    async fn remove(kubeconfig: &str, grantee: &Grantee, tenant: &str) {
        let config = kube::Config::from_custom_kubeconfig(
            Kubeconfig::read_from(kubeconfig).unwrap(),
            &KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        let admin = Client::try_from(config).unwrap();
        remove_tenant(&admin, tenant).await;
        // After a failure no operator finishes what the tenant left: its
        // namespaces go with their objects' finalizers.
        let namespaces: Api<Namespace> = Api::all(admin.clone());
        let owned = ListParams::default().labels(&format!("ossature.dev/tenant={tenant}"));
        for namespace in namespaces
            .list(&owned)
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let name = namespace.metadata.name.unwrap_or_default();
            for resource in [
                ApiResource::erase::<Scope>(&()),
                ApiResource::erase::<TenantRole>(&()),
                ApiResource::erase::<Environment>(&()),
                ApiResource::erase::<Certificate>(&()),
                ApiResource::erase::<Topic>(&()),
                ApiResource::erase::<ServiceIdentity>(&()),
                ApiResource::erase::<Workload>(&()),
            ] {
                let objects: Api<DynamicObject> =
                    Api::namespaced_with(admin.clone(), &name, &resource);
                for object in objects
                    .list(&ListParams::default())
                    .await
                    .map(|l| l.items)
                    .unwrap_or_default()
                {
                    let unfinalized = json!({"metadata": {"finalizers": null}});
                    let _ = objects
                        .patch(
                            &object.metadata.name.unwrap_or_default(),
                            &PatchParams::default(),
                            &Patch::Merge(&unfinalized),
                        )
                        .await;
                }
            }
            let _ = namespaces.delete(&name, &DeleteParams::default()).await;
        }
        let delete = DeleteParams::default();
        let _ = Api::<ClusterRoleBinding>::all(admin.clone())
            .delete(&grantee.name, &delete)
            .await;
        let _ = Api::<ClusterRole>::all(admin.clone())
            .delete(&grantee.name, &delete)
            .await;
        let policy = grantee.grants().namespace_policy.metadata.name;
        let policy = policy.as_deref().unwrap_or_default();
        let _ = Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone())
            .delete(policy, &delete)
            .await;
        let _ = Api::<ValidatingAdmissionPolicy>::all(admin.clone())
            .delete(policy, &delete)
            .await;
        // With it go the ServiceAccount, Role, RoleBinding and keys.
        let _ = Api::<Namespace>::all(admin)
            .delete(&grantee.namespace, &delete)
            .await;
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let (kubeconfig, grantee, tenant) = (
            self.kubeconfig.clone(),
            self.grantee.clone(),
            self.tenant.clone(),
        );
        run_to_end(async move { Installed::remove(&kubeconfig, &grantee, &tenant).await });
    }
}

/// Creates `object` with the stack's own rights.
async fn make<K>(api: Api<K>, object: &K)
where
    K: Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if let Err(e) = api.create(&PostParams::default(), object).await {
        panic!("creating {object:?}: {e}");
    }
}

/// A namespace, a ServiceAccount in it, and the control plane's rules
/// granted to it as `rbac` prints them; a token of the ServiceAccount.
async fn install(admin: &Client, grantee: &Grantee) -> String {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(grantee.namespace.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    make(Api::all(admin.clone()), &namespace).await;
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), &grantee.namespace);
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(grantee.service_account.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    make(accounts.clone(), &account).await;
    let grants = grantee.grants();
    make(Api::all(admin.clone()), &grants.cluster_role).await;
    make(Api::all(admin.clone()), &grants.cluster_role_binding).await;
    make(
        Api::namespaced(admin.clone(), &grantee.namespace),
        &grants.role,
    )
    .await;
    make(
        Api::namespaced(admin.clone(), &grantee.namespace),
        &grants.role_binding,
    )
    .await;
    make(Api::all(admin.clone()), &grants.namespace_policy).await;
    make(Api::all(admin.clone()), &grants.namespace_policy_binding).await;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    accounts
        .create_token_request(&grantee.service_account, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .and_then(|s| s.token)
        .expect("the TokenRequest's token")
}

/// Asserts a command or query answered with success, showing its problem.
fn assert_ok(what: &str, answer: &Answer) {
    assert!(
        answer.0.is_success(),
        "{what} answered {}: {}",
        answer.0,
        answer.2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_control_plane_serves_everything_with_its_own_rights_and_no_more() {
    // Warnings shown: a watch the apiserver refuses says so.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn,ossature_operator=error")
        .with_test_writer()
        .try_init();
    let env = stack().await;
    let admin = kube_client(&env).await;
    let grantee = Grantee {
        service_account: ossature_e2e::unique("cp-sa"),
        namespace: ossature_e2e::unique("cp-lp"),
        name: ossature_e2e::unique("cp-lp"),
    };
    let tenant = ossature_e2e::unique("cplp");
    let _installed = Installed {
        kubeconfig: env["KUBECONFIG"].clone(),
        grantee: grantee.clone(),
        tenant: tenant.clone(),
    };
    let token = install(&admin, &grantee).await;
    let refusals = Refusals::default();
    let restricted = client_with_token(&env, &token, &refusals).await;

    // The control plane in this process with the ServiceAccount's client
    // (it checks its rights as it starts), the operator with the stack's
    // own under a selector of the test.
    let selector = ossature_e2e::unique("cp");
    let operator = start_operator(&env, &selector);
    let ops = OperatorsRealm::create(&env, "platform-operators").await;
    let flags = [
        "--rate-limit-per-second",
        "1000",
        "--rate-limit-burst",
        "1000",
        "--state-namespace",
        &grantee.namespace,
    ];
    let cp = ControlPlane::start_with(&env, &restricted, &ops.realm, &flags, "http").await;
    let ops_token = ops.token().await;
    let command = async |name: &str, key: &str, body: Value| -> Value {
        let answer = cp.command(name, &ops_token, key, &body).await;
        assert_ok(name, &answer);
        answer.2
    };
    let dry_run = async |name: &str, mut body: Value| {
        body["dryRun"] = json!(true);
        let answer = cp.command(name, &ops_token, "dry", &body).await;
        assert_ok(&format!("{name} (dry run)"), &answer);
        assert_eq!(answer.2["dryRun"], true, "{}", answer.2);
    };

    // Onboarding: planned, made, waited for, replayed.
    let mut onboard = onboarding(&tenant, &selector);
    dry_run("onboardTenant", onboard.clone()).await;
    onboard["wait"] = json!({"timeoutSeconds": 300});
    let onboarded = command("onboardTenant", "onboard", onboard.clone()).await;
    assert_eq!(onboarded["outcome"]["state"], "Ready", "{onboarded}");
    let replayed = command("onboardTenant", "onboard", onboard).await;
    assert_eq!(replayed["replay"], true, "{replayed}");

    // Every other command, each planned first.
    // Each step's dry run is first asked until it passes when the step
    // needs what the watch has yet to see (a role just defined or unmapped).
    let definition =
        r#"{"type": "record", "name": "Order", "fields": [{"name": "id", "type": "string"}]}"#;
    let in_prod = |name: &str| json!({"tenant": tenant, "environment": "prod", "name": name});
    let with_spec = |name: &str, spec: Value| {
        let mut body = in_prod(name);
        body["spec"] = spec;
        body
    };
    let mapping = json!({"tenant": tenant, "scope": "eu", "group": "idp-ops", "role": "deployer"});
    let steps = [
        (
            "changeTenant",
            json!({"tenant": tenant, "quotas": {"pods": 60}}),
            false,
        ),
        (
            "addScope",
            // Ready before it moves: the operator's writes meanwhile would
            // fail the move's precondition.
            json!({"tenant": tenant, "scope": {"name": "apac", "displayName": "APAC", "parent": "global"},
                   "wait": {"timeoutSeconds": 60}}),
            false,
        ),
        (
            "moveScope",
            json!({"tenant": tenant, "scope": "apac", "parent": "eu"}),
            false,
        ),
        (
            "grantRole",
            json!({"tenant": tenant, "scope": "eu", "role": "Viewer", "users": ["alice"]}),
            false,
        ),
        (
            "revokeRole",
            json!({"tenant": tenant, "scope": "eu", "role": "Viewer", "users": ["alice"]}),
            false,
        ),
        (
            "defineRole",
            json!({"tenant": tenant, "role": {"name": "deployer", "description": "makes environments",
                   "permissions": [{"resource": "environment", "actions": ["create"]}]}}),
            false,
        ),
        ("mapGroup", mapping.clone(), true),
        ("unmapGroup", mapping.clone(), false),
        (
            "removeRole",
            json!({"tenant": tenant, "role": "deployer"}),
            true,
        ),
        (
            "createEnvironment",
            json!({"tenant": tenant, "environment": {"name": "staging", "kind": "Staging"},
                   "wait": {"timeoutSeconds": 120}}),
            false,
        ),
        (
            "requestCertificate",
            json!({"tenant": tenant, "environment": "staging", "name": "api",
                   "dnsNames": [format!("api.{tenant}.ossature.test")]}),
            false,
        ),
        (
            "requestCertificate",
            json!({"tenant": tenant, "name": "edge",
                   "dnsNames": [format!("{tenant}.ossature.test")]}),
            false,
        ),
        (
            "applyTopic",
            with_spec(
                "orders",
                json!({"partitions": 2, "schema": {"type": "AVRO", "definition": definition}}),
            ),
            false,
        ),
        (
            "applyServiceIdentity",
            with_spec(
                "console",
                json!({"id": "01JQ3X5T0RYB9Q8K1W7ZC4M2NP", "owner": "global",
                       "description": "a service of the tenant"}),
            ),
            false,
        ),
        (
            "applyWorkload",
            with_spec(
                "console-api",
                json!({"template": "CommandEndpoint", "serviceIdentity": "console",
                       "image": "registry.example/acme/console:1.0.0", "replicas": 1}),
            ),
            false,
        ),
        ("rotateCredentials", in_prod("console"), false),
        ("removeWorkload", in_prod("console-api"), false),
        ("removeServiceIdentity", in_prod("console"), false),
        ("removeTopic", in_prod("orders"), false),
        (
            "removeEnvironment",
            json!({"tenant": tenant, "environment": "staging"}),
            false,
        ),
        (
            "removeScope",
            json!({"tenant": tenant, "scope": "apac"}),
            false,
        ),
    ];
    for (i, (name, body, once_seen)) in steps.iter().enumerate() {
        if *once_seen {
            let mut dry = body.clone();
            dry["dryRun"] = json!(true);
            wait_status(&cp, &ops_token, &format!("/v1/commands/{name}"), &dry, 200).await;
        } else {
            dry_run(name, body.clone()).await;
        }
        command(name, &format!("step-{i}"), body.clone()).await;
    }
    let every: std::collections::BTreeSet<&str> = steps.iter().map(|s| s.0).collect();
    for name in ossature_control_plane::commands::NAMES {
        assert!(
            every.contains(name) || ["onboardTenant", "offboardTenant"].contains(name),
            "command {name} is not run with the control plane's own rights here"
        );
    }

    // Bulk commands and queries.
    let bulk = json!({"validateFirst": true, "items": [
        {"command": "grantRole", "idempotencyKey": "bulk-1",
         "input": {"tenant": tenant, "scope": "global", "role": "Editor", "groups": ["editors"]}},
        {"command": "addScope", "idempotencyKey": "bulk-2",
         "input": {"tenant": tenant, "scope": {"name": "bulk", "displayName": "Bulk"}}},
    ]});
    let answer = cp.post("/v1/commands", Some(&ops_token), None, &bulk).await;
    assert_ok("bulk commands", &answer);
    for item in answer.2["items"].as_array().unwrap() {
        assert_eq!(item["status"], 200, "{item}");
    }

    // An expired key is taken over by the next request with it; another
    // is removed by the sweeper, with the control plane's own rights.
    let keys: Api<ConfigMap> = Api::namespaced(admin.clone(), &grantee.namespace);
    let expire = async |invocation: &Value| {
        let list = keys
            .list(&ListParams::default().labels(&format!(
                "control-plane.ossature.dev/invocation={}",
                invocation.as_str().unwrap()
            )))
            .await
            .unwrap();
        let name = list.items[0].metadata.name.clone().unwrap();
        let expired = json!({"metadata": {"annotations": {"control-plane.ossature.dev/expires-at": "2020-01-01T00:00:00Z"}}});
        keys.patch(&name, &PatchParams::default(), &Patch::Merge(&expired))
            .await
            .unwrap();
        name
    };
    let change = json!({"tenant": tenant, "quotas": {"pods": 70}});
    let mut swept = String::new();
    for when in ["first", "after its key expired"] {
        let answer = cp
            .command("changeTenant", &ops_token, "change-twice", &change)
            .await;
        assert_ok(&format!("changeTenant {when}"), &answer);
        assert_eq!(answer.2["replay"], false, "{}", answer.2);
        swept = expire(&answer.2["invocationId"]).await;
    }
    let removed = cp.running.app.idempotency.sweep().await.unwrap();
    assert!(removed >= 1, "the sweeper removed {removed} keys");
    assert!(keys.get_opt(&swept).await.unwrap().is_none());

    // Every query.
    let queries = [
        ("tenantStatus", json!({"tenant": tenant})),
        ("listTenants", json!({"limit": 10})),
        (
            "invocationStatus",
            json!({"invocationId": onboarded["invocationId"]}),
        ),
        ("tenantTree", json!({"tenant": tenant})),
        ("tenantTree", json!({"tenant": tenant, "scope": "eu"})),
        (
            "callerPermissions",
            json!({"tenant": tenant, "scope": "eu"}),
        ),
        (
            "rolePermissions",
            json!({"tenant": tenant, "roles": ["Admin", "Viewer"]}),
        ),
    ];
    for (name, body) in &queries {
        let answer = cp.query(name, &ops_token, body).await;
        assert_ok(name, &answer);
    }
    for name in ossature_control_plane::queries::NAMES {
        assert!(
            queries.iter().any(|q| q.0 == *name),
            "query {name} is not asked with the control plane's own rights here"
        );
    }
    let bulk = json!({"items": queries.iter().map(|(name, body)| json!({"query": name, "input": body})).collect::<Vec<_>>()});
    let answer = cp.post("/v1/queries", Some(&ops_token), None, &bulk).await;
    assert_ok("bulk queries", &answer);
    for item in answer.2["items"].as_array().unwrap() {
        assert_eq!(item["status"], 200, "{item}");
    }

    // Offboarding, planned then done and waited for.
    dry_run("offboardTenant", json!({"tenant": tenant})).await;
    cp.offboard(&ops_token, &tenant).await;

    let refused = refusals.0.lock().unwrap().clone();
    assert!(
        refused.is_empty(),
        "the apiserver refused the control plane: {refused:#?}"
    );
    let lines = cp.audit_lines();
    let failed: Vec<&Value> = lines
        .iter()
        .filter(|l| l["status"].as_u64().is_some_and(|s| s >= 500))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    cp.running.stop();
    operator.abort();

    // The same credentials, refused what the control plane never needs.
    let ignored = Refusals::default();
    let same = client_with_token(&env, &token, &ignored).await;
    refuses_what_is_not_needed(&same, &grantee, &tenant).await;
}

fn forbidden<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what} was not refused: {other:?}"),
    }
}

async fn refuses_what_is_not_needed(client: &Client, grantee: &Grantee, tenant: &str) {
    let own = grantee.namespace.as_str();
    let tenant_namespace = ossature_model::tenant_namespace(tenant);
    let get = ListParams::default();
    forbidden(
        "listing Secrets cluster-wide",
        Api::<Secret>::all(client.clone()).list(&get).await,
    );
    for namespace in [own, "kube-system", "default", tenant_namespace.as_str()] {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        forbidden(
            &format!("listing Secrets in {namespace}"),
            secrets.list(&get).await,
        );
        forbidden(
            &format!("reading a Secret in {namespace}"),
            secrets.get("anything").await,
        );
    }
    forbidden(
        "listing Nodes",
        Api::<Node>::all(client.clone()).list(&get).await,
    );
    forbidden(
        "reading a Node",
        Api::<Node>::all(client.clone()).get("kwok-node-0").await,
    );
    forbidden(
        "listing ConfigMaps cluster-wide",
        Api::<ConfigMap>::all(client.clone()).list(&get).await,
    );
    for namespace in ["kube-system", "default", "ossature-system"] {
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        forbidden(
            &format!("listing ConfigMaps in {namespace}"),
            maps.list(&get).await,
        );
        let map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(ossature_e2e::unique("lp")),
                ..Default::default()
            },
            ..Default::default()
        };
        forbidden(
            &format!("creating a ConfigMap in {namespace}"),
            maps.create(&PostParams::default(), &map).await,
        );
    }
    let escalation: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": ossature_e2e::unique("lp-escalation")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": grantee.service_account, "namespace": own}],
    }))
    .unwrap();
    forbidden(
        "binding itself to cluster-admin",
        Api::<ClusterRoleBinding>::all(client.clone())
            .create(&PostParams::default(), &escalation)
            .await,
    );
    forbidden(
        "changing its own ClusterRole",
        Api::<ClusterRole>::all(client.clone())
            .patch(
                &grantee.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]})),
            )
            .await,
    );

    // Namespaces: RBAC lets it write any, its admission policy only its
    // own and tenants', and only its own label and annotations on them.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    // Dry runs: admission decides them, nothing is stored.
    let apply = PatchParams::apply("ossature-control-plane")
        .force()
        .dry_run();
    let relabel = |name: &str, labels: Value| {
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": name, "labels": labels}})
    };
    let privileged = json!({"pod-security.kubernetes.io/enforce": "privileged"});
    let stranger = ossature_e2e::unique("lp-stranger");
    let newcomer = ossature_e2e::unique("lp-newcomer");
    let newcomer_namespace = ossature_model::tenant_namespace(&newcomer);
    let foreign_name = "writes only its own namespace";
    let foreign_label = "sets no label of a namespace but ossature.dev/tenant";
    for (what, name, labels, why) in [
        (
            "relabelling default",
            "default",
            privileged.clone(),
            foreign_name,
        ),
        (
            "relabelling kube-system",
            "kube-system",
            privileged.clone(),
            foreign_name,
        ),
        (
            "making a namespace that is no tenant's",
            stranger.as_str(),
            json!({}),
            foreign_name,
        ),
        (
            "making a namespace labelled for another tenant",
            "tn-someone-else",
            json!({"ossature.dev/tenant": "another"}),
            foreign_name,
        ),
        (
            "lifting its own namespace's pod security",
            own,
            privileged.clone(),
            foreign_label,
        ),
        (
            "making a tenant's namespace without pod security",
            newcomer_namespace.as_str(),
            json!({"ossature.dev/tenant": newcomer, "pod-security.kubernetes.io/enforce": "privileged"}),
            foreign_label,
        ),
    ] {
        // The policy reaches the apiserver's admission within a few seconds.
        let mut refused = None;
        for _ in 0..50 {
            match namespaces
                .patch(name, &apply, &Patch::Apply(relabel(name, labels.clone())))
                .await
            {
                Err(kube::Error::Api(status)) if status.code == 403 => {
                    refused = Some(status.message);
                    break;
                }
                Err(e) => panic!("{what}: {e}"),
                Ok(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
        let refused = refused.unwrap_or_else(|| panic!("{what} was not refused"));
        assert!(refused.contains(why), "{what}: {refused}");
    }

    // And what the apiserver says it may not do, without trying.
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let denied: [(&str, &str, &str, Option<&str>); 15] = [
        ("get", "", "secrets", Some(own)),
        ("list", "", "secrets", None),
        ("watch", "", "secrets", Some(tenant_namespace.as_str())),
        ("get", "", "nodes", None),
        ("create", "", "pods", Some(own)),
        ("create", "", "serviceaccounts/token", Some(own)),
        ("list", "", "namespaces", None),
        ("delete", "", "namespaces", None),
        ("get", "", "configmaps", Some("kube-system")),
        (
            "escalate",
            "rbac.authorization.k8s.io",
            "clusterroles",
            None,
        ),
        ("bind", "rbac.authorization.k8s.io", "clusterroles", None),
        (
            "create",
            "rbac.authorization.k8s.io",
            "rolebindings",
            Some(own),
        ),
        ("impersonate", "", "users", None),
        ("impersonate", "", "serviceaccounts", None),
        ("update", "ossature.dev", "tenants", None),
    ];
    for (verb, group, resource, namespace) in denied {
        let (resource, subresource) = match resource.split_once('/') {
            Some((r, s)) => (r, Some(s.to_string())),
            None => (resource, None),
        };
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.into()),
                    group: Some(group.into()),
                    resource: Some(resource.into()),
                    subresource,
                    namespace: namespace.map(String::from),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = reviews
            .create(&PostParams::default(), &review)
            .await
            .unwrap();
        assert!(
            !answer.status.unwrap().allowed,
            "{verb} {resource} in {namespace:?} is allowed"
        );
    }
    // What it needs, it holds.
    let missing = rbac::missing_rights(client, own).await.unwrap();
    assert!(missing.is_empty(), "{missing:?}");
}

/// The rules name no wildcard anywhere, no Secrets, nothing of RBAC or
/// impersonation, and ConfigMaps only in the control plane's namespace.
#[test]
fn the_rules_have_no_wildcard_and_no_secrets() {
    let grants = Grantee {
        service_account: "ossature-control-plane".into(),
        namespace: "ossature-system".into(),
        name: "ossature-control-plane".into(),
    }
    .grants();
    let yaml = grants.to_yaml().unwrap();
    assert!(!yaml.contains('*'), "a wildcard in:\n{yaml}");
    for (place, rules) in [
        ("cluster-wide", rbac::cluster_rules()),
        ("in its namespace", rbac::namespace_rules()),
    ] {
        assert!(!rules.is_empty());
        for rule in &rules {
            let resources = rule.resources.clone().unwrap_or_default();
            let groups = rule.api_groups.clone().unwrap_or_default();
            assert!(!resources.is_empty() && !groups.is_empty(), "{rule:?}");
            assert!(rule.non_resource_urls.is_none(), "{rule:?}");
            for text in resources.iter().chain(&groups).chain(&rule.verbs) {
                assert!(!text.contains('*'), "{place}: {rule:?}");
            }
            for resource in &resources {
                assert!(
                    !resource.starts_with("secrets"),
                    "{place}: Secrets in {rule:?}"
                );
                assert!(
                    !["nodes", "pods", "serviceaccounts", "users", "groups"]
                        .contains(&resource.as_str()),
                    "{place}: {rule:?}"
                );
            }
            assert!(
                !groups.iter().any(|g| g == "rbac.authorization.k8s.io"),
                "{place}: {rule:?}"
            );
            // Update only where an admission policy asks for it by name.
            let verbs: &[&str] = if resources == ["scopes/grants", "scopes/groupmappings"] {
                &["update"]
            } else {
                &["get", "list", "watch", "create", "patch", "delete"]
            };
            for verb in &rule.verbs {
                assert!(
                    verbs.contains(&verb.as_str()),
                    "{place}: verb {verb} in {rule:?}"
                );
            }
            if place == "cluster-wide" {
                assert!(!resources.iter().any(|r| r == "configmaps"), "{rule:?}");
            }
        }
    }
    // Bound to the one ServiceAccount, in its namespace only.
    assert_eq!(
        grants.role.metadata.namespace.as_deref(),
        Some("ossature-system")
    );
    for subjects in [
        &grants.cluster_role_binding.subjects,
        &grants.role_binding.subjects,
    ] {
        let subjects = subjects.as_ref().unwrap();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].kind, "ServiceAccount");
        assert_eq!(subjects[0].name, "ossature-control-plane");
    }
}
