//! Pulsar with authentication on, through its binary protocol (the `pulsar`
//! crate): a topic's Avro schema is enforced on producers, and a role
//! produces and consumes only while it holds a grant. Tenants, namespaces,
//! topics, schemas and grants are written through the admin REST API as the
//! stack's superuser, as the operator does.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use apache_avro::Schema as AvroSchema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::StreamExt;
use k8s_openapi::jiff::Timestamp;
use ossature_e2e::pulsar_client::{self, OPERATION_TIMEOUT, expect_refused, within};
use ossature_e2e::{Check, Stack, eventually, expect_success, http_client, unique, with_cleanup};
use ossature_model::services::{token_claims, token_from_signature, token_signing_input};
use pulsar::consumer::Message as Received;
use pulsar::proto;
use pulsar::{Consumer, Producer, Pulsar, TokioExecutor, producer};
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Ceiling for a grant or revocation to reach the broker's policy cache.
const POLICY_TIMEOUT: Duration = Duration::from_secs(30);
const SUBSCRIPTION: &str = "e2e-sub";

/// The topic's registered schema.
const ORDER_SCHEMA: &str = r#"{"type":"record","name":"OrderPlaced","namespace":"ossature.e2e","fields":[{"name":"id","type":"string"},{"name":"quantity","type":"int"}]}"#;
/// The same record with `id` changed to a number: no reader of one reads the other.
const INCOMPATIBLE_SCHEMA: &str = r#"{"type":"record","name":"OrderPlaced","namespace":"ossature.e2e","fields":[{"name":"id","type":"long"}]}"#;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderPlaced {
    id: String,
    quantity: i32,
}

/// The superuser's view: admin REST calls with its token.
struct Admin {
    http: Client,
    url: String,
}

impl Admin {
    fn new(stack: &Stack) -> Result<Admin> {
        Ok(Admin {
            http: stack.pulsar.admin_client()?,
            url: stack.pulsar.admin_url.clone(),
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}/admin/v2/{path}", self.url))
    }

    async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        what: &str,
    ) -> Result<Value> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = expect_success(request.send().await?, what).await?;
        let text = response.text().await?;
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{what}: answer is not JSON: {text}"))
    }

    async fn status(&self, path: &str) -> Result<StatusCode> {
        Ok(self.request(Method::GET, path).send().await?.status())
    }
}

/// A tenant, namespace and topic of one test.
struct Names {
    tenant: String,
    namespace: String,
    topic: String,
}

impl Names {
    fn new() -> Names {
        Names {
            tenant: unique("e2e"),
            namespace: unique("ns"),
            topic: unique("topic"),
        }
    }
    fn namespace_path(&self) -> String {
        format!("namespaces/{}/{}", self.tenant, self.namespace)
    }
    fn topic_path(&self) -> String {
        format!(
            "persistent/{}/{}/{}",
            self.tenant, self.namespace, self.topic
        )
    }
    fn schema_path(&self) -> String {
        format!(
            "schemas/{}/{}/{}/schema",
            self.tenant, self.namespace, self.topic
        )
    }
    fn compatibility_path(&self) -> String {
        format!(
            "schemas/{}/{}/{}/compatibility",
            self.tenant, self.namespace, self.topic
        )
    }
    fn permissions_path(&self, role: &str) -> String {
        format!("{}/permissions/{role}", self.topic_path())
    }
    fn full_topic(&self) -> String {
        format!(
            "persistent://{}/{}/{}",
            self.tenant, self.namespace, self.topic
        )
    }
}

fn avro_payload(definition: &str) -> Value {
    json!({ "type": "AVRO", "schema": definition, "properties": {} })
}

