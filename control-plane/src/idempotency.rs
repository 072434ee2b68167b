//! Idempotency keys, kept in Kubernetes so that they hold across restarts
//! and replicas: one ConfigMap per key in the control plane's namespace,
//! named from a hash of (tenant, actor, key), created with create-if-absent
//! semantics (a `create` that fails when it exists) as the in-flight claim,
//! then completed with the answer. Expired keys (annotation
//! `control-plane.ossature.dev/expires-at`) are removed by a sweeper.
//!
//! The answer is stored just after it is sent, so a caller never waits for
//! the bookkeeping. Until it is stored, a request that finds the key in
//! flight waits for it (on this replica, until it is stored; on another, up
//! to a second): a retry sent at once gets the replay, not a 409. A replica
//! dying in between leaves a claim that is taken over once abandoned, and
//! the command, run again, applies the same objects.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{
    DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions,
};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

use crate::context::ANNOTATION_PREFIX;
use crate::problem::{Problem, ProblemKind};

pub const KEY_LABEL: &str = "control-plane.ossature.dev/idempotency-key";
pub const INVOCATION_LABEL: &str = "control-plane.ossature.dev/invocation";
const MANAGED_BY: &str = "ossature-control-plane";
/// Answers stored larger than this are cut (a ConfigMap holds at most 1 MiB).
pub const MAX_STORED_ANSWER: usize = 256 * 1024;
/// A claim this old, still in flight, belongs to a replica that died.
const ABANDONED_AFTER: SignedDuration = SignedDuration::from_mins(10);
const SWEEP_EVERY: Duration = Duration::from_secs(300);

const STATE: &str = "state";
const IN_FLIGHT: &str = "InFlight";
const COMPLETED: &str = "Completed";

#[derive(Clone)]
pub struct Idempotency {
    api: Api<ConfigMap>,
    ttl: SignedDuration,
    /// Keys answered here whose answer is being stored: their object name,
    /// told when it is.
    storing: Arc<Mutex<HashMap<String, tokio::sync::watch::Receiver<bool>>>>,
}

/// Longest wait for this replica to store an answer it has sent.
const STORING_WAIT: Duration = Duration::from_secs(5);
/// How long a key in flight on another replica is watched before the
/// request is refused with a 409: the time a replica takes to store an
/// answer it has sent, with room.
pub const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// What a claim found.
pub enum Claim {
    /// The key is this invocation's now; complete or release it.
    Fresh(Held),
    /// The key was used for this same request: its answer.
    Replay {
        status: u16,
        body: Value,
        invocation_id: String,
    },
}

/// A key this invocation holds.
pub struct Held {
    name: String,
}

/// What a claim records about the request.
pub struct Request<'a> {
    pub tenant: &'a str,
    pub actor: &'a str,
    pub key: &'a str,
    pub command: &'a str,
    /// Hash of the command and its body.
    pub hash: &'a str,
    pub invocation_id: &'a str,
}

/// The object's name: a hash, so keys of any characters fit, and keys of
/// different tenants or actors never meet.
pub fn object_name(tenant: &str, actor: &str, key: &str) -> String {
    let digest = ossature_model::names::sha256_hex(format!("{tenant}\0{actor}\0{key}").as_bytes());
    format!("idem-{}", &digest[..40])
}

/// Hash of a command and its body, the same for the same JSON whatever
/// the order of its fields or its spacing.
pub fn request_hash(command: &str, body: &Value) -> String {
    fn canonical(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let sorted: BTreeMap<&String, Value> =
                    map.iter().map(|(k, v)| (k, canonical(v))).collect();
                serde_json::to_value(sorted).unwrap_or(Value::Null)
            }
            Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
            other => other.clone(),
        }
    }
    let text = serde_json::to_string(&canonical(body)).unwrap_or_default();
    ossature_model::names::sha256_hex(format!("{command}\0{text}").as_bytes())
}

