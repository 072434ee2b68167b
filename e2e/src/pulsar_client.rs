//! A client of Pulsar's binary protocol presenting a token, with every
//! operation bounded so a broker that never answers fails a test instead
//! of hanging it. Shared by the e2e tests and the operator's tests that
//! use the tokens it mints.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use pulsar::proto::{self, schema::Type as SchemaType};
use pulsar::{
    Authentication, ConnectionRetryOptions, Consumer, ConsumerOptions, OperationRetryOptions,
    Producer, ProducerOptions, Pulsar, SubType, TokioExecutor, producer,
};

/// Ceiling of one client operation (connect, create a producer, receive).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Bounds a client operation by `OPERATION_TIMEOUT`. Boxed: the `pulsar`
/// crate's futures are large enough to overflow a test thread's stack.
pub async fn within<T>(what: &str, operation: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(OPERATION_TIMEOUT, Box::pin(operation))
        .await
        .with_context(|| format!("{what}: no answer within {OPERATION_TIMEOUT:?}"))
}

/// A client that presents `token`. Retries are few: a refusal must come
/// back as an error, not as a wait.
pub async fn connect(service_url: &str, token: &str) -> Result<Pulsar<TokioExecutor>> {
    let builder = Pulsar::builder(service_url.to_string(), TokioExecutor)
        .with_auth(Authentication {
            name: "token".into(),
            data: token.as_bytes().to_vec(),
        })
        .with_connection_retry_options(ConnectionRetryOptions {
            max_retries: 3,
            connection_timeout: OPERATION_TIMEOUT,
            ..ConnectionRetryOptions::default()
        })
        .with_operation_retry_options(OperationRetryOptions {
            operation_timeout: OPERATION_TIMEOUT,
            retry_delay: Duration::from_millis(500),
            max_retries: Some(3),
        });
    within("connecting to Pulsar", builder.build())
        .await?
        .context("connecting to Pulsar")
}

/// An Avro schema as producers and consumers present it.
pub fn avro_schema(name: &str, definition: &str) -> proto::Schema {
    proto::Schema {
        name: name.into(),
        schema_data: definition.as_bytes().to_vec(),
        r#type: SchemaType::Avro as i32,
        properties: vec![],
    }
}

/// Asks for a producer on `topic`; the inner result is the broker's answer.
pub async fn new_producer(
    client: &Pulsar<TokioExecutor>,
    topic: &str,
    name: &str,
    schema: Option<proto::Schema>,
) -> Result<Result<Producer<TokioExecutor>, pulsar::Error>> {
    let options = ProducerOptions {
        schema,
        ..ProducerOptions::default()
    };
    let build = client
        .producer()
        .with_topic(topic)
        .with_name(name)
        .with_options(options)
        .build();
    within("creating a producer", build).await
}

/// Subscribes to `topic` with `schema`; the inner result is the broker's answer.
pub async fn subscribe(
    client: &Pulsar<TokioExecutor>,
    topic: &str,
    subscription: &str,
    name: &str,
    schema: proto::Schema,
) -> Result<Result<Consumer<Vec<u8>, TokioExecutor>, pulsar::Error>> {
    let build = client
        .consumer()
        .with_topic(topic)
        .with_subscription(subscription)
        .with_subscription_type(SubType::Exclusive)
        .with_consumer_name(name)
        .with_options(ConsumerOptions::default().with_schema(schema))
        .build::<Vec<u8>>();
    within("subscribing", build).await
}

/// Publishes one payload; the message id the broker acknowledged.
pub async fn send(
    producer: &mut Producer<TokioExecutor>,
    message: producer::Message,
) -> Result<proto::MessageIdData> {
    let receipt = within("publishing", async {
        producer.send_non_blocking(message).await?.await
    })
    .await?
    .context("publishing")?;
    receipt
        .message_id
        .context("the send receipt has no message id")
}

/// Fails unless `answer` is a refusal whose text names `reason`.
pub fn expect_refused<T>(answer: Result<T, pulsar::Error>, reason: &str, what: &str) -> Result<()> {
    match answer {
        Ok(_) => bail!("{what} was let in"),
        Err(e) if e.to_string().contains(reason) => Ok(()),
        Err(e) => bail!("{what} failed, but not with {reason}: {e}"),
    }
}
