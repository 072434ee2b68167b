//! A topic's schema in the broker's registry: the latest version, the
//! compatibility check, and the upload. Never a deletion: a live schema is
//! what the topic's clients rely on.

use std::collections::BTreeMap;

use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;

use ossature_model::topics::PulsarTopic;

use super::{Pulsar, Reply, refused};
use crate::adapters::BackendError;

/// The latest schema of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LiveSchema {
    pub version: i64,
    #[serde(rename = "type")]
    pub schema_type: String,
    /// The definition, as uploaded.
    pub data: String,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// The broker's answer to a definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaVerdict {
    /// Registered (or registrable) as this version.
    Accepted(Option<i64>),
    /// Refused by the compatibility strategy, in the broker's words.
    Incompatible(String),
    /// Not a definition the broker takes, in its words.
    Invalid(String),
}

#[derive(Deserialize)]
struct Check {
    compatibility: bool,
    #[serde(default, rename = "schemaCompatibilityStrategy")]
    strategy: Option<String>,
}

#[derive(Deserialize)]
struct Uploaded {
    version: Version,
}

#[derive(Deserialize)]
struct Version {
    version: i64,
}

/// The broker's own words in an error answer: the `reason` of its JSON, or
/// the title of its HTML page, without the stack trace, on one line.
pub fn broker_words(body: &str) -> String {
    let reason = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["reason"].as_str().map(String::from))
        .or_else(|| {
            let start = body.find("<title>")? + "<title>".len();
            let end = body[start..].find("</title>")? + start;
            Some(
                body[start..end]
                    .replace("&quot;", "\"")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&amp;", "&"),
            )
        })
        .unwrap_or_else(|| body.to_string());
    let message = match reason.split_once("Message:") {
        Some((_, rest)) => rest,
        None => &reason,
    };
    let message = message.split("Stacktrace:").next().unwrap_or_default();
    // Error 409 prefixes the title of Jetty's page.
    let message = message.trim().trim_start_matches("Error 409").trim();
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// How the broker answered a check or an upload: a refusal by the
/// strategy comes as 409, or as 500 carrying `IncompatibleSchemaException`.
fn verdict(reply: &Reply) -> Option<SchemaVerdict> {
    let incompatible = reply.body.contains("IncompatibleSchemaException")
        || reply.body.contains("Incompatible schema")
        || reply.body.contains("compatibility check");
    match reply.status {
        StatusCode::CONFLICT => Some(SchemaVerdict::Incompatible(broker_words(&reply.body))),
        s if s.is_server_error() && incompatible => {
            Some(SchemaVerdict::Incompatible(broker_words(&reply.body)))
        }
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
            Some(SchemaVerdict::Invalid(broker_words(&reply.body)))
        }
        _ => None,
    }
}

impl Pulsar {
    fn schema_url(&self, topic: &PulsarTopic, tail: &str) -> Url {
        self.url(&[
            "admin",
            "v2",
            "schemas",
            &topic.tenant,
            &topic.namespace,
            &topic.local,
            tail,
        ])
    }

    /// The topic's latest schema; `None` when it has none.
    pub async fn latest_schema(
        &self,
        topic: &PulsarTopic,
    ) -> Result<Option<LiveSchema>, BackendError> {
        self.read_optional(
            self.schema_url(topic, "schema"),
            &format!("read the schema of topic {topic}"),
        )
        .await
    }

    /// Whether the broker would register `payload` (an upload body) under
    /// the topic's compatibility strategy. Nothing is written.
    pub async fn check_schema(
        &self,
        topic: &PulsarTopic,
        payload: &Value,
    ) -> Result<SchemaVerdict, BackendError> {
        let action = format!("check a schema of topic {topic}");
        let reply = self
            .send(
                Method::POST,
                self.schema_url(topic, "compatibility"),
                Some(payload.clone()),
            )
            .await?;
        if reply.status.is_success() {
            let check: Check = super::parse(&action, &reply.body)?;
            return Ok(if check.compatibility {
                SchemaVerdict::Accepted(None)
            } else {
                SchemaVerdict::Incompatible(format!(
                    "the broker finds it incompatible with the registered versions under strategy {}",
                    check.strategy.as_deref().unwrap_or("of the topic")
                ))
            });
        }
        verdict(&reply).ok_or_else(|| refused(&action, &reply))
    }

    /// Registers `payload` as the topic's next schema version.
    pub async fn upload_schema(
        &self,
        topic: &PulsarTopic,
        payload: &Value,
    ) -> Result<SchemaVerdict, BackendError> {
        let action = format!("upload a schema of topic {topic}");
        let reply = self
            .send(
                Method::POST,
                self.schema_url(topic, "schema"),
                Some(payload.clone()),
            )
            .await?;
        if reply.status.is_success() {
            let uploaded: Uploaded = super::parse(&action, &reply.body)?;
            return Ok(SchemaVerdict::Accepted(Some(uploaded.version.version)));
        }
        verdict(&reply).ok_or_else(|| refused(&action, &reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_words_leave_out_its_stack_trace() {
        let json = r#"{"reason":"\n --- An unexpected error occurred in the server ---\n\nMessage: Error during schema compatibility check with strategy FULL: org.apache.avro.SchemaValidationException: Unable to read schema: \n{\n  \"type\" : \"record\"\n}\n\nStacktrace:\n\norg.apache.pulsar.broker.service.schema.exceptions.IncompatibleSchemaException: at x"}"#;
        assert_eq!(
            broker_words(json),
            r#"Error during schema compatibility check with strategy FULL: org.apache.avro.SchemaValidationException: Unable to read schema: { "type" : "record" }"#
        );
        let html = "<html><head><title>Error 409 Incompatible schema: &quot;id&quot; changed\n</title></head></html>";
        assert_eq!(broker_words(html), r#"Incompatible schema: "id" changed"#);
        assert_eq!(broker_words("plain words"), "plain words");
    }

    #[test]
    fn refusals_by_the_strategy_are_incompatible() {
        let reply = |status: u16, body: &str| Reply {
            status: StatusCode::from_u16(status).unwrap(),
            body: body.into(),
        };
        assert!(matches!(
            verdict(&reply(
                500,
                r#"{"reason":"Message: x IncompatibleSchemaException y"}"#
            )),
            Some(SchemaVerdict::Incompatible(_))
        ));
        assert!(matches!(
            verdict(&reply(409, "<title>Error 409 no</title>")),
            Some(SchemaVerdict::Incompatible(w)) if w == "no"
        ));
        assert!(matches!(
            verdict(&reply(422, r#"{"reason":"Invalid schema definition"}"#)),
            Some(SchemaVerdict::Invalid(w)) if w == "Invalid schema definition"
        ));
        assert_eq!(verdict(&reply(500, r#"{"reason":"bookie down"}"#)), None);
        assert_eq!(verdict(&reply(403, "")), None);
    }

    #[test]
    fn the_latest_schema_reads_as_the_broker_returns_it() {
        let live: LiveSchema = serde_json::from_str(
            r#"{"version":0,"type":"AVRO","timestamp":1,"data":"{}","properties":{"a":"b"}}"#,
        )
        .unwrap();
        assert_eq!(live.version, 0);
        assert_eq!(live.schema_type, "AVRO");
        assert_eq!(live.properties["a"], "b");
    }
}
