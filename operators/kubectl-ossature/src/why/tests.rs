use k8s_openapi::api::core::v1::Event;
use ossature_crds::{Scope, Tenant};
use ossature_model::Platform;
use ossature_model::tree::{Settings, tree};
use ossature_model::workloads::Autoscaler;
use serde_json::{Value, json};

use super::*;

fn condition(type_: &str, ok: bool, reason: &str, message: &str) -> Value {
    json!({
        "type": type_, "status": if ok { "True" } else { "False" }, "reason": reason,
        "message": message, "lastTransitionTime": "2030-01-01T00:00:00Z",
    })
}

fn provisioned(types: &[&str]) -> Vec<Value> {
    types
        .iter()
        .map(|t| condition(t, true, "Provisioned", "provisioned"))
        .collect()
}

/// acme, Ready in every backend, with scope `global` Ready and scope `eu`
/// granting Editor and a role nobody defined: its RBAC is not Ready.
fn acme() -> TenantObjects {
    let tenant: Tenant = serde_json::from_value(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": "Tenant",
        "metadata": {"name": "acme", "uid": "uid-acme"},
        "spec": {"type": "Business", "displayName": "Acme", "residency": "eu"},
        "status": {"conditions": provisioned(&[
            "Ready", "NamespaceReady", "RealmReady", "MessagingReady", "SecretsReady",
            "CertificateAuthorityReady",
        ])},
    }))
    .unwrap();
    let scope = |name: &str, grants: Value, conditions: Vec<Value>| -> Scope {
        serde_json::from_value(json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Scope",
            "metadata": {"name": name, "namespace": "tn-acme", "uid": format!("uid-{name}")},
            "spec": {"displayName": name, "parent": (name != "global").then_some("global"), "grants": grants},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    };
    let role_not_found = "grants of this scope give nothing: role auditor is unknown";
    let mut objects = TenantObjects::new(tenant);
    objects.scopes = vec![
        scope(
            "global",
            json!([]),
            provisioned(&["Ready", "GroupReady", "RbacReady"]),
        ),
        scope(
            "eu",
            json!([
                {"role": "Editor", "groups": ["eu-team"]},
                {"role": "auditor", "groups": ["auditors"]},
            ]),
            vec![
                condition("Ready", false, "RoleNotFound", role_not_found),
                condition(
                    "GroupReady",
                    true,
                    "Provisioned",
                    "group /global/eu is provisioned",
                ),
                condition("RbacReady", false, "RoleNotFound", role_not_found),
            ],
        ),
    ];
    objects
}

fn root(objects: &TenantObjects) -> Node {
    let platform = Platform::default();
    let settings = Settings {
        platform: &platform,
        edge: false,
        autoscaler: Autoscaler::Hpa,
        pulsar_admin_url: "",
    };
    tree(objects, &settings)
}

fn names(branch: &[&Node]) -> Vec<String> {
    branch
        .iter()
        .map(|n| format!("{:?}/{}", n.key.kind, n.key.name))
        .collect()
}

#[test]
fn the_deepest_object_not_ready_on_the_first_such_branch_blocks() {
    let objects = acme();
    let root = root(&objects);
    let branch = blocking_branch(&root).expect("something blocks");
    assert_eq!(
        names(&branch),
        [
            "Tenant/acme",
            "Scope/tn-acme/global",
            "Scope/tn-acme/eu",
            "Role/tn-acme/ossature-scope-eu-editor",
        ]
    );
    let blocking = branch.last().unwrap();
    assert_eq!(blocking.state.condition, "RbacReady");
    assert_eq!(blocking.state.reason, "RoleNotFound");
    assert_eq!(
        reporter(&branch).map(|n| n.key.name.as_str()),
        Some("tn-acme/eu")
    );
    let diagnosis = diagnose(&root, Vec::new(), 10);
    assert!(diagnosis.ready, "the tenant itself is Ready");
    let blocking = diagnosis.blocking.unwrap();
    assert_eq!(blocking.key.kind, Kind::Role);
    assert_eq!(blocking.reported_by.kind, Kind::Scope);
    assert!(blocking.state.message.contains("auditor"));
}

/// The Events asked for: the blocking object's (a Kubernetes one), its
/// reporter's and the tenant's, with the custom resources' uids.
#[test]
fn events_are_asked_about_the_object_its_reporter_and_the_tenant() {
    let objects = acme();
    let root = root(&objects);
    let branch = blocking_branch(&root).unwrap();
    let subject = |kind: &str, namespace: Option<&str>, name: &str, uid: Option<&str>| Subject {
        kind: kind.into(),
        namespace: namespace.map(String::from),
        name: name.into(),
        uid: uid.map(String::from),
    };
    assert_eq!(
        subjects(&branch, &objects),
        [
            subject("Role", Some("tn-acme"), "ossature-scope-eu-editor", None),
            subject("Scope", Some("tn-acme"), "eu", Some("uid-eu")),
            subject("Tenant", None, "acme", Some("uid-acme")),
        ]
    );
}

