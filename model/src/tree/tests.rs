use serde_json::{Value, json};

use super::*;
use crate::plan::{Action, Change, changed_fields, plan, plan_of};

fn platform() -> Platform {
    Platform::default()
}

fn settings(platform: &Platform, edge: bool) -> Settings<'_> {
    Settings {
        platform,
        edge,
        autoscaler: Autoscaler::Hpa,
        pulsar_admin_url: "http://pulsar.test:8080",
    }
}

fn from<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

fn tenant(spec: Value, status: Value) -> Tenant {
    let mut body = json!({"type": "Business", "displayName": "Acme", "residency": "eu"});
    body.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    from(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": "Tenant",
        "metadata": {"name": "acme", "uid": "t-1"},
        "spec": body, "status": status,
    }))
}

fn scope(name: &str, parent: Option<&str>, grants: Value) -> Scope {
    from(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": "Scope",
        "metadata": {"name": name, "namespace": "tn-acme", "uid": format!("s-{name}")},
        "spec": {"displayName": name, "parent": parent, "grants": grants},
    }))
}

fn environment(name: &str) -> Environment {
    from(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": "Environment",
        "metadata": {"name": name, "namespace": "tn-acme"},
        "spec": {"kind": "Production"},
    }))
}

fn topic(name: &str) -> Topic {
    from(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": "Topic",
        "metadata": {"name": name, "namespace": "tn-acme--prod"},
        "spec": {"partitions": 2},
    }))
}

fn service(name: &str, grants: Value) -> ServiceIdentity {
    from(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": "ServiceIdentity",
        "metadata": {"name": name, "namespace": "tn-acme--prod", "uid": format!("u-{name}")},
        "spec": {"id": "01JQ3X5T0RYB9Q8K1W7ZC4M2NP", "owner": "global", "grants": grants},
    }))
}

/// acme with two branches of scopes (global > eu > france, global > us)
/// and two environments.
fn acme() -> TenantObjects {
    let mut objects = TenantObjects::new(tenant(json!({}), Value::Null));
    objects.scopes = vec![
        scope("us", Some("global"), json!([])),
        scope("global", None, json!([])),
        scope(
            "eu",
            Some("global"),
            json!([{"role": "Editor", "groups": ["eu-team"]}]),
        ),
        scope("france", Some("eu"), json!([])),
    ];
    objects.environments = vec![environment("staging"), environment("prod")];
    objects
}

fn keys(objects: &[Object]) -> Vec<String> {
    objects.iter().map(|o| o.key.to_string()).collect()
}

fn namespace_keys(ns: &str) -> Vec<String> {
    vec![
        format!("Kubernetes Namespace {ns}"),
        format!("Kubernetes ResourceQuota {ns}/ossature-quota"),
        format!("Kubernetes LimitRange {ns}/ossature-limits"),
        format!("Kubernetes NetworkPolicy {ns}/ossature-default-deny"),
        format!("Kubernetes NetworkPolicy {ns}/ossature-same-tenant"),
    ]
}

#[test]
fn a_tenant_with_two_scope_branches_and_two_environments_owns_exactly_these() {
    let platform = platform();
    let found = keys(&desired(&acme(), &settings(&platform, false)));
    let mut expected = namespace_keys("tn-acme");
    expected.extend(
        [
            "Keycloak Organization ossature-business-eu/acme",
            "Keycloak Client ossature-business-eu/acme",
            "Pulsar PulsarTenant acme",
            "OpenBao KvMount tenants/acme/kv",
            "OpenBao TransitMount tenants/acme/transit",
            "OpenBao TransitKey tenants/acme/transit/acme",
            "OpenBao Policy tenant-acme",
            "OpenBao PkiMount tenants/acme/pki",
            "OpenBao PkiIssuer tenants/acme/pki/gen-1",
            "OpenBao PkiRole tenants/acme/pki/leaf",
            // Scopes by name: eu, france, global, us.
            "Keycloak Group ossature-business-eu/acme/global/eu",
            "Kubernetes Role tn-acme/ossature-scope-eu-editor",
            "Kubernetes RoleBinding tn-acme/ossature-scope-eu-editor",
            "Keycloak Group ossature-business-eu/acme/global/eu/france",
            "Keycloak Group ossature-business-eu/acme/global",
            "Keycloak Group ossature-business-eu/acme/global/us",
        ]
        .map(String::from),
    );
    expected.extend(namespace_keys("tn-acme--prod"));
    expected.push("Pulsar PulsarNamespace acme/prod".into());
    expected.extend(namespace_keys("tn-acme--staging"));
    expected.push("Pulsar PulsarNamespace acme/staging".into());
    assert_eq!(found, expected);
}

