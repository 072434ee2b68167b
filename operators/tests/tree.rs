//! The model's tree of a tenant against what the operator really made: a
//! tenant with two scopes, two environments, a topic and a service
//! identity becomes Ready; every object of its tree is then found in its
//! backend through the adapters' own reads, and the plan from nothing to
//! that tenant names exactly those objects; once the tenant is deleted,
//! none of them is left.

mod common;

use common::*;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, Secret, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::PostParams;
use kube::{Api, Client, Resource};
use ossature_crds::{Certificate, Environment, Scope, ServiceIdentity, Tenant, Topic, Workload};
use ossature_model::identity::GroupHome;
use ossature_model::names::TenantNames;
use ossature_model::plan::{Action, plan_of};
use ossature_model::topics::PulsarTopic;
use ossature_model::tree::{Backend, Key, Kind, Settings, TenantObjects, desired, tree};
use ossature_model::workloads::Autoscaler;
use ossature_operator::adapters::Calls;
use ossature_operator::adapters::edge::Edge;
use ossature_operator::adapters::edge::caddy::CaddyEdge;
use ossature_operator::adapters::keycloak::Keycloak;
use ossature_operator::adapters::openbao::{KUBERNETES_AUTH_PATH, OpenBao};
use ossature_operator::adapters::pulsar::{Pulsar, TokenFile};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn object<K: DeserializeOwned>(kind: &str, name: &str, spec: Value) -> K {
    serde_json::from_value(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": kind,
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

async fn create_ready<K>(api: &Api<K>, object: K)
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::Serialize + DeserializeOwned,
{
    let name = object.meta().name.clone().unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
    wait_object(api, &name, "Ready", object_ready).await;
}

/// Everything of the tenant the API holds, with status.
async fn tenant_objects(client: &Client, tenant: &Tenant) -> TenantObjects {
    let names = TenantNames::new(tenant.metadata.name.as_deref().unwrap());
    async fn list<K>(client: &Client, namespaces: &[&str]) -> Vec<K>
    where
        K: Resource<Scope = NamespaceResourceScope> + Clone + std::fmt::Debug + DeserializeOwned,
        K::DynamicType: Default,
    {
        ossature_e2e::list_in(client, namespaces).await.unwrap()
    }
    let prod = names.environment("prod").namespace;
    let staging = names.environment("staging").namespace;
    let all = [names.namespace.as_str(), prod.as_str(), staging.as_str()];
    TenantObjects {
        tenant: tenant.clone(),
        scopes: list(client, &all[..1]).await,
        environments: list(client, &all[..1]).await,
        certificates: list(client, &all).await,
        topics: list(client, &all).await,
        service_identities: list(client, &all).await,
        workloads: list::<Workload>(client, &all).await,
        role_rules: Default::default(),
    }
}

/// The objects as they were applied: no status, nothing the apiserver set.
fn as_applied(objects: &TenantObjects) -> TenantObjects {
    fn bare<K: Resource + serde::Serialize + DeserializeOwned>(object: &K) -> K {
        let mut value = serde_json::to_value(object).unwrap();
        value.as_object_mut().unwrap().remove("status");
        let meta = value["metadata"].as_object_mut().unwrap();
        meta.retain(|k, _| ["name", "namespace", "labels"].contains(&k.as_str()));
        serde_json::from_value(value).unwrap()
    }
    let derived = |c: &Certificate| c.metadata.owner_references.is_some();
    TenantObjects {
        tenant: bare(&objects.tenant),
        scopes: objects.scopes.iter().map(bare).collect(),
        environments: objects.environments.iter().map(bare).collect(),
        // Made by the operators, not applied.
        certificates: objects
            .certificates
            .iter()
            .filter(|c| !derived(c))
            .map(bare)
            .collect(),
        topics: objects.topics.iter().map(bare).collect(),
        service_identities: objects.service_identities.iter().map(bare).collect(),
        workloads: objects.workloads.iter().map(bare).collect(),
        role_rules: objects.role_rules.clone(),
    }
}

/// Each backend through the operator's own adapters.
struct Backends {
    client: Client,
    keycloak: Keycloak,
    pulsar: Pulsar,
    openbao: OpenBao,
    edge: CaddyEdge,
    names: TenantNames,
}

async fn get<K>(client: &Client, name: &str) -> bool
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + std::fmt::Debug + DeserializeOwned,
    K::DynamicType: Default,
{
    let (namespace, name) = name.split_once('/').unwrap();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.get_opt(name).await.unwrap().is_some()
}

/// `<container>/<rest>` with `container` known.
fn below<'a>(name: &'a str, container: &str) -> &'a str {
    name.strip_prefix(container)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or_else(|| panic!("{name} is not below {container}"))
}