/// A scope whose every grant names an unknown role has no RBAC objects:
/// the scope itself blocks, and it is its own reporter.
#[test]
fn a_custom_resource_without_blocked_objects_blocks_itself() {
    let mut objects = acme();
    let eu = objects
        .scopes
        .iter_mut()
        .find(|s| s.metadata.name.as_deref() == Some("eu"));
    eu.unwrap().spec.grants.retain(|g| g.role.0 == "auditor");
    let root = root(&objects);
    let branch = blocking_branch(&root).unwrap();
    assert_eq!(
        names(&branch),
        ["Tenant/acme", "Scope/tn-acme/global", "Scope/tn-acme/eu"]
    );
    assert_eq!(reporter(&branch).unwrap().key, branch[2].key);
    let subjects = subjects(&branch, &objects);
    assert_eq!(subjects.len(), 2, "{subjects:?}");
}

#[test]
fn nothing_blocks_a_tree_that_is_ready() {
    let mut objects = acme();
    objects.scopes.truncate(1);
    let root = root(&objects);
    assert!(blocking_branch(&root).is_none());
    let diagnosis = diagnose(&root, Vec::new(), 10);
    assert_eq!(diagnosis.blocking, None);
    assert!(diagnosis.ready);
}

fn event(uid: &str, reason: &str, at: &str, extra: Value) -> Event {
    let mut body = json!({
        "metadata": {"name": format!("e-{uid}"), "namespace": "tn-acme", "uid": uid},
        "involvedObject": {"kind": "Scope", "name": "eu", "namespace": "tn-acme"},
        "reason": reason, "message": format!("{reason} happened"), "type": "Warning",
        "eventTime": at, "reportingComponent": "ossature-operator",
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    serde_json::from_value(body).unwrap()
}

/// Oldest first by when each was last seen (a series' last observation
/// wins over when it began), each once, the latest ones kept.
#[test]
fn events_are_sorted_by_time_once_each_and_the_latest_kept() {
    let events = vec![
        event(
            "c",
            "RoleNotFound",
            "2030-01-01T00:00:05.000000Z",
            json!({
                "series": {"count": 4, "lastObservedTime": "2030-01-01T00:09:00.000000Z"},
            }),
        ),
        event(
            "a",
            "Provisioned",
            "2030-01-01T00:00:01.000000Z",
            json!({"type": "Normal"}),
        ),
        event(
            "b",
            "DriftCorrected",
            "2030-01-01T00:03:00.000000Z",
            json!({}),
        ),
        event(
            "a",
            "Provisioned",
            "2030-01-01T00:00:01.000000Z",
            json!({"type": "Normal"}),
        ),
    ];
    let views = event_views(events.clone(), 10);
    let reasons: Vec<&str> = views.iter().map(|v| v.reason.as_str()).collect();
    assert_eq!(reasons, ["Provisioned", "DriftCorrected", "RoleNotFound"]);
    assert_eq!(views[2].count, 4);
    assert_eq!(views[2].time.as_deref(), Some("2030-01-01T00:09:00Z"));
    assert_eq!(views[2].object, "Scope/eu");
    assert_eq!(views[2].source, "ossature-operator");
    let latest = event_views(events, 2);
    let reasons: Vec<&str> = latest.iter().map(|v| v.reason.as_str()).collect();
    assert_eq!(reasons, ["DriftCorrected", "RoleNotFound"]);
}

#[test]
fn the_diagnosis_serializes_for_scripts() {
    let objects = acme();
    let diagnosis = diagnose(&root(&objects), Vec::new(), 10);
    let value = serde_json::to_value(&diagnosis).unwrap();
    assert_eq!(value["tenant"], "acme");
    assert_eq!(value["blocking"]["kind"], "Role");
    assert_eq!(value["blocking"]["backend"], "Kubernetes");
    assert_eq!(value["blocking"]["state"]["reason"], "RoleNotFound");
    assert_eq!(value["blocking"]["reportedBy"]["name"], "tn-acme/eu");
    assert_eq!(value["blocking"]["branch"].as_array().unwrap().len(), 4);
}

/// A tenant stalled on its spec blocks itself: what it owns has not been
/// reported, which explains nothing.
#[test]
fn a_stalled_tenant_blocks_itself() {
    let mut objects = acme();
    let stalled = "residency mars names no Pulsar cluster";
    objects.tenant.status = serde_json::from_value(json!({"conditions": [
        condition("Ready", false, "InvalidSpec", stalled),
        condition("Stalled", true, "InvalidSpec", stalled),
    ]}))
    .unwrap();
    objects.scopes.clear();
    let root = root(&objects);
    let branch = blocking_branch(&root).unwrap();
    assert_eq!(names(&branch), ["Tenant/acme"]);
    let subjects = subjects(&branch, &objects);
    assert_eq!(subjects.len(), 1, "the tenant, once: {subjects:?}");
    let diagnosis = diagnose(&root, Vec::new(), 10);
    let blocking = diagnosis.blocking.unwrap();
    assert_eq!(blocking.state.reason, "InvalidSpec");
    assert_eq!(blocking.reported_by, blocking.key);
}