#[test]
fn the_tree_nests_scopes_as_their_tree_and_objects_under_their_owner() {
    let platform = platform();
    let root = tree(&acme(), &settings(&platform, false));
    assert_eq!(
        root.key,
        Key::new(Backend::Kubernetes, Kind::Tenant, "acme")
    );
    let names =
        |node: &Node| -> Vec<String> { node.children.iter().map(|c| c.key.name.clone()).collect() };
    let child = |node: &Node, name: &str| -> Node {
        node.children
            .iter()
            .find(|c| c.key.name == name)
            .unwrap_or_else(|| panic!("{name} under {}", node.key))
            .clone()
    };
    let global = child(&root, "tn-acme/global");
    assert_eq!(
        names(&global),
        [
            "ossature-business-eu/acme/global",
            "tn-acme/eu",
            "tn-acme/us"
        ]
    );
    let eu = child(&global, "tn-acme/eu");
    assert!(names(&eu).contains(&"tn-acme/france".to_string()));
    assert!(names(&eu).contains(&"tn-acme/ossature-scope-eu-editor".to_string()));
    let namespace = child(&root, "tn-acme");
    assert_eq!(namespace.children.len(), 4, "quota, limits, two policies");
    let prod = child(&root, "tn-acme/prod");
    assert_eq!(names(&prod), ["tn-acme--prod", "acme/prod"]);
    // Every desired object is in the tree once, with the owners themselves.
    let all = root.walk();
    assert_eq!(
        all.len(),
        desired(&acme(), &settings(&platform, false)).len() + 7
    );
    // Nothing is reported yet: the first blocking node is a leaf's.
    let blocking = root.first_blocking().unwrap();
    assert_eq!(blocking.state.reason, NOT_REPORTED);
    assert!(blocking.children.is_empty());
}

fn condition(type_: &str, ok: bool, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": if ok {"True"} else {"False"}, "reason": reason,
           "message": message, "lastTransitionTime": "2026-01-01T00:00:00Z"})
}

#[test]
fn states_and_ids_come_from_status() {
    let platform = platform();
    let mut objects = acme();
    objects.tenant = tenant(
        json!({}),
        json!({
            "isolation": "Organization", "realm": "ossature-business-eu", "organizationId": "org-7",
            "conditions": [
                condition("Ready", false, "RealmNotReady", "Keycloak could not be reached"),
                condition("NamespaceReady", true, "Provisioned", ""),
                condition("RealmReady", false, "BackendUnreachable", "Keycloak could not be reached"),
            ],
        }),
    );
    let root = tree(&objects, &settings(&platform, false));
    let find = |kind: Kind| {
        root.walk()
            .into_iter()
            .find(|n| n.key.kind == kind)
            .unwrap()
            .clone()
    };
    let organization = find(Kind::Organization);
    assert_eq!(organization.id.as_deref(), Some("org-7"));
    assert_eq!(
        organization.state,
        State {
            condition: "RealmReady".into(),
            ready: false,
            reason: "BackendUnreachable".into(),
            message: "Keycloak could not be reached".into(),
        }
    );
    assert!(find(Kind::Namespace).state.ready);
    assert_eq!(find(Kind::PulsarTenant).state.reason, NOT_REPORTED);
    assert_eq!(root.state.reason, "RealmNotReady");
    // Serialised for the API and the plugin: camelCase, flat keys.
    let json = serde_json::to_value(&organization).unwrap();
    assert_eq!(json["backend"], "Keycloak");
    assert_eq!(json["kind"], "Organization");
    assert_eq!(json["name"], "ossature-business-eu/acme");
    assert_eq!(json["state"]["condition"], "RealmReady");
    assert_eq!(json["children"][0]["kind"], "Client");
    let back: Node = serde_json::from_value(serde_json::to_value(&root).unwrap()).unwrap();
    assert_eq!(back, root);
}

