//! Ossature's local platform stack: every backend as a real server, obtained
//! from package registries and run on loopback by `ossature-dev`.

pub mod components;
mod files;
pub mod health;
pub mod keda;
pub mod kubernetes_auth;
pub mod layout;
mod obtain;
pub mod pki;
mod process;
pub mod prometheus;
pub mod pulsar_auth;
pub mod stack;
pub mod tools;
pub mod versions;

use std::collections::BTreeMap;

use anyhow::Result;

pub use layout::Layout;

/// Selects the process-wide TLS provider; both reqwest and kube use rustls.
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Brings the stack up unless every component already serves, and returns
/// the `env` contract (the same names and values `ossature-dev env` prints).
pub async fn ensure_up() -> Result<BTreeMap<String, String>> {
    init_tls();
    let layout = Layout::from_env()?;
    let rows = stack::status(&layout).await;
    if rows.iter().any(|r| r.state != stack::State::Ready) {
        stack::up(&layout).await?;
    }
    Ok(health::environment(&layout)?
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect())
}
