//! Workloads through the operator binary against the real apiserver (kwok
//! makes their pods Running) and the real broker: each of the four
//! templates accepted with what it writes (ScaledObjects against KEDA's own
//! CRDs), replicas within what the subscription type lets work, secrets as
//! files and never variables, a rollout when the secrets change, a
//! PodDisruptionBudget only with more than one replica, one autoscaler
//! swapped for the other, Ready following the available replicas, the
//! waits for a ServiceIdentity and a Topic, and deletion removing
//! everything.
//!
//! Each workload runs as a ServiceIdentity that the ServiceIdentity
//! controller provisions (its ServiceAccount, and the Secret of its
//! credentials the pods mount); new credentials give a new secrets hash.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::{Api, Client, Resource};
use ossature_crds::{Scope, ServiceIdentity, Topic, Workload};
use serde_json::{Value, json};

const ULID: &str = "01JQ3X5T0RYB9Q8K1W7ZC4M2NP";
const SECRETS_DIR: &str = "/var/run/secrets/ossature";
const HASH_ANNOTATION: &str = "ossature.dev/secrets-hash";
const WAIT: Duration = Duration::from_secs(90);
/// What runs every workload.
const RUNNING: [&str; 3] = ["Deployment", "Service", "NetworkPolicy"];

/// What runs a workload, and `more`.
fn running_and(more: &[&'static str]) -> Vec<&'static str> {
    RUNNING.iter().chain(more).copied().collect()
}

fn workload(name: &str, spec: Value) -> Workload {
    ossature("Workload", name, spec)
}

fn topic(name: &str, partitions: Option<i32>) -> Topic {
    let spec = match partitions {
        Some(n) => json!({"partitions": n}),
        None => json!({}),
    };
    ossature("Topic", name, spec)
}

/// The Scope `global` of the tenant, which owns its services.
async fn owner_scope(client: &Client, tenant: &str) {
    let global: Scope = ossature("Scope", "global", json!({"displayName": "Global"}));
    Api::<Scope>::namespaced(client.clone(), &format!("tn-{tenant}"))
        .create(&PostParams::default(), &global)
        .await
        .unwrap();
}

/// Creates ServiceIdentity `name`, consuming each (topic, subscription).
async fn identity(client: &Client, namespace: &str, name: &str, consumes: &[(&str, &str)]) {
    let grants: Vec<Value> = consumes
        .iter()
        .map(|(topic, subscription)| {
            json!({"topic": topic, "actions": ["Consume"], "subscriptions": [subscription]})
        })
        .collect();
    let identity: ServiceIdentity = ossature(
        "ServiceIdentity",
        name,
        json!({"id": ULID, "owner": "global", "grants": grants}),
    );
    Api::<ServiceIdentity>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &identity)
        .await
        .unwrap();
}

/// Waits until ServiceIdentity `name` is Ready with a secrets hash other
/// than `not`; that hash.
async fn secrets_hash(client: &Client, namespace: &str, name: &str, not: Option<&str>) -> String {
    let identities = Api::<ServiceIdentity>::namespaced(client.clone(), namespace);
    let ready = wait_object(&identities, name, "Ready with its secrets", |i| {
        let status = i.status.as_ref();
        let hash = status.and_then(|s| s.secrets_hash.as_deref());
        status.is_some_and(|s| {
            s.observed_generation == i.metadata.generation
                && condition(&s.conditions, "Ready").is_some_and(|(ok, _)| ok == "True")
        }) && hash.is_some()
            && hash != not
    })
    .await;
    ready.status.unwrap().secrets_hash.unwrap()
}

/// (status, reason, message) of a condition.
fn condition_of(workload: &Workload, type_: &str) -> Option<(String, String, String)> {
    workload
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn current(workload: &Workload) -> bool {
    workload.status.as_ref().and_then(|s| s.observed_generation) == workload.metadata.generation
}

fn ready(workload: &Workload) -> bool {
    current(workload) && condition_of(workload, "Ready").is_some_and(|(s, _, _)| s == "True")
}

async fn wait_topics_ready(topics: &Api<Topic>, names: &[&str]) {
    for name in names {
        wait_for(&format!("topic {name} Ready"), WAIT, || async {
            let t = topics.get(name).await.ok()?;
            let status = t.status.as_ref()?;
            (status.observed_generation == t.metadata.generation
                && condition(&status.conditions, "Ready")?.0 == "True")
                .then_some(())
        })
        .await;
    }
}

fn keda(client: &Client, namespace: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let resource = ApiResource {
        group: "keda.sh".into(),
        version: "v1alpha1".into(),
        api_version: "keda.sh/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// Every kind a Workload may write, in its namespace.
struct Written {
    deployments: Api<Deployment>,
    services: Api<Service>,
    policies: Api<NetworkPolicy>,
    budgets: Api<PodDisruptionBudget>,
    hpas: Api<HorizontalPodAutoscaler>,
    scaled: Api<DynamicObject>,
    authentications: Api<DynamicObject>,
}

impl Written {
    fn new(client: &Client, namespace: &str) -> Self {
        Written {
            deployments: Api::namespaced(client.clone(), namespace),
            services: Api::namespaced(client.clone(), namespace),
            policies: Api::namespaced(client.clone(), namespace),
            budgets: Api::namespaced(client.clone(), namespace),
            hpas: Api::namespaced(client.clone(), namespace),
            scaled: keda(client, namespace, "ScaledObject", "scaledobjects"),
            authentications: keda(
                client,
                namespace,
                "TriggerAuthentication",
                "triggerauthentications",
            ),
        }
    }

    /// Which of the workload's objects exist, by kind.
    async fn present(&self, name: &str) -> BTreeMap<&'static str, bool> {
        let auth = format!("{name}-pulsar");
        BTreeMap::from([
            ("Deployment", exists(&self.deployments, name).await),
            ("Service", exists(&self.services, name).await),
            ("NetworkPolicy", exists(&self.policies, name).await),
            ("PodDisruptionBudget", exists(&self.budgets, name).await),
            ("HorizontalPodAutoscaler", exists(&self.hpas, name).await),
            ("ScaledObject", exists(&self.scaled, name).await),
            (
                "TriggerAuthentication",
                exists(&self.authentications, &auth).await,
            ),
        ])
    }

    /// Waits until exactly `kinds` of the workload's objects exist.
    async fn wait_exactly(&self, name: &str, kinds: &[&str]) {
        let mut last = BTreeMap::new();
        for _ in 0..(WAIT.as_millis() / 500) {
            last = self.present(name).await;
            if last
                .iter()
                .all(|(kind, there)| *there == kinds.contains(kind))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("workload {name}: wanted exactly {kinds:?}, found {last:?}");
    }
}

async fn exists<K>(api: &Api<K>, name: &str) -> bool
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_metadata_opt(name).await.unwrap().is_some()
}

/// The subscriptions of a topic of the tenant's environment `prod`.
async fn subscriptions(env: &BTreeMap<String, String>, tenant: &str, topic: &str) -> Value {
    let (code, body) = pulsar_get(
        env,
        &format!("/admin/v2/persistent/{tenant}/prod/{topic}/subscriptions"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    body
}

/// The secrets reach the pods as read-only files of the Secret the
/// ServiceIdentity names, never as variables; the pods run as its
/// ServiceAccount, their template carrying the secrets' hash.
fn assert_secrets_as_files(deployment: &Deployment, hash: &str) {
    let d = serde_json::to_value(deployment).unwrap();
    let pod = &d["spec"]["template"];
    assert_eq!(pod["metadata"]["annotations"][HASH_ANNOTATION], hash);
    assert_eq!(pod["spec"]["serviceAccountName"], "orders");
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    assert_eq!(volumes[0]["secret"]["secretName"], "orders-secrets");
    for container in pod["spec"]["containers"].as_array().unwrap() {
        assert_eq!(container["volumeMounts"][0]["mountPath"], SECRETS_DIR);
        assert_eq!(container["volumeMounts"][0]["readOnly"], true);
        assert!(container.get("envFrom").is_none(), "{container}");
        for variable in container["env"].as_array().into_iter().flatten() {
            assert!(variable.get("valueFrom").is_none(), "{variable}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_template_runs_with_its_secrets_as_files_and_bounded_replicas() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let operator = start_operator_with(&env, &sel, &["--resync-seconds", "5"]);
    let (tenant, namespace) = tenant_with_environment(&client, &sel, "wl").await;
    let topics: Api<Topic> = Api::namespaced(client.clone(), &namespace);
    let workloads: Api<Workload> = Api::namespaced(client.clone(), &namespace);
    let written = Written::new(&client, &namespace);

    for t in [topic("orders", Some(3)), topic("audit", None)] {
        topics.create(&PostParams::default(), &t).await.unwrap();
    }
    wait_topics_ready(&topics, &["orders", "audit"]).await;
    owner_scope(&client, &tenant).await;
    identity(
        &client,
        &namespace,
        "orders",
        &[("orders", "billing"), ("audit", "archive")],
    )
    .await;
    let hash = secrets_hash(&client, &namespace, "orders", None).await;

    let specs = [
        (
            "orders-api",
            json!({"template": "CommandEndpoint", "serviceIdentity": "orders", "image": "orders:1",
                   "replicas": 2, "env": [{"name": "LOG_LEVEL", "value": "info"}],
                   "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}),
        ),
        (
            "orders-query",
            json!({"template": "QueryEndpoint", "serviceIdentity": "orders", "image": "orders-query:1",
                   "trafficPort": 8081, "managementPort": 9091}),
        ),
        // Failover on three partitions: a fourth consumer would only wait.
        (
            "orders-billing",
            json!({"template": "EventProcessor", "serviceIdentity": "orders", "image": "billing:1",
                   "subscription": {"topic": "orders", "name": "billing", "type": "Failover"},
                   "scaling": {"minReplicas": 1, "maxReplicas": 10, "backlogTarget": 500}}),
        ),
        // Exclusive: one consumer, whatever the backlog.
        (
            "orders-archive",
            json!({"template": "EventSink", "serviceIdentity": "orders", "image": "archive:1",
                   "subscription": {"topic": "audit", "name": "archive", "type": "Exclusive"},
                   "scaling": {"minReplicas": 1, "maxReplicas": 1}}),
        ),
    ];
    for (name, spec) in &specs {
        workloads
            .create(&PostParams::default(), &workload(name, spec.clone()))
            .await
            .unwrap();
    }
    let mut live = BTreeMap::new();
    for (name, _) in &specs {
        live.insert(*name, wait_object(&workloads, name, "Ready", ready).await);
    }

    for (name, _) in &specs {
        let deployment = written.deployments.get(name).await.unwrap();
        assert_secrets_as_files(&deployment, &hash);
        let owner = &deployment.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("Workload", *name)
        );
        assert_eq!(
            Some(&owner.uid),
            live[name].meta().uid.as_ref(),
            "owned, so its deletion takes it"
        );
        let labels = deployment.metadata.labels.unwrap();
        assert_eq!(labels["app.kubernetes.io/name"], *name);
        assert_eq!(labels["app.kubernetes.io/part-of"], "orders");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "ossature");
    }

    // The command endpoint: two replicas, both available, and a budget.
    let api = live["orders-api"].status.clone().unwrap();
    assert_eq!(
        (api.replicas, api.available_replicas, api.autoscaler),
        (Some(2), Some(2), None)
    );
    written
        .wait_exactly("orders-api", &running_and(&["PodDisruptionBudget"]))
        .await;
    let service =
        serde_json::to_value(written.services.get("orders-query").await.unwrap()).unwrap();
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "traffic", "port": 8081, "protocol": "TCP", "targetPort": "traffic"}]),
        "the management port is not served"
    );
    written
        .wait_exactly("orders-query", &["Deployment", "Service", "NetworkPolicy"])
        .await;

    // The processor and the sink: a ScaledObject each, checked by KEDA's
    // own CRD, within what their subscription type lets work.
    for (name, subscription, max) in [
        ("orders-billing", "billing", 3),
        ("orders-archive", "archive", 1),
    ] {
        let status = live[name].status.clone().unwrap();
        assert_eq!(status.autoscaler.as_deref(), Some("KEDA"));
        assert_eq!(status.available_replicas, Some(1));
        let so = written.scaled.get(name).await.unwrap().data;
        assert_eq!(so["spec"]["minReplicaCount"], 1, "{so}");
        assert_eq!(so["spec"]["maxReplicaCount"], max, "{so}");
        let trigger = &so["spec"]["triggers"][0];
        assert_eq!(trigger["type"], "pulsar");
        assert_eq!(trigger["metadata"]["subscription"], subscription);
        assert_eq!(
            trigger["authenticationRef"]["name"],
            format!("{name}-pulsar")
        );
        let auth = written
            .authentications
            .get(&format!("{name}-pulsar"))
            .await
            .unwrap()
            .data;
        assert_eq!(auth["spec"]["secretTargetRef"][0]["name"], "orders-secrets");
        written
            .wait_exactly(
                name,
                &running_and(&["ScaledObject", "TriggerAuthentication"]),
            )
            .await;
        let deployment = written.deployments.get(name).await.unwrap();
        assert_eq!(
            deployment.metadata.labels.unwrap()["app.kubernetes.io/component"],
            if name == "orders-billing" {
                "event-processor"
            } else {
                "event-sink"
            }
        );
    }
    // Made before the consumers, in the broker.
    assert_eq!(
        subscriptions(&env, &tenant, "orders").await,
        json!(["billing"])
    );
    assert_eq!(
        subscriptions(&env, &tenant, "audit").await,
        json!(["archive"])
    );
    let messaging = condition_of(&live["orders-billing"], "MessagingReady").unwrap();
    assert_eq!(messaging.0, "True", "{messaging:?}");

    assert!(
        events_of(&client, &namespace, "orders-api")
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("Provisioned")),
        "its creation is told in an Event"
    );

    // Unchanged, they are reconciled again and again without a write.
    assert_steady(&operator, 12, "a steady workload").await;

    // Admission refuses more than one consumer of an Exclusive subscription.
    let refused = workloads
        .create(
            &PostParams::default(),
            &workload(
                "two-exclusive",
                json!({"template": "EventSink", "serviceIdentity": "orders", "image": "a:1",
                       "subscription": {"topic": "audit", "name": "archive", "type": "Exclusive"},
                       "scaling": {"minReplicas": 1, "maxReplicas": 2}}),
            ),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("Exclusive subscription admits one consumer"),
        "{refused}"
    );

    // Deleted, each takes everything it wrote with it.
    for (name, _) in &specs {
        workloads
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    for (name, _) in &specs {
        written.wait_exactly(name, &[]).await;
    }
    delete_tenants(&Api::all(client.clone()), &[&tenant]).await;
    drop(operator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_replicas_and_autoscalers_change_what_is_written() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    // First without KEDA, as on a cluster without its CRDs.
    let operator = start_operator_with(
        &env,
        &sel,
        &["--resync-seconds", "5", "--autoscaler", "hpa"],
    );
    let (tenant, namespace) = tenant_with_environment(&client, &sel, "wc").await;
    let topics: Api<Topic> = Api::namespaced(client.clone(), &namespace);
    let workloads: Api<Workload> = Api::namespaced(client.clone(), &namespace);
    let written = Written::new(&client, &namespace);
    topics
        .create(&PostParams::default(), &topic("orders", Some(2)))
        .await
        .unwrap();
    wait_topics_ready(&topics, &["orders"]).await;
    owner_scope(&client, &tenant).await;
    identity(&client, &namespace, "orders", &[("orders", "billing")]).await;
    let hash = secrets_hash(&client, &namespace, "orders", None).await;

    let name = "orders-billing";
    workloads
        .create(
            &PostParams::default(),
            &workload(
                name,
                json!({"template": "EventProcessor", "serviceIdentity": "orders", "image": "billing:1",
                       "subscription": {"topic": "orders", "name": "billing"},
                       "scaling": {"minReplicas": 2, "maxReplicas": 6}}),
            ),
        )
        .await
        .unwrap();
    let hpa_run = wait_object(&workloads, name, "Ready with an HPA", |w| {
        ready(w) && w.status.as_ref().unwrap().autoscaler.as_deref() == Some("HPA")
    })
    .await;
    let status = hpa_run.status.unwrap();
    assert_eq!(
        (status.replicas, status.available_replicas),
        (Some(2), Some(2)),
        "started at the autoscaler's minimum"
    );
    let hpa = serde_json::to_value(written.hpas.get(name).await.unwrap()).unwrap();
    assert_eq!(
        (&hpa["spec"]["minReplicas"], &hpa["spec"]["maxReplicas"]),
        (&json!(2), &json!(6)),
        "Shared: as many consumers as asked"
    );
    assert_eq!(
        hpa["spec"]["metrics"][0]["external"]["metric"]["selector"]["matchLabels"]["subscription"],
        "billing"
    );
    let target = &hpa["spec"]["metrics"][0]["external"]["target"];
    assert_eq!(
        target["averageValue"], "1k",
        "the default backlog per replica"
    );
    written
        .wait_exactly(
            name,
            &running_and(&["PodDisruptionBudget", "HorizontalPodAutoscaler"]),
        )
        .await;
    assert_steady(&operator, 6, "a workload scaled by an HPA").await;
    drop(operator);

    // KEDA's CRDs are installed: the HPA gives way to a ScaledObject.
    let operator = start_operator_with(&env, &sel, &["--resync-seconds", "5"]);
    wait_object(&workloads, name, "scaled by KEDA", |w| {
        ready(w) && w.status.as_ref().unwrap().autoscaler.as_deref() == Some("KEDA")
    })
    .await;
    written
        .wait_exactly(
            name,
            &running_and(&[
                "PodDisruptionBudget",
                "ScaledObject",
                "TriggerAuthentication",
            ]),
        )
        .await;

    // New credentials, asked for: new secrets roll the pods out.
    let before = written.deployments.get(name).await.unwrap();
    assert_secrets_as_files(&before, &hash);
    let identities = Api::<ServiceIdentity>::namespaced(client.clone(), &namespace);
    let rotation = json!({"credentials": {"rotationRequest": "now"}});
    patch_spec(&identities, "orders", rotation).await;
    let rotated = secrets_hash(&client, &namespace, "orders", Some(&hash)).await;
    let rolled = wait_for("the new secrets' hash", WAIT, || async {
        let d = written.deployments.get(name).await.ok()?;
        let annotations = d.spec.template.metadata.as_ref()?.annotations.as_ref()?;
        (annotations.get(HASH_ANNOTATION)? == &rotated).then_some(d)
    })
    .await;
    assert!(rolled.metadata.generation > before.metadata.generation);
    assert_secrets_as_files(&rolled, &rotated);
    wait_object(&workloads, name, "Ready after the rollout", ready).await;

    // Fixed at one replica: no autoscaler, no budget.
    patch_spec(&workloads, name, json!({"scaling": null, "replicas": 1})).await;
    let one = wait_object(&workloads, name, "one replica", |w| {
        ready(w) && w.status.as_ref().unwrap().available_replicas == Some(1)
    })
    .await;
    let (_, _, scaling) = condition_of(&one, "ScalingReady").unwrap();
    assert!(scaling.contains("no autoscaler"), "{scaling}");
    assert_eq!(one.status.unwrap().autoscaler, None);
    written
        .wait_exactly(name, &["Deployment", "Service", "NetworkPolicy"])
        .await;

    // Three: the budget is back, and Ready waits for the three.
    patch_spec(&workloads, name, json!({"replicas": 3})).await;
    let three = wait_object(&workloads, name, "three available", |w| {
        ready(w) && w.status.as_ref().unwrap().available_replicas == Some(3)
    })
    .await;
    assert_eq!(three.status.unwrap().replicas, Some(3));
    written
        .wait_exactly(name, &running_and(&["PodDisruptionBudget"]))
        .await;

    workloads
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
    written.wait_exactly(name, &[]).await;
    delete_tenants(&Api::all(client.clone()), &[&tenant]).await;
    drop(operator);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_waits_for_its_identity_its_topic_and_its_pods() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let operator = start_operator_with(&env, &sel, &["--resync-seconds", "5"]);
    let (tenant, namespace) = tenant_with_environment(&client, &sel, "ww").await;
    let topics: Api<Topic> = Api::namespaced(client.clone(), &namespace);
    let workloads: Api<Workload> = Api::namespaced(client.clone(), &namespace);
    let written = Written::new(&client, &namespace);

    // Neither its ServiceIdentity nor its Topic exists yet.
    let name = "late-sink";
    workloads
        .create(
            &PostParams::default(),
            &workload(
                name,
                json!({"template": "EventSink", "serviceIdentity": "orders", "image": "sink:1",
                       "subscription": {"topic": "late", "name": "sink", "type": "KeyShared"},
                       "replicas": 1}),
            ),
        )
        .await
        .unwrap();
    let waiting = wait_object(&workloads, name, "waiting for its identity", |w| {
        current(w) && condition_of(w, "SecretsReady").is_some()
    })
    .await;
    let (status, reason, message) = condition_of(&waiting, "SecretsReady").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "WaitingForServiceIdentity")
    );
    assert!(message.contains("ServiceIdentity orders"), "{message}");
    assert!(!ready(&waiting));
    written.wait_exactly(name, &[]).await;

    // The identity comes (its watch brings the workload back), granted a
    // Topic that does not exist yet: the workload now waits for the Topic.
    owner_scope(&client, &tenant).await;
    identity(&client, &namespace, "orders", &[("late", "sink")]).await;
    let waiting = wait_object(&workloads, name, "waiting for its topic", |w| {
        condition_of(w, "SecretsReady").is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    let (status, reason, _) = condition_of(&waiting, "MessagingReady").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "TopicNotFound")
    );
    written.wait_exactly(name, &[]).await;

    topics
        .create(&PostParams::default(), &topic("late", Some(2)))
        .await
        .unwrap();
    wait_object(&workloads, name, "Ready once its topic is", ready).await;
    assert_eq!(subscriptions(&env, &tenant, "late").await, json!(["sink"]));

    // Pods that cannot be placed: not Ready, and the status says so.
    patch_spec(
        &workloads,
        name,
        json!({"resources": {"requests": {"cpu": "64"}, "limits": {"cpu": "64"}}}),
    )
    .await;
    let stuck = wait_object(&workloads, name, "not Ready without its pods", |w| {
        current(w) && condition_of(w, "DeploymentReady").is_some_and(|(s, _, _)| s == "False")
    })
    .await;
    let (_, reason, message) = condition_of(&stuck, "Ready").unwrap();
    assert_eq!(reason, "DeploymentNotReady", "{message}");
    assert!(message.contains("Deployment late-sink"), "{message}");

    // Back to what fits: Ready with its replica available.
    patch_spec(
        &workloads,
        name,
        json!({"resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "200m"}}}),
    )
    .await;
    let back = wait_object(&workloads, name, "Ready again", ready).await;
    assert_eq!(back.status.unwrap().available_replicas, Some(1));

    delete_tenants(&Api::all(client.clone()), &[&tenant]).await;
    drop(operator);
}
