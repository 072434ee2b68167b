//! Topics through the operator binary against the real broker, read back
//! through Pulsar's own admin API: the topic with its schema and policies,
//! compatible and incompatible schema changes, a policy leaving the spec,
//! partitions growing, a topic deleted by hand coming back, deletion held
//! by a backlog until forced, and an Environment's deletion taking its
//! topics. Also what admission refuses of a Topic.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use ossature_crds::{Environment, Topic};
use serde_json::{Value, json};

const V1: &str = r#"{"type": "record", "name": "Order", "namespace": "acme",
  "fields": [{"name": "id", "type": "string"}]}"#;
/// V1 with a field that has a default: FULL-compatible.
const V2: &str = r#"{"type": "record", "name": "Order", "namespace": "acme",
  "fields": [{"name": "id", "type": "string"}, {"name": "amount", "type": "long", "default": 0}]}"#;
/// `id` changes type: incompatible with V1 and V2.
const BROKEN: &str = r#"{"type": "record", "name": "Order", "namespace": "acme",
  "fields": [{"name": "id", "type": "long"}, {"name": "amount", "type": "long", "default": 0}]}"#;

/// Pulsar's admin API, with the operator's token when the stack has one.
struct Admin {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Admin {
    fn new(env: &BTreeMap<String, String>) -> Self {
        let token = env
            .get("OSSATURE_PULSAR_TOKEN_FILE")
            .map(|f| std::fs::read_to_string(f).unwrap().trim().to_string());
        Admin {
            base: env["OSSATURE_PULSAR_ADMIN_URL"]
                .trim_end_matches('/')
                .into(),
            token,
            http: http(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }
}

fn topic(name: &str, spec: Value) -> Topic {
    ossature("Topic", name, spec)
}

fn reason(topic: &Topic, type_: &str) -> Option<(String, String, String)> {
    let status = topic.status.as_ref()?;
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn topic_ready(topic: &Topic) -> bool {
    topic.status.as_ref().is_some_and(|s| {
        s.observed_generation == topic.metadata.generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_keeps_its_schema_policies_and_partitions() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let operator = start_operator_with(&env, &sel, &["--resync-seconds", "5"]);
    let admin = Admin::new(&env);
    let (tenant, namespace) = tenant_with_environment(&client, &sel, "tp").await;
    let topics: Api<Topic> = Api::namespaced(client.clone(), &namespace);
    let base = format!("/admin/v2/persistent/{tenant}/prod/orders");
    let schema = format!("/admin/v2/schemas/{tenant}/prod/orders/schema");

    topics
        .create(
            &PostParams::default(),
            &topic(
                "orders",
                json!({
                    "partitions": 2,
                    "schema": {"type": "AVRO", "definition": V1},
                    "policies": {
                        "retentionMinutes": 60, "retentionSizeMegabytes": -1,
                        "messageTtlSeconds": 300, "maxProducers": 5,
                        "backlogQuota": {"sizeMegabytes": 10, "policy": "ProducerException"},
                    },
                }),
            ),
        )
        .await
        .unwrap();
    let ready = wait_object(&topics, "orders", "Ready", topic_ready).await;
    let status = ready.status.unwrap();
    assert_eq!(
        status.pulsar_topic.as_deref(),
        Some(format!("persistent://{tenant}/prod/orders").as_str())
    );
    assert_eq!(status.schema_version, Some(0));
    assert_eq!(
        status.schema_fingerprint.as_ref().map(String::len),
        Some(64)
    );
    assert_eq!(
        (status.backlog, status.producers, status.consumers),
        (Some(0), Some(0), Some(0))
    );

    // What Pulsar itself says.
    assert_eq!(
        admin.get(&format!("{base}/partitions")).await.1["partitions"],
        2
    );
    let (code, live) = admin.get(&schema).await;
    assert_eq!(code, 200, "{live}");
    assert_eq!(
        (live["version"].clone(), live["type"].clone()),
        (json!(0), json!("AVRO"))
    );
    assert!(
        live["data"].as_str().unwrap().contains(r#""name":"id""#),
        "{live}"
    );
    assert_eq!(
        admin.get(&format!("{base}/retention")).await.1,
        json!({"retentionTimeInMinutes": 60, "retentionSizeInMB": -1})
    );
    assert_eq!(admin.get(&format!("{base}/messageTTL")).await.1, json!(300));
    assert_eq!(admin.get(&format!("{base}/maxProducers")).await.1, json!(5));
    assert_eq!(
        admin
            .get(&format!("{base}/schemaCompatibilityStrategy"))
            .await
            .1,
        json!("FULL")
    );
    let quotas = admin.get(&format!("{base}/backlogQuotaMap")).await.1;
    assert_eq!(
        quotas["destination_storage"]["limitSize"],
        10 * 1024 * 1024,
        "{quotas}"
    );
    assert_eq!(
        quotas["destination_storage"]["policy"],
        "producer_exception"
    );

    // Unchanged, it is reconciled again and again without a write anywhere.
    assert_steady(&operator, 6, "a steady topic").await;

    // A compatible change is registered as the next version.
    patch_spec(
        &topics,
        "orders",
        json!({"schema": {"type": "AVRO", "definition": V2}}),
    )
    .await;
    let v2 = wait_object(&topics, "orders", "schema version 1", |t| {
        topic_ready(t) && t.status.as_ref().and_then(|s| s.schema_version) == Some(1)
    })
    .await;
    assert_ne!(
        v2.status.unwrap().schema_fingerprint,
        status.schema_fingerprint
    );
    let live = admin.get(&schema).await.1;
    assert_eq!(live["version"], 1);
    assert!(live["data"].as_str().unwrap().contains("amount"));

    // An incompatible one leaves the live schema alone and says why.
    patch_spec(
        &topics,
        "orders",
        json!({"schema": {"type": "AVRO", "definition": BROKEN}}),
    )
    .await;
    let refused = wait_object(&topics, "orders", "SchemaIncompatible", |t| {
        t.status.as_ref().and_then(|s| s.observed_generation) == t.metadata.generation
            && reason(t, "Ready").is_some_and(|(s, r, _)| s == "False" && r == "SchemaIncompatible")
    })
    .await;
    let (_, _, message) = reason(&refused, "SchemaReady").unwrap();
    assert!(
        message.contains("The broker says:") && message.contains("FULL"),
        "{message}"
    );
    assert_eq!(refused.status.unwrap().schema_version, Some(1));
    let live = admin.get(&schema).await.1;
    assert_eq!(live["version"], 1, "the live schema is kept: {live}");
    assert!(
        !live["data"]
            .as_str()
            .unwrap()
            .contains(r#""type":"long"},{"default""#)
    );

    // Back to a compatible definition; the TTL leaves the spec, partitions grow.
    patch_spec(
        &topics,
        "orders",
        json!({
            "schema": {"type": "AVRO", "definition": V2},
            "partitions": 3,
            "policies": {"messageTtlSeconds": null},
        }),
    )
    .await;
    wait_object(&topics, "orders", "Ready again", topic_ready).await;
    assert_eq!(
        admin.get(&format!("{base}/partitions")).await.1["partitions"],
        3
    );
    assert_eq!(admin.get(&format!("{base}/messageTTL")).await.1, json!(""));
    assert_eq!(admin.get(&format!("{base}/maxProducers")).await.1, json!(5));
    assert_eq!(
        admin.get(&schema).await.1["version"],
        1,
        "nothing new to register"
    );

    // Deleted by hand, it comes back with its schema and policies.
    let (code, body) = admin
        .call(
            reqwest::Method::DELETE,
            &format!("{base}/partitions?force=true"),
            None,
        )
        .await;
    assert!(code < 300, "{code} {body}");
    wait_for(
        "the topic back in Pulsar",
        Duration::from_secs(60),
        || async {
            let (code, partitions) = admin.get(&format!("{base}/partitions")).await;
            let (schema_code, _) = admin.get(&schema).await;
            let (_, ttl) = admin.get(&format!("{base}/maxProducers")).await;
            (code == 200 && partitions["partitions"] == 3 && schema_code == 200 && ttl == json!(5))
                .then_some(())
        },
    )
    .await;
    wait_for(
        "a DriftCorrected event",
        Duration::from_secs(30),
        || async {
            events_of(&client, &namespace, "orders")
                .await
                .iter()
                .any(|e| e.reason.as_deref() == Some("DriftCorrected"))
                .then_some(())
        },
    )
    .await;
    let back = wait_object(&topics, "orders", "Ready", topic_ready).await;
    let live = admin.get(&schema).await.1;
    assert_eq!(
        back.status.unwrap().schema_version,
        live["version"].as_i64(),
        "status names the live version"
    );

    delete_tenants(&Api::all(client.clone()), &[&tenant]).await;
    assert_eq!(
        admin.get(&format!("/admin/v2/tenants/{tenant}")).await.0,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_waits_for_a_backlog_unless_forced_and_the_environment_takes_its_topics() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let _operator = start_operator_with(&env, &sel, &["--resync-seconds", "5"]);
    let admin = Admin::new(&env);
    let (tenant, namespace) = tenant_with_environment(&client, &sel, "td").await;
    let topics: Api<Topic> = Api::namespaced(client.clone(), &namespace);
    for (name, spec) in [
        ("held", json!({})),
        (
            "events",
            json!({"partitions": 2, "schema": {"type": "JSON", "definition": V1}}),
        ),
        ("ticks", json!({"persistence": "NonPersistent"})),
    ] {
        topics
            .create(&PostParams::default(), &topic(name, spec))
            .await
            .unwrap();
    }
    for name in ["held", "events", "ticks"] {
        wait_object(&topics, name, "Ready", topic_ready).await;
    }
    let held = format!("/admin/v2/persistent/{tenant}/prod/held");
    assert_eq!(
        admin.get(&format!("{held}/partitions")).await.1["partitions"],
        0
    );

    // A subscription with two messages it has not consumed, sent through
    // the REST producer, whose string schema the broker will not register
    // by itself.
    let (code, body) = admin
        .call(
            reqwest::Method::POST,
            &format!("/admin/v2/schemas/{tenant}/prod/held/schema"),
            Some(json!({"type": "STRING", "schema": "", "properties": {}})),
        )
        .await;
    assert!(code < 300, "{code} {body}");
    let (code, body) = admin
        .call(
            reqwest::Method::PUT,
            &format!("{held}/subscription/audit"),
            None,
        )
        .await;
    assert!(code < 300, "{code} {body}");
    let message = json!({"payload": "aGVsbG8="});
    let (code, body) = admin
        .call(
            reqwest::Method::POST,
            &format!("/topics/persistent/{tenant}/prod/held"),
            Some(json!({"valueSchema": "", "messages": [message, message]})),
        )
        .await;
    assert!(code < 300, "{code} {body}");

    topics
        .delete("held", &DeleteParams::default())
        .await
        .unwrap();
    let blocked = wait_object(&topics, "held", "DeletionBlocked", |t| {
        reason(t, "Ready").is_some_and(|(_, r, _)| r == "DeletionBlocked")
    })
    .await;
    let (_, _, message) = reason(&blocked, "Ready").unwrap();
    assert!(message.contains("2 unconsumed message(s)"), "{message}");
    assert_eq!(blocked.status.unwrap().backlog, Some(2));
    assert_eq!(
        admin.get(&format!("{held}/partitions")).await.0,
        200,
        "still there"
    );

    // Forced, it goes.
    patch_spec(&topics, "held", json!({"deletion": {"force": true}})).await;
    wait_for("topic held gone", Duration::from_secs(60), || async {
        topics
            .get_opt("held")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(admin.get(&format!("{held}/partitions")).await.0, 404);

    // The Environment's deletion takes the others, whatever they hold.
    let events = format!("/admin/v2/persistent/{tenant}/prod/events");
    let (code, body) = admin
        .call(
            reqwest::Method::PUT,
            &format!("{events}/subscription/audit"),
            None,
        )
        .await;
    assert!(code < 300, "{code} {body}");
    let environments: Api<Environment> = Api::namespaced(client.clone(), &format!("tn-{tenant}"));
    environments
        .delete("prod", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "environment prod gone",
        Duration::from_secs(120),
        || async {
            environments
                .get_opt("prod")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert_eq!(admin.get(&format!("{events}/partitions")).await.0, 404);
    assert_eq!(
        admin
            .get(&format!("/admin/v2/namespaces/{tenant}/prod"))
            .await
            .0,
        404
    );
    assert!(
        topics
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    delete_tenants(&Api::all(client.clone()), &[&tenant]).await;
}

/// What the apiserver refuses of a Topic, with no operator involved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_refuses_what_pulsar_cannot_do() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let namespace = format!("tn-adm{}--dev", suffix());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap(),
        )
        .await
        .unwrap();
    let topics: Api<Topic> = Api::namespaced(client.clone(), &namespace);
    let refusal = |result: Result<Topic, kube::Error>| match result {
        Err(kube::Error::Api(e)) if e.code == 422 => e.message,
        other => panic!("expected a refusal, got {other:?}"),
    };

    for (name, spec, says) in [
        ("Orders", json!({}), "lowercase"),
        ("orders-partition-1", json!({}), "-partition-"),
        ("orders", json!({"partitions": 0}), "partitions"),
        (
            "orders",
            json!({"persistence": "NonPersistent", "schema": {"type": "AVRO", "definition": V1}}),
            "a schema needs a Persistent topic",
        ),
        (
            "orders",
            json!({"schema": {"type": "AVRO", "definition": "not json"}}),
            "Avro record schema",
        ),
    ] {
        let message = refusal(
            topics
                .create(&PostParams::default(), &topic(name, spec))
                .await,
        );
        assert!(message.contains(says), "{name}: {message}");
    }

    topics
        .create(
            &PostParams::default(),
            &topic("orders", json!({"partitions": 3})),
        )
        .await
        .unwrap();
    let patch = |spec: Value| {
        let topics = topics.clone();
        async move {
            topics
                .patch(
                    "orders",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": spec})),
                )
                .await
        }
    };
    let message = refusal(patch(json!({"partitions": 2})).await);
    assert!(message.contains("partitions can only grow"), "{message}");
    let message = refusal(patch(json!({"persistence": "NonPersistent"})).await);
    assert!(message.contains("persistence is immutable"), "{message}");
    let message = refusal(patch(json!({"partitions": null})).await);
    assert!(
        message.contains("partitioned and non-partitioned"),
        "{message}"
    );
    patch(json!({"partitions": 4})).await.unwrap();

    namespaces
        .delete(&namespace, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_beyond_the_quota_are_refused_until_it_allows_them() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let _operator = start_operator(&env, &sel);
    let (tenant, namespace) = tenant_with_environment(&client, &sel, "tq").await;
    let environments: Api<Environment> = Api::namespaced(client.clone(), &format!("tn-{tenant}"));
    environments
        .patch(
            "prod",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"quotas": {"partitions": 2}}})),
        )
        .await
        .unwrap();
    let topics: Api<Topic> = Api::namespaced(client.clone(), &namespace);
    topics
        .create(
            &PostParams::default(),
            &topic("wide", json!({"partitions": 3})),
        )
        .await
        .unwrap();
    let refused = wait_object(&topics, "wide", "QuotaExceeded", |t| {
        reason(t, "MessagingReady").is_some_and(|(s, r, _)| s == "False" && r == "QuotaExceeded")
    })
    .await;
    let (_, _, message) = reason(&refused, "MessagingReady").unwrap();
    assert!(message.contains("allows 2"), "{message}");
    let (code, _) = pulsar_get(
        &env,
        &format!("/admin/v2/persistent/{tenant}/prod/wide/partitions"),
    )
    .await;
    assert_eq!(code, 404, "nothing is created beyond the quota");
    environments
        .patch(
            "prod",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"quotas": {"partitions": 3}}})),
        )
        .await
        .unwrap();
    wait_object(
        &topics,
        "wide",
        "Ready once the quota allows it",
        topic_ready,
    )
    .await;
    let tenants: Api<ossature_crds::Tenant> = Api::all(client.clone());
    delete_tenants(&tenants, &[&tenant]).await;
}
