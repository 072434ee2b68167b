//! Prometheus' HTTP API, as tests ask it (the stack's Prometheus,
//! `OSSATURE_PROMETHEUS_URL`).

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The `data` of a successful answer of `path` with `params`.
pub async fn api(base: &str, path: &str, params: &[(&str, &str)]) -> Result<Value> {
    let url = reqwest::Url::parse_with_params(&format!("{base}{path}"), params)?;
    let answer: Value = reqwest::get(url)
        .await
        .with_context(|| format!("asking Prometheus {path}"))?
        .json()
        .await
        .with_context(|| format!("reading Prometheus' answer to {path}"))?;
    if answer["status"] != "success" {
        bail!("Prometheus {path} {params:?}: {answer}");
    }
    Ok(answer["data"].clone())
}

/// An instant query's result vector.
pub async fn query(base: &str, expr: &str) -> Result<Vec<Value>> {
    let data = api(base, "/api/v1/query", &[("query", expr)]).await?;
    Ok(data["result"].as_array().cloned().unwrap_or_default())
}