/// A failure reported explains more than conditions not reported yet: a
/// Tenant stalled on its spec blocks, not the first of its objects the
/// operator has not reported on; below it, the deepest reported failure.
#[test]
fn a_reported_failure_blocks_before_what_is_not_reported() {
    let platform = platform();
    let mut objects = acme();
    let stalled = json!({"conditions": [
        condition("Ready", false, "InvalidSpec", "residency mars names no Pulsar cluster"),
        condition("Stalled", true, "InvalidSpec", "residency mars names no Pulsar cluster"),
    ]});
    objects.tenant = tenant(json!({}), stalled);
    let root = tree(&objects, &settings(&platform, false));
    assert_eq!(root.first_blocking().map(|n| &n.key), Some(&root.key));
    objects.tenant = tenant(
        json!({}),
        json!({"conditions": [
            condition("Ready", false, "MessagingNotReady", "Pulsar could not be reached"),
            condition("MessagingReady", false, "BackendUnreachable", "Pulsar could not be reached"),
        ]}),
    );
    let root = tree(&objects, &settings(&platform, false));
    let blocking = root.first_blocking().unwrap();
    assert_eq!(
        blocking.key.kind,
        Kind::PulsarTenant,
        "not the namespace before it"
    );
    assert_eq!(blocking.state.reason, "BackendUnreachable");
}

#[test]
fn adding_an_environment_plans_exactly_its_objects() {
    let platform = platform();
    let settings = settings(&platform, true);
    let current = acme();
    let mut new = acme();
    new.environments.push(environment("dev"));
    let changes = plan_of(Some(&current), Some(&new), &settings);
    let mut expected: Vec<Change> = namespace_keys("tn-acme--dev")
        .iter()
        .map(|k| k.splitn(3, ' ').map(String::from).collect::<Vec<_>>())
        .map(|parts| Change {
            key: Key::new(Backend::Kubernetes, from(json!(parts[1])), parts[2].clone()),
            action: Action::Create,
        })
        .collect();
    expected.push(Change {
        key: Key::new(Backend::Pulsar, Kind::PulsarNamespace, "acme/dev"),
        action: Action::Create,
    });
    assert_eq!(changes, expected);
    // The same objects again: nothing to do.
    assert!(plan_of(Some(&new), Some(&new), &settings).is_empty());
}

fn with_messaging() -> TenantObjects {
    let mut objects = acme();
    objects.topics = vec![topic("orders")];
    objects.service_identities = vec![
        service(
            "billing",
            json!([{"topic": "orders", "actions": ["Consume"], "subscriptions": ["billing"]}]),
        ),
        service("shop", json!([{"topic": "orders", "actions": ["Produce"]}])),
    ];
    objects
}

#[test]
fn removing_a_topic_plans_its_grants_removal_then_its_deletion() {
    let platform = platform();
    let settings = settings(&platform, false);
    let current = with_messaging();
    let mut new = with_messaging();
    new.topics.clear();
    let changes = plan_of(Some(&current), Some(&new), &settings);
    let topic = "persistent://acme/prod/orders";
    assert_eq!(
        changes,
        vec![
            Change {
                key: Key::new(
                    Backend::Pulsar,
                    Kind::TopicGrant,
                    format!("{topic}/acme.prod.shop")
                ),
                action: Action::Delete,
            },
            Change {
                key: Key::new(
                    Backend::Pulsar,
                    Kind::TopicGrant,
                    format!("{topic}/acme.prod.billing")
                ),
                action: Action::Delete,
            },
            Change {
                key: Key::new(Backend::Pulsar, Kind::PulsarTopic, topic),
                action: Action::Delete,
            },
        ]
    );
}

