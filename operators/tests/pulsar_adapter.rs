//! The Pulsar adapter against the real standalone Pulsar of the local stack.
//! Names are unique per run, so tests can run in parallel and repeatedly.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::panic::AssertUnwindSafe;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use ossature_operator::adapters::pulsar::{MessagingLimits, NamespacePolicy, Pulsar, TokenFile};
use ossature_operator::adapters::{Backend, BackendError, Calls, Change, Verb};
use serde_json::{Value, json};

const CLUSTER: &str = "standalone";

/// The admin URL and the file of the superuser's token.
async fn admin_url() -> (String, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    (
        env["OSSATURE_PULSAR_ADMIN_URL"].clone(),
        env["OSSATURE_PULSAR_TOKEN_FILE"].clone(),
    )
}

fn superuser(token_file: &str) -> Option<TokenFile> {
    Some(TokenFile::read(token_file).unwrap())
}

/// A Pulsar-safe name no other run uses.
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let random = RandomState::new().hash_one(nanos);
    format!("{prefix}-{:08x}", random as u32)
}

fn writes(calls: &Calls) -> u64 {
    calls.count(Backend::Pulsar, Verb::Write)
}

/// Direct REST access, to verify what the adapter did and to cause drift.
struct Rest {
    client: reqwest::Client,
    base: String,
}

impl Rest {
    fn new(base: &str, token_file: &str) -> Self {
        let token = std::fs::read_to_string(token_file).unwrap();
        let mut auth =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim())).unwrap();
        auth.set_sensitive(true);
        let headers =
            reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, auth)]);
        Rest {
            client: reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .unwrap(),
            base: base.trim_end_matches('/').to_string(),
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        assert!(
            status.is_success(),
            "{method} {path}: {status}: {}",
            response.text().await.unwrap_or_default()
        );
    }
}

/// Runs the test body, then removes what it made whether or not it failed.
async fn with_cleanup<F: Future<Output = ()>>(
    pulsar: &Pulsar,
    tenant: &str,
    namespace: &str,
    body: F,
) {
    let outcome = AssertUnwindSafe(body).catch_unwind().await;
    let _ = pulsar.delete_namespace(tenant, namespace).await;
    let _ = pulsar.delete_tenant(tenant).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test]