/// The tenant, namespace and topic with `ORDER_SCHEMA`, each read back.
async fn provision(admin: &Admin, names: &Names) -> Result<()> {
    let clusters = admin
        .json(Method::GET, "clusters", None, "list clusters")
        .await?;
    let cluster = clusters[0]
        .as_str()
        .with_context(|| format!("Pulsar reports no cluster: {clusters}"))?;
    let tenant_path = format!("tenants/{}", names.tenant);
    admin
        .json(
            Method::PUT,
            &tenant_path,
            Some(json!({ "allowedClusters": [cluster], "adminRoles": [] })),
            "create tenant",
        )
        .await?;
    let tenant = admin
        .json(Method::GET, &tenant_path, None, "read tenant")
        .await?;
    assert_eq!(tenant["allowedClusters"], json!([cluster]), "{tenant}");

    admin
        .json(
            Method::PUT,
            &names.namespace_path(),
            Some(json!({ "schema_compatibility_strategy": "FULL" })),
            "create namespace",
        )
        .await?;
    let listed = admin
        .json(
            Method::GET,
            &format!("namespaces/{}", names.tenant),
            None,
            "list namespaces",
        )
        .await?;
    let full_ns = json!(format!("{}/{}", names.tenant, names.namespace));
    assert!(
        listed.as_array().is_some_and(|l| l.contains(&full_ns)),
        "{listed} lacks {full_ns}"
    );

    // The broker creates no topic on first use: it is created here.
    admin
        .json(
            Method::PUT,
            &names.topic_path(),
            Some(json!({})),
            "create topic",
        )
        .await?;
    admin
        .json(
            Method::POST,
            &names.schema_path(),
            Some(avro_payload(ORDER_SCHEMA)),
            "upload schema",
        )
        .await?;
    let schema = admin
        .json(Method::GET, &names.schema_path(), None, "read schema")
        .await?;
    assert_eq!(schema["type"], "AVRO", "{schema}");
    assert_eq!(schema["data"], ORDER_SCHEMA, "{schema}");
    Ok(())
}

/// Deletes the topic (forced: a failed body may leave clients connected, and
/// its schema goes with it), namespace and tenant, and checks each is gone.
async fn teardown(admin: &Admin, names: &Names) -> Result<()> {
    delete(
        admin,
        &format!("{}?force=true", names.topic_path()),
        "topic",
    )
    .await?;
    let listed = admin
        .json(
            Method::GET,
            &format!("persistent/{}/{}", names.tenant, names.namespace),
            None,
            "list topics",
        )
        .await?;
    if listed
        .as_array()
        .is_some_and(|l| l.contains(&json!(names.full_topic())))
    {
        bail!("deleted topic is still listed: {listed}");
    }
    // Stats is stricter than the listing: it also catches a topic still loaded.
    assert_gone(admin, &format!("{}/stats", names.topic_path()), "topic").await?;
    // The broker refuses forced deletion of namespaces and tenants; both are empty by now.
    delete(admin, &names.namespace_path(), "namespace").await?;
    assert_gone(admin, &names.namespace_path(), "namespace").await?;
    let tenant_path = format!("tenants/{}", names.tenant);
    delete(admin, &tenant_path, "tenant").await?;
    assert_gone(admin, &tenant_path, "tenant").await
}

async fn delete(admin: &Admin, path: &str, what: &str) -> Result<()> {
    let response = admin.request(Method::DELETE, path).send().await?;
    // Already gone counts as cleaned up (the body may have failed early).
    if response.status() != StatusCode::NOT_FOUND {
        expect_success(response, &format!("delete {what}")).await?;
    }
    Ok(())
}

async fn assert_gone(admin: &Admin, path: &str, what: &str) -> Result<()> {
    let status = admin.status(path).await?;
    if status != StatusCode::NOT_FOUND {
        bail!("{what} still answers {status} at {path}");
    }
    Ok(())
}

/// Runs `body` on a fresh tenant, namespace and topic with `ORDER_SCHEMA`,
/// then removes them whatever the outcome.
async fn on_fresh_topic(
    body: impl AsyncFnOnce(&Stack, &Admin, &Names) -> Result<()>,
) -> Result<()> {
    let stack = Stack::get().await?;
    let admin = Admin::new(stack)?;
    let names = Names::new();
    let outcome = match provision(&admin, &names).await {
        // Boxed: the `pulsar` crate's futures would overflow the test thread's stack.
        Ok(()) => Box::pin(body(stack, &admin, &names)).await,
        Err(e) => Err(e),
    };
    let cleanup = teardown(&admin, &names).await;
    with_cleanup(outcome, cleanup)
}