#[test]
fn a_service_identity_owns_its_objects_in_every_backend() {
    let platform = platform();
    let found = keys(&desired(&with_messaging(), &settings(&platform, false)));
    let billing: Vec<&String> = found.iter().filter(|k| k.contains("billing")).collect();
    assert_eq!(
        billing,
        [
            "Pulsar TopicGrant persistent://acme/prod/orders/acme.prod.billing",
            "Kubernetes ServiceAccount tn-acme--prod/billing",
            "Kubernetes Certificate tn-acme--prod/billing-identity",
            "OpenBao KvSecret tenants/acme/kv/certificates/tn-acme--prod/billing-identity",
            "Kubernetes Secret tn-acme--prod/billing-tls",
            "Keycloak Client ossature-business-eu/acme.prod.billing",
            "OpenBao Policy tenant-acme.prod.billing",
            "OpenBao KubernetesAuthRole tenant-acme.prod.billing",
            "OpenBao KvSecret tenants/acme/kv/prod/services/billing/credentials",
            "Kubernetes Secret tn-acme--prod/billing-secrets",
            "Pulsar SubscriptionGrant acme/prod/billing",
        ]
    );
    assert!(
        found.contains(&"OpenBao PkiRole tenants/acme/pki/service".to_string()),
        "a certificate naming a URI is signed with the service role"
    );
}

#[test]
fn moving_from_the_shared_realm_to_a_realm_of_its_own_plans_the_move() {
    let platform = platform();
    let settings = settings(&platform, false);
    let status = json!({"isolation": "Organization", "realm": "ossature-business-eu"});
    let mut current = acme();
    current.tenant = tenant(json!({}), status.clone());
    current.scopes.truncate(0);
    let mut new = acme();
    new.tenant = tenant(json!({"identity": {"isolation": "Realm"}}), status);
    new.scopes.truncate(0);
    let changes = plan_of(Some(&current), Some(&new), &settings);
    let change = |kind, name: &str, action| Change {
        key: Key::new(Backend::Keycloak, kind, name),
        action,
    };
    assert_eq!(
        changes,
        vec![
            change(Kind::Realm, "acme", Action::Create),
            change(Kind::ClientScope, "acme/ossature-scopes", Action::Create),
            change(Kind::Client, "acme/acme", Action::Create),
            change(Kind::Client, "ossature-business-eu/acme", Action::Delete),
            change(
                Kind::Organization,
                "ossature-business-eu/acme",
                Action::Delete
            ),
        ]
    );
}

#[test]
fn a_changed_setting_plans_an_update_of_that_field() {
    let platform = platform();
    let settings = settings(&platform, false);
    let current = acme();
    let mut new = acme();
    new.tenant = tenant(json!({"quotas": {"pods": 20}}), Value::Null);
    let changes = plan_of(Some(&current), Some(&new), &settings);
    assert_eq!(
        changes,
        vec![Change {
            key: Key::new(
                Backend::Kubernetes,
                Kind::ResourceQuota,
                "tn-acme/ossature-quota"
            ),
            action: Action::Update {
                fields: vec!["spec.hard.pods".into()]
            },
        }]
    );
    assert_eq!(
        changed_fields(
            &json!({"a": {"b": 1, "c": [1]}}),
            &json!({"a": {"c": [2]}, "d": 0})
        ),
        ["a.b", "a.c", "d"]
    );
}

#[test]
fn onboarding_plans_every_object_and_offboarding_removes_them_in_reverse() {
    let platform = platform();
    let settings = settings(&platform, true);
    let objects = with_messaging();
    let all = desired(&objects, &settings);
    let onboarding = plan_of(None, Some(&objects), &settings);
    assert_eq!(onboarding.len(), all.len());
    assert!(onboarding.iter().all(|c| c.action == Action::Create));
    let offboarding = plan_of(Some(&objects), None, &settings);
    let order: Vec<&Key> = offboarding.iter().map(|c| &c.key).collect();
    let reversed: Vec<&Key> = all.iter().rev().map(|o| &o.key).collect();
    assert_eq!(order, reversed);
    // With an edge: the host's certificate, its record and the route.
    for key in [
        "Kubernetes Certificate tn-acme/ossature-host",
        "OpenBao KvSecret tenants/acme/kv/certificates/tn-acme/ossature-host",
        "Edge Host acme.ossature.test",
    ] {
        assert!(keys(&all).contains(&key.to_string()), "{key}");
    }
    assert_eq!(plan(&all, &all), Vec::new());
}