fn pulsar_topic(name: &str) -> PulsarTopic {
    let (domain, path) = name.split_once("://").unwrap();
    let mut parts = path.splitn(3, '/');
    PulsarTopic {
        persistent: domain == "persistent",
        tenant: parts.next().unwrap().into(),
        namespace: parts.next().unwrap().into(),
        local: parts.next().unwrap().into(),
    }
}

impl Backends {
    /// Whether the object `key` names is in its backend.
    async fn exists(&self, key: &Key) -> bool {
        let name = key.name.as_str();
        let names = &self.names;
        let c = &self.client;
        match key.kind {
            Kind::Namespace => Api::<Namespace>::all(c.clone())
                .get_opt(name)
                .await
                .unwrap()
                .is_some_and(|n| n.metadata.deletion_timestamp.is_none()),
            Kind::ResourceQuota => get::<ResourceQuota>(c, name).await,
            Kind::LimitRange => get::<LimitRange>(c, name).await,
            Kind::NetworkPolicy => get::<NetworkPolicy>(c, name).await,
            Kind::Role => get::<Role>(c, name).await,
            Kind::RoleBinding => get::<RoleBinding>(c, name).await,
            Kind::ServiceAccount => get::<ServiceAccount>(c, name).await,
            Kind::Secret => get::<Secret>(c, name).await,
            Kind::Certificate => get::<Certificate>(c, name).await,
            Kind::Organization => {
                let (realm, alias) = name.split_once('/').unwrap();
                self.organization(realm, alias).await.is_some()
            }
            Kind::Client => {
                let (realm, client) = name.split_once('/').unwrap();
                self.keycloak.client(realm, client).await.unwrap().is_some()
            }
            Kind::Group => {
                let (realm, rest) = name.split_once('/').unwrap();
                let (alias, path) = rest.split_once('/').unwrap();
                let Some(id) = self.organization(realm, alias).await else {
                    return false;
                };
                let home = GroupHome::Organization { realm, id: &id };
                let path: Vec<String> = path.split('/').map(String::from).collect();
                self.keycloak.group(home, &path).await.unwrap().is_some()
            }
            Kind::PulsarTenant => self.pulsar.tenant(name).await.unwrap().is_some(),
            Kind::PulsarNamespace => {
                let (tenant, namespace) = name.split_once('/').unwrap();
                self.pulsar
                    .namespace_exists(tenant, namespace)
                    .await
                    .unwrap()
            }
            Kind::PulsarTopic => {
                let topic = pulsar_topic(name);
                self.pulsar.topic_shape(&topic).await.unwrap().is_some()
            }
            Kind::TopicGrant => {
                let (topic, role) = name.rsplit_once('/').unwrap();
                let topic = pulsar_topic(topic);
                if self.pulsar.topic_shape(&topic).await.unwrap().is_none() {
                    return false;
                }
                let granted = self.pulsar.topic_permissions(&topic).await.unwrap();
                granted.contains_key(role)
            }
            Kind::SubscriptionGrant => {
                let mut parts = name.splitn(3, '/');
                let (tenant, namespace, subscription) = (
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                );
                let allowed = self
                    .pulsar
                    .subscription_permissions(tenant, namespace)
                    .await
                    .unwrap();
                allowed.is_some_and(|a| a.get(subscription).is_some_and(|r| !r.is_empty()))
            }
            Kind::KvMount | Kind::TransitMount | Kind::PkiMount => self.mounted(name).await,
            Kind::TransitKey => {
                let key = below(name, &names.transit_mount);
                self.mounted(&names.transit_mount).await
                    && self
                        .openbao
                        .transit_key_exists(&names.transit_mount, key)
                        .await
                        .unwrap()
            }
            Kind::Policy => self.openbao.read_policy(name).await.unwrap().is_some(),
            Kind::KubernetesAuthRole => self
                .openbao
                .read_kubernetes_role(name)
                .await
                .unwrap()
                .is_some(),
            Kind::KvSecret => {
                let path = below(name, &names.kv_mount);
                self.mounted(&names.kv_mount).await
                    && self
                        .openbao
                        .get_secret(&names.kv_mount, path)
                        .await
                        .unwrap()
                        .is_some()
            }
            Kind::PkiIssuer => {
                let issuer = below(name, &names.pki_mount);
                self.mounted(&names.pki_mount).await
                    && self
                        .openbao
                        .ca_bundle(&names.pki_mount)
                        .await
                        .unwrap()
                        .iter()
                        .any(|i| i.name == issuer)
            }
            Kind::PkiRole => {
                let role = below(name, &names.pki_mount);
                self.mounted(&names.pki_mount).await
                    && self
                        .openbao
                        .read_role(&names.pki_mount, role)
                        .await
                        .unwrap()
                        .is_some()
            }
            Kind::Host => {
                let observed = self.edge.observe(&[]).await.unwrap();
                observed.extra.iter().any(|h| h == name)
            }
            other => panic!("the test cannot look for a {other:?} ({name})"),
        }
    }

