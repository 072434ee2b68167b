//! Tenant, namespace and topic lifecycle on real Pulsar, with a message
//! produced and consumed end to end.
//!
//! Messaging goes through Pulsar's WebSocket API because the `pulsar` crate's
//! build script needs `protoc`, which this machine lacks.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use ossature_e2e::{Stack, expect_success, unique, with_cleanup};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

const WS_TIMEOUT: Duration = Duration::from_secs(30);

struct Names {
    admin: String,
    authorization: reqwest::header::HeaderValue,
    tenant: String,
    namespace: String,
    topic: String,
}

impl Names {
    fn tenant_url(&self) -> String {
        format!("{}/admin/v2/tenants/{}", self.admin, self.tenant)
    }
    fn namespace_url(&self) -> String {
        format!(
            "{}/admin/v2/namespaces/{}/{}",
            self.admin, self.tenant, self.namespace
        )
    }
    fn topic_path(&self) -> String {
        format!(
            "persistent/{}/{}/{}",
            self.tenant, self.namespace, self.topic
        )
    }
    fn topic_url(&self) -> String {
        format!("{}/admin/v2/{}", self.admin, self.topic_path())
    }
    fn ws_base(&self) -> String {
        // The WebSocket service shares the admin (web) port.
        let rest = self
            .admin
            .strip_prefix("http://")
            .map(|r| format!("ws://{r}"))
            .or_else(|| {
                self.admin
                    .strip_prefix("https://")
                    .map(|r| format!("wss://{r}"))
            });
        rest.unwrap_or_else(|| self.admin.clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_namespace_topic_roundtrip() -> Result<()> {
    let stack = Stack::get().await?;
    let http = stack.pulsar.admin_client()?;
    let admin = stack.pulsar.admin_url.clone();

    let clusters: Vec<String> = expect_success(
        http.get(format!("{admin}/admin/v2/clusters"))
            .send()
            .await?,
        "list clusters",
    )
    .await?
    .json()
    .await?;
    let cluster = clusters
        .first()
        .context("Pulsar reports no cluster")?
        .clone();

    let names = Names {
        admin,
        authorization: stack.pulsar.authorization(),
        tenant: unique("e2e"),
        namespace: unique("ns"),
        topic: unique("topic"),
    };

    expect_success(
        http.put(names.tenant_url())
            .json(&json!({ "allowedClusters": [cluster], "adminRoles": [] }))
            .send()
            .await?,
        "create tenant",
    )
    .await?;

    let body = exercise(&http, &names, &cluster).await;
    let cleanup = teardown(&http, &names).await;
    with_cleanup(body, cleanup)
}

async fn exercise(http: &Client, names: &Names, cluster: &str) -> Result<()> {
    let tenant: Value = expect_success(http.get(names.tenant_url()).send().await?, "read tenant")
        .await?
        .json()
        .await?;
    assert_eq!(tenant["allowedClusters"], json!([cluster]), "{tenant}");

    expect_success(
        // Empty policies: the broker fills in its defaults.
        http.put(names.namespace_url())
            .json(&json!({}))
            .send()
            .await?,
        "create namespace",
    )
    .await?;
    let listed: Vec<String> = expect_success(
        http.get(format!(
            "{}/admin/v2/namespaces/{}",
            names.admin, names.tenant
        ))
        .send()
        .await?,
        "list namespaces",
    )
    .await?
    .json()
    .await?;
    let full_ns = format!("{}/{}", names.tenant, names.namespace);
    assert!(listed.contains(&full_ns), "{listed:?} lacks {full_ns}");

    // Non-partitioned topic with no properties.
    expect_success(
        http.put(names.topic_url()).json(&json!({})).send().await?,
        "create topic",
    )
    .await?;

    let ws = names.ws_base();
    let path = names.topic_path();
    // Subscribe before producing so the message cannot predate the cursor.
    // The WebSocket service authenticates as the admin API does.
    let authorized = |url: String| -> Result<_> {
        let mut request = url.into_client_request()?;
        request
            .headers_mut()
            .insert(reqwest::header::AUTHORIZATION, names.authorization.clone());
        Ok(request)
    };
    let (mut consumer, _) =
        connect_async(authorized(format!("{ws}/ws/v2/consumer/{path}/e2e-sub"))?)
            .await
            .context("opening WebSocket consumer")?;
    let (mut producer, _) = connect_async(authorized(format!("{ws}/ws/v2/producer/{path}"))?)
        .await
        .context("opening WebSocket producer")?;

    let payload = format!("hello from {}", names.topic);
    producer
        .send(Message::text(
            json!({
                "payload": B64.encode(&payload),
                "properties": { "origin": "ossature-e2e" },
                "context": "m1",
            })
            .to_string(),
        ))
        .await?;
    let ack = next_json(&mut producer, "producer ack").await?;
    assert_eq!(ack["result"], "ok", "{ack}");
    assert_eq!(ack["context"], "m1", "{ack}");
    let produced_id = ack["messageId"].as_str().context("ack lacks messageId")?;

    let received = next_json(&mut consumer, "consumed message").await?;
    let data = received["payload"]
        .as_str()
        .context("message lacks payload")?;
    assert_eq!(String::from_utf8(B64.decode(data)?)?, payload);
    assert_eq!(
        received["properties"]["origin"], "ossature-e2e",
        "{received}"
    );
    let consumed_id = received["messageId"]
        .as_str()
        .context("message lacks messageId")?;
    assert_eq!(consumed_id, produced_id);

    consumer
        .send(Message::text(
            json!({ "messageId": consumed_id }).to_string(),
        ))
        .await?;
    // Closing both ends first lets the topic be deleted without force.
    producer.close(None).await?;
    consumer.close(None).await?;

    let stats: Value = expect_success(
        http.get(format!("{}/stats", names.topic_url()))
            .send()
            .await?,
        "topic stats",
    )
    .await?
    .json()
    .await?;
    assert!(
        stats["subscriptions"].get("e2e-sub").is_some(),
        "subscription missing from stats: {stats}"
    );
    Ok(())
}

/// Reads the next text frame as JSON, skipping control frames.
async fn next_json(socket: &mut Socket, what: &str) -> Result<Value> {
    let read = async {
        while let Some(frame) = socket.next().await {
            match frame? {
                Message::Text(text) => return Ok(serde_json::from_str(text.as_str())?),
                Message::Close(reason) => bail!("{what}: socket closed: {reason:?}"),
                _ => continue,
            }
        }
        bail!("{what}: socket ended")
    };
    tokio::time::timeout(WS_TIMEOUT, read)
        .await
        .with_context(|| format!("{what}: nothing within {WS_TIMEOUT:?}"))?
}

async fn delete(http: &Client, url: &str, what: &str) -> Result<()> {
    let response = http.delete(url).send().await?;
    // Already gone counts as cleaned up (the body may have failed early).
    if response.status() != StatusCode::NOT_FOUND {
        expect_success(response, what).await?;
    }
    Ok(())
}

async fn assert_gone(http: &Client, url: &str, what: &str) -> Result<()> {
    let status = http.get(url).send().await?.status();
    if status != StatusCode::NOT_FOUND {
        bail!("{what} still answers {status} at {url}");
    }
    Ok(())
}

async fn teardown(http: &Client, names: &Names) -> Result<()> {
    // force closes any consumer a failed body left connected.
    delete(
        http,
        &format!("{}?force=true", names.topic_url()),
        "delete topic",
    )
    .await?;
    let topics_url = format!(
        "{}/admin/v2/persistent/{}/{}",
        names.admin, names.tenant, names.namespace
    );
    let listed: Vec<String> = expect_success(http.get(&topics_url).send().await?, "list topics")
        .await?
        .json()
        .await?;
    let full_topic = format!(
        "persistent://{}/{}/{}",
        names.tenant, names.namespace, names.topic
    );
    if listed.contains(&full_topic) {
        bail!("deleted topic is still listed: {listed:?}");
    }
    // Stats is stricter than the listing: it also catches a topic still loaded in the broker.
    assert_gone(http, &format!("{}/stats", names.topic_url()), "topic").await?;
    delete(http, &names.namespace_url(), "delete namespace").await?;
    assert_gone(http, &names.namespace_url(), "namespace").await?;
    delete(http, &names.tenant_url(), "delete tenant").await?;
    assert_gone(http, &names.tenant_url(), "tenant").await?;
    Ok(())
}