fn unavailable(e: kube::Error) -> Problem {
    if let kube::Error::Api(status) = &e
        && crate::rbac::refused_by_rbac(status)
    {
        let detail = crate::rbac::lacking("the idempotency store", status);
        tracing::error!("{detail}");
        return Problem::new(ProblemKind::Internal, detail);
    }
    tracing::warn!("idempotency store: {e}");
    Problem::new(
        ProblemKind::Unavailable,
        "the idempotency store (the Kubernetes API) cannot be reached now; send the same request again with the same Idempotency-Key",
    )
}

fn status_of(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

impl Idempotency {
    pub fn new(client: Client, namespace: &str, ttl: Duration) -> Self {
        Idempotency {
            api: Api::namespaced(client, namespace),
            ttl: SignedDuration::try_from(ttl).unwrap_or(SignedDuration::from_hours(24)),
            storing: Arc::default(),
        }
    }

    /// Claims the key for this request, or finds what it was used for.
    pub async fn claim(&self, request: &Request<'_>) -> Result<Claim, Problem> {
        let name = object_name(request.tenant, request.actor, request.key);
        for _ in 0..3 {
            let now = Timestamp::now();
            let object = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(BTreeMap::from([
                        ("app.kubernetes.io/managed-by".into(), MANAGED_BY.into()),
                        (KEY_LABEL.into(), "true".into()),
                        (INVOCATION_LABEL.into(), request.invocation_id.into()),
                        (
                            ossature_model::names::TENANT_LABEL.into(),
                            request.tenant.into(),
                        ),
                    ])),
                    annotations: Some(BTreeMap::from([(
                        format!("{ANNOTATION_PREFIX}expires-at"),
                        (now + self.ttl).to_string(),
                    )])),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([
                    (STATE.into(), IN_FLIGHT.into()),
                    ("command".into(), request.command.into()),
                    ("tenant".into(), request.tenant.into()),
                    ("request-sha256".into(), request.hash.into()),
                    ("invocation-id".into(), request.invocation_id.into()),
                    ("started-at".into(), now.to_string()),
                ])),
                ..Default::default()
            };
            match self.api.create(&PostParams::default(), &object).await {
                Ok(_) => return Ok(Claim::Fresh(Held { name })),
                Err(e) if status_of(&e) == Some(409) => {}
                Err(e) => return Err(unavailable(e)),
            }
            let Some(existing) = self.api.get_opt(&name).await.map_err(unavailable)? else {
                continue; // removed meanwhile: claim again
            };
            let data = existing.data.clone().unwrap_or_default();
            let field = |k: &str| data.get(k).cloned().unwrap_or_default();
            if expired(&existing, now) || abandoned(&data, now) {
                // Another replica's claim that ended without an answer, or
                // a key past its time: taken over (if nobody beat us to it).
                self.remove(&existing).await?;
                continue;
            }
            let first = field("invocation-id");
            if field("request-sha256") != request.hash {
                return Err(Problem::new(
                    ProblemKind::IdempotencyKeyReused,
                    format!(
                        "this Idempotency-Key was used by invocation {first} for another request; use a new key for a new request"
                    ),
                ));
            }
            if field(STATE) != COMPLETED
                && (self.stored(&name).await || self.completed_soon(&name).await)
            {
                continue; // answered meanwhile: read it again
            }
            if field(STATE) != COMPLETED {
                let mut problem = Problem::new(
                    ProblemKind::IdempotencyKeyInFlight,
                    format!(
                        "invocation {first} with this Idempotency-Key is still running; ask invocationStatus, or send it again shortly"
                    ),
                );
                problem.retry_after_seconds = Some(2);
                return Err(problem);
            }
            let status = field("status").parse().unwrap_or(200);
            let body = serde_json::from_str(&field("answer")).unwrap_or(Value::Null);
            return Ok(Claim::Replay {
                status,
                body,
                invocation_id: first,
            });
        }
        Err(Problem::new(
            ProblemKind::IdempotencyKeyInFlight,
            "the Idempotency-Key is being claimed by several requests at once; send it again shortly",
        ))
    }

    /// Whether the key has been claimed before (a quorum read: no write).
    pub async fn used(&self, request: &Request<'_>) -> Result<bool, Problem> {
        let name = object_name(request.tenant, request.actor, request.key);
        Ok(self
            .api
            .get_opt(&name)
            .await
            .map_err(unavailable)?
            .is_some())
    }

    /// Stores the answer in the background (it is being sent); requests of
    /// this replica that meet the key meanwhile wait for it.
    pub fn complete_later(&self, held: Held, status: u16, answer: Value) {
        let (stored, receiver) = tokio::sync::watch::channel(false);
        self.storing_keys().insert(held.name.clone(), receiver);
        let this = self.clone();
        tokio::spawn(async move {
            let name = held.name.clone();
            if let Err(problem) = this.complete(held, status, &answer).await {
                tracing::error!(
                    key = name,
                    "storing an answer failed; the key stays in flight until abandoned: {}",
                    problem.detail
                );
            }
            this.storing_keys().remove(&name);
            let _ = stored.send(true);
        });
    }

    fn storing_keys(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, tokio::sync::watch::Receiver<bool>>> {
        self.storing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits while this replica stores key object `name`'s answer; whether
    /// it was storing it.
    pub async fn stored(&self, name: &str) -> bool {
        let Some(mut receiver) = self.storing_keys().get(name).cloned() else {
            return false;
        };
        let _ = tokio::time::timeout(STORING_WAIT, receiver.wait_for(|done| *done)).await;
        true
    }

    /// Whether key object `name`, in flight, is completed within
    /// [`ANSWER_GRACE`]: another replica may have sent its answer and be
    /// storing it, and a retry sent at once should get the replay.
    async fn completed_soon(&self, name: &str) -> bool {
        let completed = |object: Option<&ConfigMap>| {
            object
                .and_then(|o| o.data.as_ref())
                .and_then(|d| d.get(STATE))
                .is_some_and(|state| state == COMPLETED)
        };
        let wait = kube::runtime::wait::await_condition(self.api.clone(), name, completed);
        matches!(
            tokio::time::timeout(ANSWER_GRACE, wait).await,
            Ok(Ok(Some(_)))
        )
    }

    /// Waits (a bounded time) until every answer sent is stored.
    pub async fn flush(&self) {
        let pending: Vec<String> = self.storing_keys().keys().cloned().collect();
        for name in pending {
            self.stored(&name).await;
        }
    }

    /// Stores the answer: later requests with the key get it back.
    pub async fn complete(&self, held: Held, status: u16, answer: &Value) -> Result<(), Problem> {
        let mut text = serde_json::to_string(answer).unwrap_or_default();
        if text.len() > MAX_STORED_ANSWER {
            text = serde_json::json!({"truncated": true, "note": "the answer was too large to keep; ask invocationStatus or tenantStatus"}).to_string();
        }
        let patch = serde_json::json!({"data": {
            STATE: COMPLETED,
            "status": status.to_string(),
            "answer": text,
            "completed-at": Timestamp::now().to_string(),
        }});
        self.api
            .patch(&held.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Gives the key up (the command failed in a way worth retrying).
    pub async fn release(&self, held: Held) {
        if let Err(e) = self.api.delete(&held.name, &DeleteParams::default()).await
            && status_of(&e) != Some(404)
        {
            tracing::warn!(key = held.name, "releasing an idempotency key failed: {e}");
        }
    }

    /// The record of the invocation that claimed a key; once stored, when
    /// this replica is storing it.
    pub async fn by_invocation(&self, invocation_id: &str) -> Result<Option<ConfigMap>, Problem> {
        let params = ListParams::default().labels(&format!("{INVOCATION_LABEL}={invocation_id}"));
        let list = self.api.list(&params).await.map_err(unavailable)?;
        let Some(record) = list.items.into_iter().next() else {
            return Ok(None);
        };
        if self.stored(&record.name_any()).await {
            return self
                .api
                .get_opt(&record.name_any())
                .await
                .map_err(unavailable);
        }
        Ok(Some(record))
    }

    async fn remove(&self, object: &ConfigMap) -> Result<(), Problem> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: object.resource_version(),
                uid: object.uid(),
            }),
            ..Default::default()
        };
        match self.api.delete(&object.name_any(), &params).await {
            Ok(_) => Ok(()),
            Err(e) if matches!(status_of(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Removes expired keys; returns how many.
    pub async fn sweep(&self) -> Result<usize, kube::Error> {
        let now = Timestamp::now();
        let list = self
            .api
            .list(&ListParams::default().labels(&format!("{KEY_LABEL}=true")))
            .await?;
        let mut removed = 0;
        for object in list.items.iter().filter(|o| expired(o, now)) {
            if self.remove(object).await.is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Sweeps every few minutes, for ever. Every replica sweeps; deletions
    /// with preconditions make that harmless.
    pub async fn sweep_forever(self) {
        loop {
            match self.sweep().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "expired idempotency keys removed"),
                Err(e) => tracing::warn!("sweeping idempotency keys failed: {e}"),
            }
            tokio::time::sleep(SWEEP_EVERY).await;
        }
    }
}

fn expired(object: &ConfigMap, now: Timestamp) -> bool {
    object
        .annotations()
        .get(&format!("{ANNOTATION_PREFIX}expires-at"))
        .and_then(|t| t.parse::<Timestamp>().ok())
        .is_some_and(|at| at <= now)
}

fn abandoned(data: &BTreeMap<String, String>, now: Timestamp) -> bool {
    data.get(STATE).map(String::as_str) == Some(IN_FLIGHT)
        && data
            .get("started-at")
            .and_then(|t| t.parse::<Timestamp>().ok())
            .is_some_and(|at| at + ABANDONED_AFTER <= now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_namespaced_by_tenant_and_actor() {
        let a = object_name("acme", "tenant/acme/u1", "k");
        assert_eq!(a, object_name("acme", "tenant/acme/u1", "k"));
        assert_ne!(a, object_name("globex", "tenant/acme/u1", "k"));
        assert_ne!(a, object_name("acme", "tenant/acme/u2", "k"));
        assert!(a.len() <= 63 && a.starts_with("idem-"));
    }

    #[test]
    fn the_same_json_hashes_the_same() {
        let a = json!({"tenant": "acme", "scope": {"name": "eu", "displayName": "EU"}});
        let b: Value = serde_json::from_str(
            r#"{ "scope": {"displayName":"EU","name":"eu"}, "tenant":"acme" }"#,
        )
        .unwrap();
        assert_eq!(request_hash("addScope", &a), request_hash("addScope", &b));
        assert_ne!(request_hash("addScope", &a), request_hash("moveScope", &a));
        let c = json!({"tenant": "acme", "scope": {"name": "eu", "displayName": "Europe"}});
        assert_ne!(request_hash("addScope", &a), request_hash("addScope", &c));
    }

    #[test]
    fn expired_and_abandoned_claims_are_told_apart() {
        let now: Timestamp = "2026-01-01T12:00:00Z".parse().unwrap();
        let mut object = ConfigMap::default();
        object.annotations_mut().insert(
            format!("{ANNOTATION_PREFIX}expires-at"),
            "2026-01-01T11:59:59Z".into(),
        );
        assert!(expired(&object, now));
        object.annotations_mut().insert(
            format!("{ANNOTATION_PREFIX}expires-at"),
            "2026-01-02T11:59:59Z".into(),
        );
        assert!(!expired(&object, now));
        let fresh = BTreeMap::from([
            (STATE.to_string(), IN_FLIGHT.to_string()),
            ("started-at".to_string(), "2026-01-01T11:55:00Z".to_string()),
        ]);
        assert!(!abandoned(&fresh, now));
        let old = BTreeMap::from([
            (STATE.to_string(), IN_FLIGHT.to_string()),
            ("started-at".to_string(), "2026-01-01T11:40:00Z".to_string()),
        ]);
        assert!(abandoned(&old, now));
    }
}
