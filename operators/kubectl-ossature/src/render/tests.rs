use super::*;

/// acme: its namespace with a quota, its organization, a Pulsar tenant not
/// reported yet, a scope whose RBAC waits for a role, and a certificate
/// that expires in 30 days; as the model's JSON has it.
fn acme() -> Node {
    let ok = |condition: &str| serde_json::json!({"condition": condition, "ready": true, "reason": "Provisioned"});
    serde_json::from_value(serde_json::json!({
        "backend": "Kubernetes", "kind": "Tenant", "name": "acme",
        "state": {"condition": "Ready", "ready": true, "reason": "Provisioned",
                  "message": "every backend is provisioned"},
        "children": [
            {"backend": "Kubernetes", "kind": "Namespace", "name": "tn-acme",
             "state": ok("NamespaceReady"), "children": [
                {"backend": "Kubernetes", "kind": "ResourceQuota", "name": "tn-acme/ossature-quota",
                 "state": ok("NamespaceReady")},
            ]},
            {"backend": "Keycloak", "kind": "Organization", "name": "ossature-business-eu/acme",
             "state": ok("RealmReady")},
            {"backend": "Pulsar", "kind": "PulsarTenant", "name": "acme",
             "state": {"condition": "MessagingReady", "ready": false, "reason": NOT_REPORTED,
                       "message": "its owner has not reported MessagingReady yet"}},
            {"backend": "Kubernetes", "kind": "Scope", "name": "tn-acme/eu",
             "state": {"condition": "Ready", "ready": false, "reason": "RoleNotFound",
                       "message": "grants of this scope give nothing"},
             "children": [
                {"backend": "Keycloak", "kind": "Group", "name": "ossature-business-eu/acme/eu",
                 "state": ok("GroupReady")},
            ]},
            {"backend": "Kubernetes", "kind": "Certificate", "name": "tn-acme/api",
             "state": {"condition": "Ready", "ready": true, "reason": "Issued"},
             "expires": "2030-01-31T00:00:00Z"},
        ],
    }))
    .expect("the model's JSON of a node")
}

fn now() -> Timestamp {
    "2030-01-01T00:00:00Z".parse().unwrap()
}

#[test]
fn the_tree_is_indented_with_state_columns() {
    let text = tree(&acme(), now());
    let plain = anstream::adapter::strip_str(&text).to_string();
    let expected = "\
NAME                                        BACKEND     READY    STATUS
Tenant/acme                                 Kubernetes  True     Provisioned
├─ Namespace/tn-acme                        Kubernetes  True     Provisioned
│  └─ ResourceQuota/tn-acme/ossature-quota  Kubernetes  True     Provisioned
├─ Organization/ossature-business-eu/acme   Keycloak    True     Provisioned
├─ PulsarTenant/acme                        Pulsar      Unknown  NotReported: its owner has not reported MessagingReady yet
├─ Scope/tn-acme/eu                         Kubernetes  False    RoleNotFound: grants of this scope give nothing
│  └─ Group/ossature-business-eu/acme/eu    Keycloak    True     Provisioned
└─ Certificate/tn-acme/api                  Kubernetes  True     Issued (expires 2030-01-31T00:00:00Z, in 30d)
";
    assert_eq!(plain, expected, "\n{plain}");
}

/// Colors are written, and the stream drops them off a terminal.
#[test]
fn colors_only_where_the_stream_keeps_them() {
    use std::io::Write;
    let text = tree(&acme(), now());
    assert!(text.contains("\u{1b}["), "styles are written");
    let mut never = anstream::AutoStream::new(Vec::new(), anstream::ColorChoice::Never);
    never.write_all(text.as_bytes()).unwrap();
    let written = String::from_utf8(never.into_inner()).unwrap();
    assert!(!written.contains('\u{1b}'), "{written}");
    assert!(written.contains("RoleNotFound"));
}

#[test]
fn ages_and_expiries_read_as_kubectls() {
    let now = now();
    let in_days = "2030-03-01T00:00:00Z";
    assert_eq!(expiry(in_days, now), "2030-03-01T00:00:00Z, in 59d");
    assert_eq!(
        expiry("2029-12-31T23:00:00Z", now),
        "2029-12-31T23:00:00Z, 60m ago"
    );
    assert_eq!(expiry("next week", now), "next week");
    let seconds = k8s_openapi::jiff::SignedDuration::from_secs;
    assert_eq!(span(seconds(45)), "45s");
    assert_eq!(span(seconds(600)), "10m");
    assert_eq!(span(seconds(5 * 3600)), "5h");
    assert_eq!(span(seconds(-3)), "0s");
}

/// A failure reported (the scope's) blocks before the Pulsar tenant whose
/// condition is not reported yet.
#[test]
fn the_diagnosis_names_the_blocking_object_its_condition_and_events() {
    let event: k8s_openapi::api::core::v1::Event = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "e", "namespace": "tn-acme", "uid": "e-1"},
        "involvedObject": {"kind": "Scope", "name": "eu", "namespace": "tn-acme"},
        "reason": "RoleNotFound", "message": "grants of this scope give nothing",
        "type": "Warning", "eventTime": "2029-12-31T23:55:00.000000Z",
    }))
    .unwrap();
    let diagnosis = crate::why::diagnose(&acme(), vec![event], 10);
    let text = anstream::adapter::strip_str(&diagnosis_text(&diagnosis)).to_string();
    let expected = "\
Tenant acme is Ready (Provisioned): every backend is provisioned
Blocking   Kubernetes Scope/tn-acme/eu
Condition  Ready=False on Scope/tn-acme/eu
Reason     RoleNotFound
Message    grants of this scope give nothing
Branch     Tenant/acme > Scope/tn-acme/eu

Events, oldest first:
LAST SEEN  TYPE     REASON        OBJECT    COUNT  MESSAGE
5m         Warning  RoleNotFound  Scope/eu  1      grants of this scope give nothing
";
    assert_eq!(text, expected, "\n{text}");
}

#[test]
fn a_tree_that_is_ready_has_nothing_to_diagnose() {
    let mut root = acme();
    root.children.truncate(2);
    let text = diagnosis_text(&crate::why::diagnose(&root, Vec::new(), 10));
    let text = anstream::adapter::strip_str(&text).to_string();
    assert!(
        text.ends_with("Nothing down its tree is blocked: every object is Ready.\n"),
        "{text}"
    );
    assert!(!text.contains("Events"), "{text}");
}

fn diagnosis_text(diagnosis: &crate::why::Diagnosis) -> String {
    super::diagnosis(diagnosis, now())
}