#[test]
fn objects_outside_the_tenants_namespaces_are_not_its_own() {
    let platform = platform();
    let mut objects = acme();
    let mut foreign = environment("prod");
    foreign.metadata.namespace = Some("tn-acme-eu".into());
    objects.environments = vec![foreign];
    let mut stray = topic("orders");
    stray.metadata.namespace = Some("tn-acme-eu--prod".into());
    objects.topics = vec![stray];
    let found = keys(&desired(&objects, &settings(&platform, false)));
    assert!(found.iter().all(|k| !k.contains("acme-eu")), "{found:?}");
}

#[test]
fn a_scope_out_of_the_tree_has_no_objects_and_sits_under_the_tenant() {
    let platform = platform();
    let mut objects = acme();
    objects.scopes = vec![
        scope("a", Some("b"), json!([])),
        scope("b", Some("a"), json!([])),
    ];
    let root = tree(&objects, &settings(&platform, false));
    let scopes: Vec<&Node> = root
        .children
        .iter()
        .filter(|c| c.key.kind == Kind::Scope)
        .collect();
    assert_eq!(scopes.len(), 2, "a cycle of parents hangs under the tenant");
    assert!(scopes.iter().all(|s| s.children.is_empty()));
}

fn workload(name: &str, spec: Value) -> Workload {
    from(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": "Workload",
        "metadata": {"name": name, "namespace": "tn-acme--prod", "uid": format!("w-{name}")},
        "spec": spec,
    }))
}

#[test]
fn a_workload_owns_its_kubernetes_objects_and_its_subscription() {
    let platform = platform();
    let mut objects = with_messaging();
    objects.workloads = vec![
        workload(
            "billing-worker",
            json!({"template": "EventProcessor", "serviceIdentity": "billing", "image": "billing:1",
                   "subscription": {"topic": "orders", "name": "billing"},
                   "scaling": {"minReplicas": 2, "maxReplicas": 4}}),
        ),
        // Its ServiceIdentity does not exist: it waits, and makes nothing.
        workload(
            "orphan",
            json!({"template": "QueryEndpoint", "serviceIdentity": "nobody", "image": "x:1"}),
        ),
    ];
    let found = keys(&desired(&objects, &settings(&platform, false)));
    let worker: Vec<&String> = found
        .iter()
        .filter(|k| k.contains("billing-worker") || k.contains("Subscription "))
        .collect();
    assert_eq!(
        worker,
        [
            "Kubernetes Deployment tn-acme--prod/billing-worker",
            "Kubernetes Service tn-acme--prod/billing-worker",
            "Kubernetes NetworkPolicy tn-acme--prod/billing-worker",
            "Kubernetes PodDisruptionBudget tn-acme--prod/billing-worker",
            "Kubernetes HorizontalPodAutoscaler tn-acme--prod/billing-worker",
            "Pulsar Subscription persistent://acme/prod/orders/billing",
        ]
    );
    assert!(found.iter().all(|k| !k.contains("orphan")));
    let root = tree(&objects, &settings(&platform, false));
    let prod = root
        .children
        .iter()
        .find(|c| c.key.name == "tn-acme/prod")
        .unwrap();
    let kinds: Vec<Kind> = prod.children.iter().map(|c| c.key.kind).collect();
    assert!(kinds.contains(&Kind::Topic) && kinds.contains(&Kind::Workload));
}