async fn tenant_is_created_left_alone_and_restored_after_drift() {
    let (url, token) = admin_url().await;
    let calls = Calls::default();
    let pulsar = Pulsar::new(&url, superuser(&token), calls.clone()).unwrap();
    let rest = Rest::new(&url, &token);
    let tenant = unique("it-pt");
    let clusters = vec![CLUSTER.to_string()];

    with_cleanup(&pulsar, &tenant, "none", async {
        assert!(
            pulsar
                .clusters()
                .await
                .unwrap()
                .contains(&CLUSTER.to_string())
        );

        assert_eq!(
            pulsar.ensure_tenant(&tenant, &clusters).await.unwrap(),
            Change::Created
        );

        let before = writes(&calls);
        assert_eq!(
            pulsar.ensure_tenant(&tenant, &clusters).await.unwrap(),
            Change::Unchanged
        );
        assert_eq!(writes(&calls), before, "an unchanged tenant is not written");

        let path = format!("/admin/v2/tenants/{tenant}");
        let expected = json!({"adminRoles": [], "allowedClusters": [CLUSTER]});
        assert_eq!(rest.get(&path).await, (200, expected.clone()));

        // Drift made behind the operator's back is undone.
        rest.send(
            reqwest::Method::POST,
            &path,
            Some(json!({"adminRoles": ["someone"], "allowedClusters": [CLUSTER]})),
        )
        .await;
        assert_eq!(
            pulsar.ensure_tenant(&tenant, &clusters).await.unwrap(),
            Change::Updated
        );
        assert_eq!(rest.get(&path).await, (200, expected));

        let before = writes(&calls);
        assert_eq!(
            pulsar.ensure_tenant(&tenant, &clusters).await.unwrap(),
            Change::Unchanged
        );
        assert_eq!(writes(&calls), before);

        // A cluster Pulsar does not know is refused, not ignored.
        let err = pulsar
            .ensure_tenant(&tenant, &[CLUSTER.to_string(), "no-such-cluster".into()])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                BackendError::Refused {
                    status: 400..=499,
                    ..
                }
            ),
            "{err:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn namespace_policies_converge_and_deletion_goes_in_order() {
    let (url, token) = admin_url().await;
    let calls = Calls::default();
    let pulsar = Pulsar::new(&url, superuser(&token), calls.clone()).unwrap();
    let rest = Rest::new(&url, &token);
    let tenant = unique("it-pn");
    let namespace = "dev";
    let policy = NamespacePolicy {
        retention_minutes: 90,
        retention_size_mb: 256,
        schema_compatibility: "FULL".into(),
        limits: Default::default(),
    };

    with_cleanup(&pulsar, &tenant, namespace, async {
        assert_eq!(
            pulsar
                .ensure_tenant(&tenant, &[CLUSTER.to_string()])
                .await
                .unwrap(),
            Change::Created
        );
        assert_eq!(
            pulsar
                .ensure_namespace(&tenant, namespace, &policy)
                .await
                .unwrap(),
            Change::Created
        );

        let before = writes(&calls);
        assert_eq!(
            pulsar
                .ensure_namespace(&tenant, namespace, &policy)
                .await
                .unwrap(),
            Change::Unchanged
        );
        assert_eq!(
            writes(&calls),
            before,
            "an unchanged namespace is not written"
        );

        let ns = format!("/admin/v2/namespaces/{tenant}/{namespace}");
        let retention = json!({"retentionTimeInMinutes": 90, "retentionSizeInMB": 256});
        assert_eq!(
            rest.get(&format!("{ns}/retention")).await,
            (200, retention.clone())
        );
        assert_eq!(
            rest.get(&format!("{ns}/schemaValidationEnforced")).await,
            (200, json!(true))
        );
        assert_eq!(
            rest.get(&format!("{ns}/schemaCompatibilityStrategy")).await,
            (200, json!("FULL"))
        );

        // Drift: only the retention differs, so only it is written.
        rest.send(
            reqwest::Method::POST,
            &format!("{ns}/retention"),
            Some(json!({"retentionTimeInMinutes": 5, "retentionSizeInMB": 1})),
        )
        .await;
        let before = writes(&calls);
        assert_eq!(
            pulsar
                .ensure_namespace(&tenant, namespace, &policy)
                .await
                .unwrap(),
            Change::Updated
        );
        assert_eq!(writes(&calls), before + 1);
        assert_eq!(rest.get(&format!("{ns}/retention")).await, (200, retention));

        // Limits: set, read back, left alone when unchanged, then unset.
        let limited = NamespacePolicy {
            limits: MessagingLimits {
                max_topics: Some(20),
                backlog_bytes: Some(64 << 20),
                publish_rate: Some(500),
            },
            ..policy.clone()
        };
        let before = writes(&calls);
        assert_eq!(
            pulsar
                .ensure_namespace(&tenant, namespace, &limited)
                .await
                .unwrap(),
            Change::Updated
        );
        assert_eq!(writes(&calls), before + 3);
        assert_eq!(
            rest.get(&format!("{ns}/maxTopicsPerNamespace")).await,
            (200, json!(20))
        );
        let (_, backlog) = rest.get(&format!("{ns}/backlogQuotaMap")).await;
        assert_eq!(backlog["destination_storage"]["limitSize"], 64 << 20);
        assert_eq!(
            backlog["destination_storage"]["policy"],
            "producer_request_hold"
        );
        let (_, rate) = rest.get(&format!("{ns}/publishRate")).await;
        assert_eq!(rate["publishThrottlingRateInMsg"], 500);
        let before = writes(&calls);
        assert_eq!(
            pulsar
                .ensure_namespace(&tenant, namespace, &limited)
                .await
                .unwrap(),
            Change::Unchanged
        );
        assert_eq!(writes(&calls), before);
        // A limit changed by hand is put back; removed from the spec, unset.
        rest.send(
            reqwest::Method::POST,
            &format!("{ns}/maxTopicsPerNamespace"),
            Some(json!(1000)),
        )
        .await;
        pulsar
            .ensure_namespace(&tenant, namespace, &limited)
            .await
            .unwrap();
        assert_eq!(
            rest.get(&format!("{ns}/maxTopicsPerNamespace")).await,
            (200, json!(20))
        );
        assert_eq!(
            pulsar
                .ensure_namespace(&tenant, namespace, &policy)
                .await
                .unwrap(),
            Change::Updated
        );
        assert_eq!(
            rest.get(&format!("{ns}/maxTopicsPerNamespace")).await,
            (200, json!(0))
        );
        assert_eq!(
            rest.get(&format!("{ns}/backlogQuotaMap")).await,
            (200, json!({}))
        );
        let (_, rate) = rest.get(&format!("{ns}/publishRate")).await;
        assert!(rate.is_null() || rate == json!(""), "{rate}");

        // An unknown strategy is refused before Pulsar can silently drop it.
        let bogus = NamespacePolicy {
            schema_compatibility: "BOGUS".into(),
            ..policy.clone()
        };
        let before = writes(&calls);
        let err = pulsar
            .ensure_namespace(&tenant, namespace, &bogus)
            .await
            .unwrap_err();
        assert_eq!(err.category(), "BackendRefused", "{err}");
        assert_eq!(writes(&calls), before);

        // Topics of both kinds, partitioned or not, go with the namespace.
        let topics = format!("{tenant}/{namespace}");
        rest.send(
            reqwest::Method::PUT,
            &format!("/admin/v2/persistent/{topics}/orders"),
            None,
        )
        .await;
        rest.send(
            reqwest::Method::PUT,
            &format!("/admin/v2/persistent/{topics}/events/partitions"),
            Some(json!(2)),
        )
        .await;
        rest.send(
            reqwest::Method::PUT,
            &format!("/admin/v2/non-persistent/{topics}/pings"),
            None,
        )
        .await;

        let err = pulsar.delete_tenant(&tenant).await.unwrap_err();
        assert!(
            matches!(err, BackendError::Refused { status: 409, .. }),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("namespaces remain"), "{message}");
        assert!(message.contains(&topics), "{message}");

        assert_eq!(
            pulsar.delete_namespace(&tenant, namespace).await.unwrap(),
            Change::Deleted
        );
        let before = writes(&calls);
        assert_eq!(
            pulsar.delete_namespace(&tenant, namespace).await.unwrap(),
            Change::Absent
        );
        assert_eq!(writes(&calls), before, "nothing to delete, nothing written");
        assert_eq!(
            rest.get(&format!("/admin/v2/namespaces/{tenant}")).await,
            (200, json!([]))
        );

        assert_eq!(
            pulsar.delete_tenant(&tenant).await.unwrap(),
            Change::Deleted
        );
        assert_eq!(pulsar.delete_tenant(&tenant).await.unwrap(), Change::Absent);
        assert_eq!(
            rest.get(&format!("/admin/v2/tenants/{tenant}")).await.0,
            404
        );
    })
    .await;
}

#[tokio::test]
async fn namespace_of_a_missing_tenant_is_refused() {
    let (url, token) = admin_url().await;
    let pulsar = Pulsar::new(&url, superuser(&token), Calls::default()).unwrap();
    let policy = NamespacePolicy {
        retention_minutes: 60,
        retention_size_mb: 10,
        schema_compatibility: "FULL".into(),
        limits: Default::default(),
    };
    let err = pulsar
        .ensure_namespace(&unique("it-missing"), "dev", &policy)
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::Refused { status: 404, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn unreachable_pulsar_is_reported_as_such() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let calls = Calls::default();
    let pulsar = Pulsar::new("http://127.0.0.1:1", None, calls.clone()).unwrap();

    let err = pulsar.clusters().await.unwrap_err();
    assert!(matches!(err, BackendError::Unreachable { .. }), "{err:?}");
    assert_eq!(err.category(), "BackendUnreachable");
    assert_eq!(err.backend(), Backend::Pulsar);

    let err = pulsar
        .ensure_tenant("acme", &[CLUSTER.to_string()])
        .await
        .unwrap_err();
    assert_eq!(err.category(), "BackendUnreachable");
    assert_eq!(calls.count(Backend::Pulsar, Verb::Read), 2);
    assert_eq!(calls.count(Backend::Pulsar, Verb::Write), 0);
}

/// The broker lets no one in without a token it can verify; the adapter
/// reads its token file again when the token it holds is refused.
#[tokio::test]
async fn only_a_valid_token_is_let_in_and_a_new_one_is_read_from_its_file() {
    let (url, token) = admin_url().await;
    let anonymous = Pulsar::new(&url, None, Calls::default()).unwrap();
    let err = anonymous.clusters().await.unwrap_err();
    assert_eq!(err.category(), "BackendUnauthorized", "{err:?}");

    let file = std::env::temp_dir().join(unique("pulsar-token"));
    // Well formed, but signed by no key the broker knows.
    let forged = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJvc3NhdHVyZS1hZG1pbiJ9.c2lnbmF0dXJl";
    std::fs::write(&file, forged).unwrap();
    let calls = Calls::default();
    let pulsar = Pulsar::new(&url, Some(TokenFile::read(&file).unwrap()), calls.clone()).unwrap();
    let err = pulsar.clusters().await.unwrap_err();
    assert_eq!(err.category(), "BackendUnauthorized", "{err:?}");

    // The token is minted again into the same file: the next call uses it.
    std::fs::copy(&token, &file).unwrap();
    assert!(
        pulsar
            .clusters()
            .await
            .unwrap()
            .contains(&CLUSTER.to_string())
    );
    assert_eq!(
        calls.count(Backend::Pulsar, Verb::Read),
        3,
        "refused once, then read"
    );
    let _ = std::fs::remove_file(&file);
}

/// The stack's broker runs as a registry of topics needs: authorization on,
/// no topic made by a client's first use, no schema changed by a producer,
/// none deleted for being idle, and schemas enforced.
#[tokio::test]
async fn the_broker_authorizes_and_leaves_topics_and_schemas_to_the_operator() {
    let (url, token) = admin_url().await;
    let rest = Rest::new(&url, &token);
    let (status, runtime) = rest.get("/admin/v2/brokers/configuration/runtime").await;
    assert_eq!(status, 200, "{runtime}");
    for (key, wanted) in [
        ("authenticationEnabled", "true"),
        ("authorizationEnabled", "true"),
        ("allowAutoTopicCreation", "false"),
        ("isAllowAutoUpdateSchemaEnabled", "false"),
        ("brokerDeleteInactiveTopicsEnabled", "false"),
        ("isSchemaValidationEnforced", "true"),
    ] {
        assert_eq!(runtime[key], wanted, "{key}");
    }
    let superusers = runtime["superUserRoles"].as_str().unwrap_or_default();
    assert!(superusers.contains("ossature-admin"), "{superusers}");
    assert!(superusers.contains("ossature-broker"), "{superusers}");
}

/// A role's token, minted by the operator through OpenBao's transit key, is
/// taken by the broker at once (no restart); authorization, not the token,
/// decides what the role may do; an expired token is refused.
#[tokio::test]
async fn a_token_minted_through_openbao_is_a_role_the_broker_authorizes() {
    use ossature_model::services::TokenClaims;
    use ossature_operator::adapters::openbao::OpenBao;
    use ossature_operator::adapters::openbao::tokens::TokenKey;

    let (url, token) = admin_url().await;
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    // The operator's own OpenBao token, holding only its policy.
    let bao = OpenBao::new(
        &env["OSSATURE_OPENBAO_ADDR"],
        &env["OSSATURE_OPENBAO_TOKEN"],
        Calls::default(),
    )
    .unwrap();
    let rest = Rest::new(&url, &token);
    let tenant = unique("it-tok");
    let role = format!("{tenant}.svc");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = |exp: i64| TokenClaims {
        sub: role.clone(),
        iat: now,
        exp,
    };
    let minted = bao
        .sign_token(&TokenKey::default(), &claims(now + 3600))
        .await
        .unwrap();
    let expired = bao
        .sign_token(&TokenKey::default(), &claims(now - 60))
        .await
        .unwrap();

    let pulsar = Pulsar::new(&url, superuser(&token), Calls::default()).unwrap();
    with_cleanup(&pulsar, &tenant, "ns", async {
        rest.send(
            reqwest::Method::PUT,
            &format!("/admin/v2/tenants/{tenant}"),
            Some(json!({"allowedClusters": [CLUSTER]})),
        )
        .await;
        rest.send(
            reqwest::Method::PUT,
            &format!("/admin/v2/namespaces/{tenant}/ns"),
            None,
        )
        .await;
        let topic = format!("/admin/v2/persistent/{tenant}/ns/orders");
        rest.send(reqwest::Method::PUT, &topic, None).await;
        // Pulsar answers 401 both to an unknown token and to a known role
        // without permission; the reason tells them apart.
        let stats = |bearer: String| {
            let url = format!("{url}{topic}/stats");
            async move {
                let answer = reqwest::Client::new()
                    .get(url)
                    .bearer_auth(bearer)
                    .send()
                    .await
                    .unwrap();
                (answer.status().as_u16(), answer.text().await.unwrap())
            }
        };
        let not_permitted = |(status, body): (u16, String)| {
            status == 401 && body.contains("Unauthorized to validateTopicOperation")
        };
        assert!(
            not_permitted(stats(minted.clone()).await),
            "known, not allowed yet"
        );
        let (status, body) = stats(expired.clone()).await;
        assert_eq!(status, 401);
        assert!(body.contains("Authentication required"), "expired: {body}");
        rest.send(
            reqwest::Method::POST,
            &format!("{topic}/permissions/{role}"),
            Some(json!(["consume"])),
        )
        .await;
        assert_eq!(stats(minted.clone()).await.0, 200);
        // Revoked: refused at once, whatever token the role holds.
        rest.send(
            reqwest::Method::DELETE,
            &format!("{topic}/permissions/{role}"),
            None,
        )
        .await;
        assert!(not_permitted(stats(minted.clone()).await), "revoked");
        rest.send(
            reqwest::Method::DELETE,
            &format!("{topic}?force=true"),
            None,
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_subscription_is_made_before_its_consumers_and_made_again_when_removed() {
    use ossature_model::topics::PulsarTopic;
    let (url, token) = admin_url().await;
    let calls = Calls::default();
    let pulsar = Pulsar::new(&url, superuser(&token), calls.clone()).unwrap();
    let rest = Rest::new(&url, &token);
    let tenant = unique("it-ps");
    let namespace = "prod";
    let policy = NamespacePolicy {
        retention_minutes: 60,
        retention_size_mb: 16,
        schema_compatibility: "FULL".into(),
        limits: Default::default(),
    };
    let topic = |local: &str| PulsarTopic {
        persistent: true,
        tenant: tenant.clone(),
        namespace: namespace.into(),
        local: local.into(),
    };

    with_cleanup(&pulsar, &tenant, namespace, async {
        pulsar
            .ensure_tenant(&tenant, &[CLUSTER.to_string()])
            .await
            .unwrap();
        pulsar
            .ensure_namespace(&tenant, namespace, &policy)
            .await
            .unwrap();
        let (orders, events) = (topic("orders"), topic("events"));
        pulsar.create_topic(&orders, Some(3)).await.unwrap();
        pulsar.create_topic(&events, None).await.unwrap();

        for (topic, partitioned) in [(&orders, true), (&events, false)] {
            assert_eq!(
                pulsar.ensure_subscription(topic, "billing").await.unwrap(),
                Change::Created
            );
            let before = writes(&calls);
            assert_eq!(
                pulsar.ensure_subscription(topic, "billing").await.unwrap(),
                Change::Unchanged
            );
            assert_eq!(
                writes(&calls),
                before,
                "a subscription that exists is not written"
            );

            let path = format!("/admin/v2/persistent/{tenant}/{namespace}/{}", topic.local);
            let (status, subscriptions) = rest.get(&format!("{path}/subscriptions")).await;
            assert_eq!((status, subscriptions), (200, json!(["billing"])));
            if partitioned {
                // Every partition has it, durable, before any consumer came.
                for partition in 0..3 {
                    let (_, stats) = rest
                        .get(&format!("{path}-partition-{partition}/stats"))
                        .await;
                    let billing = &stats["subscriptions"]["billing"];
                    assert_eq!(billing["isDurable"], true, "{stats}");
                    assert_eq!(billing["consumers"], json!([]));
                }
            }

            // Removed by hand: made again.
            rest.send(
                reqwest::Method::DELETE,
                &format!("{path}/subscription/billing"),
                None,
            )
            .await;
            assert_eq!(
                pulsar.ensure_subscription(topic, "billing").await.unwrap(),
                Change::Created
            );
        }

        // A topic that does not exist has no subscription to make.
        let err = pulsar
            .ensure_subscription(&topic("nothing"), "billing")
            .await
            .unwrap_err();
        assert!(
            matches!(err, BackendError::Refused { status: 404, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("does not exist"), "{err}");
    })
    .await;
}