    async fn mounted(&self, mount: &str) -> bool {
        self.openbao.mount_type(mount).await.unwrap().is_some()
    }

    /// The organization's id, if it exists (its realm, shared, always does).
    async fn organization(&self, realm: &str, alias: &str) -> Option<String> {
        let found = self.keycloak.organization(realm, alias).await.unwrap();
        found.and_then(|o| o.id)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tree_is_what_the_operator_makes_and_the_plan_names_it() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let _operator = start_operator(&env, &sel);

    let name = format!("tree{}", suffix());
    let names = TenantNames::new(&name);
    let tenants: Api<Tenant> = Api::all(client.clone());
    create_ready(&tenants, labelled(tenant(&name), &sel)).await;
    let scopes: Api<Scope> = Api::namespaced(client.clone(), &names.namespace);
    create_ready(
        &scopes,
        object("Scope", "global", json!({"displayName": "Global"})),
    )
    .await;
    create_ready(
        &scopes,
        object(
            "Scope",
            "eu",
            json!({"displayName": "EU", "parent": "global",
                   "grants": [{"role": "Editor", "groups": ["eu-team"]}]}),
        ),
    )
    .await;
    let environments: Api<Environment> = Api::namespaced(client.clone(), &names.namespace);
    for environment in ["prod", "staging"] {
        create_ready(
            &environments,
            object("Environment", environment, json!({"kind": "Production"})),
        )
        .await;
    }
    let prod = names.environment("prod").namespace;
    let topics: Api<Topic> = Api::namespaced(client.clone(), &prod);
    topics
        .create(
            &PostParams::default(),
            &object("Topic", "orders", json!({"partitions": 2})),
        )
        .await
        .unwrap();
    let services: Api<ServiceIdentity> = Api::namespaced(client.clone(), &prod);
    create_ready(
        &services,
        object(
            "ServiceIdentity",
            "billing",
            json!({"id": "01JQ3X5T0RYB9Q8K1W7ZC4M2NP", "owner": "global",
                   "grants": [{"topic": "orders", "actions": ["Consume"], "subscriptions": ["billing"]}]}),
        ),
    )
    .await;
    wait_object(&topics, "orders", "Ready", object_ready).await;
    let tenant = wait_object(&tenants, &name, "Ready", object_ready).await;

    let platform = ossature_model::Platform::default();
    let settings = Settings {
        platform: &platform,
        edge: true,
        autoscaler: Autoscaler::Hpa,
        pulsar_admin_url: &env["OSSATURE_PULSAR_ADMIN_URL"],
    };
    let objects = tenant_objects(&client, &tenant).await;
    let root = tree(&objects, &settings);
    assert_eq!(
        root.first_blocking().map(|n| n.key.to_string()),
        None,
        "every object of a Ready tenant is Ready: {}",
        serde_json::to_string_pretty(&root).unwrap()
    );
    let made = desired(&objects, &settings);
    let kinds: std::collections::BTreeSet<Kind> = made.iter().map(|o| o.key.kind).collect();
    for kind in [
        Kind::Namespace,
        Kind::NetworkPolicy,
        Kind::Role,
        Kind::Organization,
        Kind::Group,
        Kind::Client,
        Kind::PulsarTenant,
        Kind::PulsarNamespace,
        Kind::PulsarTopic,
        Kind::TopicGrant,
        Kind::SubscriptionGrant,
        Kind::KvMount,
        Kind::TransitKey,
        Kind::PkiIssuer,
        Kind::PkiRole,
        Kind::Policy,
        Kind::KubernetesAuthRole,
        Kind::KvSecret,
        Kind::Certificate,
        Kind::Host,
    ] {
        assert!(kinds.contains(&kind), "the tree has a {kind:?}");
    }

    // The plan from nothing names exactly what was made.
    let planned = plan_of(None, Some(&as_applied(&objects)), &settings);
    assert!(planned.iter().all(|c| c.action == Action::Create));
    let mut planned: Vec<&Key> = planned.iter().map(|c| &c.key).collect();
    let mut expected: Vec<&Key> = made.iter().map(|o| &o.key).collect();
    planned.sort();
    expected.sort();
    assert_eq!(planned, expected, "the plan names each object made, once");

    let calls = Calls::default();
    let backends = Backends {
        keycloak: Keycloak::new(
            &env["OSSATURE_KEYCLOAK_URL"],
            &env["OSSATURE_KEYCLOAK_ADMIN_USER"],
            &env["OSSATURE_KEYCLOAK_ADMIN_PASSWORD"],
            calls.clone(),
        )
        .unwrap(),
        pulsar: Pulsar::new(
            &env["OSSATURE_PULSAR_ADMIN_URL"],
            Some(TokenFile::read(&env["OSSATURE_PULSAR_TOKEN_FILE"]).unwrap()),
            calls.clone(),
        )
        .unwrap(),
        openbao: OpenBao::new(
            &env["OSSATURE_OPENBAO_ADDR"],
            &env["OSSATURE_OPENBAO_TOKEN"],
            calls.clone(),
        )
        .unwrap()
        .with_kubernetes_auth_path(
            env.get("OSSATURE_OPENBAO_KUBERNETES_AUTH_PATH")
                .map_or(KUBERNETES_AUTH_PATH, String::as_str),
        ),
        edge: CaddyEdge::new(
            &env["OSSATURE_EDGE_ADMIN_URL"],
            "edge",
            &ossature_operator::start::edge_instance(Some(&format!("{TEST_LABEL}={sel}"))),
            std::env::temp_dir(),
            calls,
        )
        .unwrap(),
        client: client.clone(),
        names: names.clone(),
    };
    for object in &made {
        assert!(
            backends.exists(&object.key).await,
            "{} is in its backend",
            object.key
        );
    }
    let in_backends = |key: &Key| key.backend != Backend::Kubernetes;
    assert!(made.iter().filter(|o| in_backends(&o.key)).count() >= 20);

    // A change, planned then made: a third environment, and the topic gone.
    let mut dev: Environment = object("Environment", "dev", json!({"kind": "Development"}));
    dev.metadata.namespace = Some(names.namespace.clone());
    let mut changed = objects.clone();
    changed.environments.push(dev.clone());
    changed.topics.clear();
    let changes = plan_of(Some(&objects), Some(&changed), &settings);
    let dev_namespace = names.environment("dev").namespace;
    let mut expected = vec![
        (Kind::Namespace, dev_namespace.clone()),
        (
            Kind::ResourceQuota,
            format!("{dev_namespace}/ossature-quota"),
        ),
        (Kind::LimitRange, format!("{dev_namespace}/ossature-limits")),
        (
            Kind::NetworkPolicy,
            format!("{dev_namespace}/ossature-default-deny"),
        ),
        (
            Kind::NetworkPolicy,
            format!("{dev_namespace}/ossature-same-tenant"),
        ),
        (Kind::PulsarNamespace, format!("{name}/dev")),
    ];
    let topic = format!("persistent://{name}/prod/orders");
    expected.extend([
        (Kind::TopicGrant, format!("{topic}/{name}.prod.billing")),
        (Kind::PulsarTopic, topic),
    ]);
    let planned: Vec<(Kind, String)> = changes
        .iter()
        .map(|c| (c.key.kind, c.key.name.clone()))
        .collect();
    assert_eq!(planned, expected);
    create_ready(&environments, dev).await;
    delete_and_wait(&topics, "orders", std::time::Duration::from_secs(60)).await;
    for change in &changes {
        let wanted = change.action != Action::Delete;
        assert_eq!(
            backends.exists(&change.key).await,
            wanted,
            "{:?} {}",
            change.action,
            change.key
        );
    }
    let made: Vec<_> = desired(&changed, &settings);

    // Deleted: nothing of the tree is left anywhere.
    delete_tenants(&tenants, &[&name]).await;
    let mut left = Vec::new();
    for object in &made {
        if backends.exists(&object.key).await {
            left.push(object.key.to_string());
        }
    }
    assert!(left.is_empty(), "left behind: {left:?}");
}