/// Closes both ends, so that nothing stays connected to a topic being deleted.
async fn close(
    mut producer: Producer<TokioExecutor>,
    mut consumer: Consumer<Vec<u8>, TokioExecutor>,
) -> Result<()> {
    within("closing the producer", producer.close())
        .await?
        .context("closing the producer")?;
    within("closing the consumer", consumer.close())
        .await?
        .context("closing the consumer")
}

fn avro_schema(definition: &str) -> proto::Schema {
    pulsar_client::avro_schema("OrderPlaced", definition)
}

async fn connect(stack: &Stack, token: &str) -> Result<Pulsar<TokioExecutor>> {
    pulsar_client::connect(&stack.pulsar.service_url, token).await
}

async fn new_producer(
    client: &Pulsar<TokioExecutor>,
    names: &Names,
    schema: Option<&str>,
) -> Result<Result<Producer<TokioExecutor>, pulsar::Error>> {
    let schema = schema.map(avro_schema);
    pulsar_client::new_producer(client, &names.full_topic(), &unique("producer"), schema).await
}

async fn subscribe(
    client: &Pulsar<TokioExecutor>,
    names: &Names,
) -> Result<Result<Consumer<Vec<u8>, TokioExecutor>, pulsar::Error>> {
    let schema = avro_schema(ORDER_SCHEMA);
    let (topic, name) = (names.full_topic(), unique("consumer"));
    pulsar_client::subscribe(client, &topic, SUBSCRIPTION, &name, schema).await
}

/// Pulsar carries an Avro message as one bare datum (no container, no header).
fn encode(schema: &AvroSchema, order: &OrderPlaced) -> Result<Vec<u8>> {
    Ok(GenericDatumWriter::builder(schema)
        .build()?
        .write_ser_to_vec(order)?)
}

fn decode(schema: &AvroSchema, mut bytes: &[u8]) -> Result<OrderPlaced> {
    let order = GenericDatumReader::builder(schema)
        .build()?
        .read_deser(&mut bytes)?;
    if !bytes.is_empty() {
        bail!("{} bytes left after the Avro datum", bytes.len());
    }
    Ok(order)
}

/// Publishes one Avro-encoded order and returns its message id as the broker acknowledged it.
async fn publish(
    producer: &mut Producer<TokioExecutor>,
    schema: &AvroSchema,
    order: &OrderPlaced,
) -> Result<proto::MessageIdData> {
    let message = producer::Message {
        payload: encode(schema, order)?,
        properties: HashMap::from([("origin".to_string(), "ossature-e2e".to_string())]),
        ..producer::Message::default()
    };
    pulsar_client::send(producer, message).await
}

async fn receive(consumer: &mut Consumer<Vec<u8>, TokioExecutor>) -> Result<Received<Vec<u8>>> {
    within("receiving", consumer.next())
        .await?
        .context("the consumer's stream ended")?
        .context("receiving")
}

async fn ack(
    consumer: &mut Consumer<Vec<u8>, TokioExecutor>,
    message: &Received<Vec<u8>>,
) -> Result<()> {
    within("acknowledging", consumer.ack(message))
        .await?
        .context("acknowledging")
}