#[test]
fn a_realm_of_its_own_with_identity_providers_and_a_certificate_of_its_own() {
    let platform = platform();
    let mut objects = acme();
    objects.tenant = tenant(
        json!({"identity": {"isolation": "Realm", "identityProviders": [{
            "alias": "corp", "saml": {"metadataUrl": "https://idp.test/metadata"},
            "scopes": [{"claim": "groups", "value": "eu", "scope": "eu"}],
        }]}, "domains": ["shop.acme.test"]}),
        Value::Null,
    );
    objects.certificates = vec![from(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": "Certificate",
        "metadata": {"name": "api", "namespace": "tn-acme--prod"},
        "spec": {"dnsNames": ["api.acme.ossature.test"], "secretName": "api-tls",
                 "issuer": {"tenantCA": {}}},
        "status": {"notAfter": "2030-01-01T00:00:00Z", "serialNumber": "0a1b"},
    }))];
    let found = keys(&desired(&objects, &settings(&platform, true)));
    for key in [
        "Keycloak Realm acme",
        "Keycloak ClientScope acme/ossature-scopes",
        "Keycloak Client acme/acme",
        "Keycloak IdentityProvider acme/corp",
        "Keycloak Group acme/global/eu",
        "OpenBao KvSecret tenants/acme/kv/certificates/tn-acme--prod/api",
        "Kubernetes Secret tn-acme--prod/api-tls",
        "Edge Domain shop.acme.test",
    ] {
        assert!(found.contains(&key.to_string()), "{key} in {found:?}");
    }
    assert!(!found.iter().any(|k| k.contains("Organization")));
    // A service in a realm of its own: the realm's rotation policy is the tenant's.
    objects.service_identities = vec![service("billing", json!([]))];
    let found = keys(&desired(&objects, &settings(&platform, true)));
    assert!(found.contains(&"Keycloak ClientPolicy acme/ossature-services".to_string()));
    assert!(found.contains(&"Keycloak ClientProfile acme/ossature-secret-rotation".to_string()));
    let shared = keys(&desired(&with_messaging(), &settings(&platform, true)));
    assert!(
        !shared.iter().any(|k| k.contains("ClientPolicy")),
        "the shared realm's is not"
    );
    let root = tree(&objects, &settings(&platform, true));
    let certificate = root
        .walk()
        .into_iter()
        .find(|n| n.key.name == "tn-acme--prod/api")
        .unwrap()
        .clone();
    assert_eq!(certificate.children.len(), 2, "its record and its Secret");
    assert_eq!(certificate.expires.as_deref(), Some("2030-01-01T00:00:00Z"));
    assert_eq!(certificate.id.as_deref(), Some("0a1b"));
}

/// Gathering keeps what is in the tenant's namespaces (its own and its
/// environments'), sorted, and leaves another tenant's, even one whose
/// name starts the same.
#[test]
fn gathering_keeps_the_tenants_own_objects_sorted() {
    let mut other = topic("orders");
    other.metadata.namespace = Some("tn-acme-eu--prod".into());
    let mut staging = topic("audit");
    staging.metadata.namespace = Some("tn-acme--staging".into());
    let found = Found {
        scopes: [scope("us", None, json!([])), scope("eu", None, json!([]))]
            .map(Arc::new)
            .into(),
        topics: [topic("payments"), other, staging, topic("orders")]
            .map(Arc::new)
            .into(),
        ..Found::default()
    };
    let rules = BTreeMap::from([("reader".to_string(), Vec::new())]);
    let objects = TenantObjects::gather(tenant(json!({}), Value::Null), found, rules);
    let names = |meta: Vec<&ObjectMeta>| -> Vec<String> {
        meta.iter()
            .map(|m| {
                format!(
                    "{}/{}",
                    m.namespace.as_deref().unwrap(),
                    m.name.as_deref().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(
        names(objects.scopes.iter().map(|s| &s.metadata).collect()),
        ["tn-acme/eu", "tn-acme/us"]
    );
    assert_eq!(
        names(objects.topics.iter().map(|t| &t.metadata).collect()),
        [
            "tn-acme--prod/orders",
            "tn-acme--prod/payments",
            "tn-acme--staging/audit"
        ]
    );
    assert!(objects.role_rules.contains_key("reader"));
}