fn same_id(a: &proto::MessageIdData, b: &proto::MessageIdData) -> bool {
    (a.ledger_id, a.entry_id) == (b.ledger_id, b.entry_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_must_carry_the_registered_avro_schema() -> Result<()> {
    on_fresh_topic(schema_body).await
}

async fn schema_body(stack: &Stack, admin: &Admin, names: &Names) -> Result<()> {
    let schema = AvroSchema::parse_str(ORDER_SCHEMA)?;
    let client = connect(stack, &stack.pulsar.token).await?;

    // Subscribe first so no message can predate the cursor.
    let mut consumer = subscribe(&client, names).await?.context("subscribing")?;
    let mut producer = new_producer(&client, names, Some(ORDER_SCHEMA))
        .await?
        .context("a producer with the registered schema")?;

    let orders: Vec<OrderPlaced> = (1..=3)
        .map(|n| OrderPlaced {
            id: format!("order-{n}"),
            quantity: n * 10,
        })
        .collect();
    let mut sent = Vec::new();
    for order in &orders {
        sent.push(publish(&mut producer, &schema, order).await?);
    }

    // The version the admin API reports is the one each message carries.
    let registered = admin
        .json(Method::GET, &names.schema_path(), None, "read schema")
        .await?;
    let version = registered["version"]
        .as_u64()
        .with_context(|| format!("the schema has no version: {registered}"))?;
    for (order, sent_id) in orders.iter().zip(&sent) {
        let message = receive(&mut consumer).await?;
        assert!(
            same_id(message.message_id(), sent_id),
            "received {:?}, sent {sent_id:?}",
            message.message_id()
        );
        assert_eq!(&decode(&schema, &message.payload.data)?, order);
        let metadata = message.metadata();
        let origin = metadata.properties.iter().find(|p| p.key == "origin");
        assert_eq!(
            origin.map(|p| p.value.as_str()),
            Some("ossature-e2e"),
            "{:?}",
            metadata.properties
        );
        let carried = metadata
            .schema_version
            .as_deref()
            .and_then(|v| <[u8; 8]>::try_from(v).ok())
            .map(u64::from_be_bytes);
        assert_eq!(carried, Some(version), "schema version of {order:?}");
        ack(&mut consumer, &message).await?;
    }

    // Enforced schemas: no schema at all is refused...
    expect_refused(
        new_producer(&client, names, None).await?,
        "IncompatibleSchema",
        "a producer with no schema",
    )?;
    // ...and so is a schema the broker judges incompatible.
    let compatibility = admin
        .request(Method::POST, &names.compatibility_path())
        .json(&avro_payload(INCOMPATIBLE_SCHEMA))
        .send()
        .await?;
    let status = compatibility.status();
    let answer = compatibility.text().await?;
    // Pulsar 4.0 answers an incompatible Avro schema with an error, not with `false`.
    let incompatible = if status.is_success() {
        serde_json::from_str::<Value>(&answer)?["isCompatibility"] == json!(false)
    } else {
        answer.contains("IncompatibleSchemaException")
    };
    assert!(incompatible, "compatibility check: {status}: {answer}");
    expect_refused(
        new_producer(&client, names, Some(INCOMPATIBLE_SCHEMA)).await?,
        "IncompatibleSchema",
        "a producer with an incompatible schema",
    )?;
    let versions = admin
        .json(
            Method::GET,
            &format!(
                "schemas/{}/{}/{}/schemas",
                names.tenant, names.namespace, names.topic
            ),
            None,
            "list schema versions",
        )
        .await?;
    assert_eq!(
        versions["getSchemaResponses"].as_array().map(Vec::len),
        Some(1),
        "a refused producer registered a schema: {versions}"
    );

    close(producer, consumer).await?;
    // Acknowledgements get no answer, so the backlog is waited for.
    let stats_path = format!("{}/stats", names.topic_path());
    eventually(
        "every message acknowledged",
        OPERATION_TIMEOUT,
        Duration::from_millis(200),
        || async {
            let stats = admin
                .json(Method::GET, &stats_path, None, "topic stats")
                .await?;
            let subscription = &stats["subscriptions"][SUBSCRIPTION];
            Ok(if subscription["msgBacklog"] == json!(0) {
                Check::Done(())
            } else {
                Check::Pending(format!("subscription {subscription}"))
            })
        },
    )
    .await
}

/// A token for `role`, signed by OpenBao's transit key as the operator signs
/// services' tokens.
async fn mint_token(stack: &Stack, role: &str) -> Result<String> {
    let input = token_signing_input(&token_claims(role, Timestamp::now()));
    let response = http_client()?
        .post(format!(
            "{}/v1/pulsar-tokens/sign/pulsar",
            stack.openbao.addr
        ))
        .header("X-Vault-Token", &stack.openbao.token)
        .json(&json!({
            "input": B64.encode(&input),
            "hash_algorithm": "sha2-256",
            "marshaling_algorithm": "jws",
        }))
        .send()
        .await?;
    let signed: Value = expect_success(response, "signing a token")
        .await?
        .json()
        .await?;
    signed["data"]["signature"]
        .as_str()
        .and_then(|s| token_from_signature(&input, s))
        .with_context(|| format!("transit answered no usable signature: {signed}"))
}

/// The topic's grants, role by role, as the admin API reports them.
async fn grants(admin: &Admin, names: &Names) -> Result<Value> {
    let path = format!("{}/permissions", names.topic_path());
    admin.json(Method::GET, &path, None, "read grants").await
}

/// A probe for `eventually`: done once the broker lets a producer in.
async fn let_in(
    client: &Pulsar<TokioExecutor>,
    names: &Names,
) -> Result<Check<Producer<TokioExecutor>>> {
    Ok(
        match new_producer(client, names, Some(ORDER_SCHEMA)).await? {
            Ok(producer) => Check::Done(producer),
            Err(e) if e.to_string().contains("AuthorizationError") => Check::Pending(e.to_string()),
            Err(e) => return Err(e).context("a producer after the grant"),
        },
    )
}

/// A probe for `eventually`: done once the broker refuses a producer.
async fn refused(client: &Pulsar<TokioExecutor>, names: &Names) -> Result<Check<()>> {
    Ok(
        match new_producer(client, names, Some(ORDER_SCHEMA)).await? {
            Ok(mut producer) => {
                let _ = within("closing a producer", producer.close()).await;
                Check::Pending("a producer was let in".into())
            }
            Err(e) if e.to_string().contains("AuthorizationError") => Check::Done(()),
            Err(e) => return Err(e).context("a producer after the revocation"),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_produces_and_consumes_only_while_granted() -> Result<()> {
    on_fresh_topic(grant_body).await
}

async fn grant_body(stack: &Stack, admin: &Admin, names: &Names) -> Result<()> {
    let schema = AvroSchema::parse_str(ORDER_SCHEMA)?;
    let role = unique("e2e-service");
    let token = mint_token(stack, &role).await?;
    // The broker authenticates the role, and so lets it connect.
    let client = connect(stack, &token).await?;

    expect_refused(
        new_producer(&client, names, Some(ORDER_SCHEMA)).await?,
        "AuthorizationError",
        "a producer without a grant",
    )?;
    expect_refused(
        subscribe(&client, names).await?,
        "AuthorizationError",
        "a consumer without a grant",
    )?;

    admin
        .json(
            Method::POST,
            &names.permissions_path(&role),
            Some(json!(["produce", "consume"])),
            "grant",
        )
        .await?;
    let granted = grants(admin, names).await?;
    let mut actions: Vec<&str> = granted[&role]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    actions.sort_unstable();
    assert_eq!(actions, ["consume", "produce"], "{granted}");

    // Both actions come with one policy write: once a producer is let in, a consumer is too.
    let mut producer = eventually(
        "the grant to let a producer in",
        POLICY_TIMEOUT,
        Duration::from_millis(250),
        || let_in(&client, names),
    )
    .await?;
    let mut consumer = subscribe(&client, names)
        .await?
        .context("a consumer with the grant")?;
    let order = OrderPlaced {
        id: role.clone(),
        quantity: 1,
    };
    let sent = publish(&mut producer, &schema, &order).await?;
    let message = receive(&mut consumer).await?;
    assert!(same_id(message.message_id(), &sent));
    assert_eq!(decode(&schema, &message.payload.data)?, order);
    ack(&mut consumer, &message).await?;
    close(producer, consumer).await?;

    admin
        .json(
            Method::DELETE,
            &names.permissions_path(&role),
            None,
            "revoke",
        )
        .await?;
    let remaining = grants(admin, names).await?;
    assert!(remaining.get(&role).is_none(), "{remaining}");
    eventually(
        "the revocation to refuse a new producer",
        POLICY_TIMEOUT,
        Duration::from_millis(250),
        || refused(&client, names),
    )
    .await?;
    expect_refused(
        subscribe(&client, names).await?,
        "AuthorizationError",
        "a consumer after the revocation",
    )
}
