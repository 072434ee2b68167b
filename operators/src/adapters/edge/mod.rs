//! The edge: where tenant hosts terminate TLS. One trait, [`Edge`], states
//! the desired state per host and is applied in batches; Caddy implements it
//! now ([`caddy::CaddyEdge`]), Fastly or Cloudflare could later.
//!
//! # How each operation maps onto other edges
//!
//! The trait is shaped so that one batch is one unit of change on every edge
//! we know of, and so that private keys are only ever written, never read.
//!
//! **`apply(hosts)`** — make these hosts exactly as stated, leave others.
//! - Caddy: one read and at most one `If-Match` write for each of three
//!   subtrees it owns by `@id` (certificate files, TLS connection policies,
//!   routes); each write is one configuration reload.
//! - Fastly: a batch is one service version. Clone the active version
//!   (`PUT /service/{id}/version/{v}/clone`), add or change the host's domain
//!   (`/version/{v}/domain`), backend (`Upstream::Proxy`) or synthetic
//!   response object with a request condition (`Upstream::Static`), then
//!   activate once (`PUT /service/{id}/version/{v}/activate`): one activation
//!   per batch, like one Caddy reload. Certificates are versionless:
//!   `EdgeCertificate::Pem` is a Platform/Custom TLS upload
//!   (`POST /tls/private_keys`, `POST /tls/certificates`, or
//!   `/tls/bulk/certificates`) bound by `POST /tls/activations`;
//!   `EdgeCertificate::Managed` is a TLS subscription (`POST /tls/subscriptions`).
//!   `ClientAuth` is a mutual authentication (`POST /tls/mutual_authentications`
//!   with the CA bundle) linked to the host's TLS activation; `enforced: true`
//!   is `Required`, `false` is `Optional`. `allowed_ranges` is an ACL whose
//!   entries are replaced in one `PATCH /service/{id}/acl/{acl}/entries` and a
//!   condition `!(client.ip ~ acl)` answering 403.
//! - Cloudflare: a host is a custom hostname (Cloudflare for SaaS,
//!   `POST`/`PATCH /zones/{zone}/custom_hostnames`). `Managed` is its
//!   `ssl: {method, type: "dv"}`; `Pem` is `ssl.custom_certificate` and
//!   `ssl.custom_key` (or a zone custom certificate,
//!   `POST /zones/{zone}/custom_certificates`). Custom hostnames have no bulk
//!   endpoint, so a batch there is one call per changed host; everything
//!   else is one call per batch: `ClientAuth` uploads the CA as an mTLS
//!   certificate (`POST /accounts/{account}/mtls_certificates`, `ca: true`)
//!   and binds hosts with `PUT /zones/{zone}/certificate_authorities/hostname_associations`;
//!   `Required` adds a WAF custom rule blocking
//!   `http.host eq "h" and not cf.tls_client_auth.cert_verified`.
//!   `allowed_ranges` is a rule `http.host eq "h" and not ip.src in {...}`
//!   (IP Access rules are zone-wide, so they cannot express per-host lists);
//!   all rules of the batch are one `PUT` of the zone's
//!   `http_request_firewall_custom` ruleset. `Upstream::Proxy` is the custom
//!   hostname's `custom_origin_server`; `Upstream::Static` a Worker route.
//!
//! **`remove(hosts)`** — take the hosts off the edge, with their certificates.
//! - Caddy: the same three writes, without the hosts' objects; key files are
//!   deleted after Caddy no longer refers to them.
//! - Fastly: clone, delete domains/conditions/response objects, activate once;
//!   `DELETE /tls/activations/{id}`, `/tls/certificates/{id}`,
//!   `/tls/private_keys/{id}` or `/tls/subscriptions/{id}`.
//! - Cloudflare: `DELETE /zones/{zone}/custom_hostnames/{id}` (its certificate
//!   goes with it) and one ruleset `PUT` without the hosts' rules.
//!
//! **`observe(desired)`** — what `apply` would change, without writing; a
//! difference on something we wrote is drift.
//! - Caddy: the same three reads as `apply`.
//! - Fastly: `GET /service/{id}/version/{active}/domain`, `/condition`,
//!   `/response_object`, `GET /tls/activations?filter[tls_domain.id]=h`; an
//!   active version we did not activate is drift.
//! - Cloudflare: `GET /zones/{zone}/custom_hostnames?hostname=h` and the
//!   ruleset; rules carry a `ref` naming the host, so edits are found.
//!
//! **`probe()`** — a few small requests telling whether our configuration is
//! still there (an edge restarted without it, or any part of it was wiped).
//! - Caddy: `GET /id/<marker>`, then the `@id` of the policy and certificate
//!   of the host the marker names: one object in each subtree we write to.
//! - Fastly: `GET /service/{id}/details`: the active version is ours.
//! - Cloudflare: `GET` the custom ruleset: its `version` is the one we wrote.

pub mod caddy;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;

use rustls::pki_types::pem::{PemObject, SectionKind};

use super::{BackendError, Change};

/// Everything the edge should do for one host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostState {
    /// A lowercase DNS name, e.g. `shop.acme.example`.
    pub host: String,
    /// The tenant the host belongs to; recorded on the edge.
    pub owner: String,
    pub certificate: EdgeCertificate,
    pub client_auth: Option<ClientAuth>,
    /// Source CIDR ranges (or single addresses) allowed to reach the host;
    /// empty means everyone.
    pub allowed_ranges: Vec<String>,
    pub upstream: Upstream,
}

#[derive(Clone, PartialEq, Eq)]
pub enum EdgeCertificate {
    /// A chain (leaf first) and its private key, both PEM.
    Pem { chain: String, key: String },
    /// The edge obtains and renews the certificate itself.
    Managed,
}

// Never print a private key, not even in a debug log.
impl std::fmt::Debug for EdgeCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EdgeCertificate::Pem { chain, .. } => f
                .debug_struct("Pem")
                .field("chain", chain)
                .field("key", &"<redacted>")
                .finish(),
            EdgeCertificate::Managed => f.write_str("Managed"),
        }
    }
}

/// Client certificates the host asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    /// CA certificates (PEM) that client certificates must chain to.
    pub ca_pem_bundle: String,
    pub mode: ClientAuthMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMode {
    /// A client certificate is verified if given; clients without one pass.
    Optional,
    /// The handshake fails without a certificate of the client CA.
    Required,
}

/// Where a host's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// A fixed 200 answer, until Workloads exist.
    Static { body: String },
    /// An `http://` or `https://` origin, `host[:port]` with no path.
    Proxy { url: String },
}

/// What one batch did, or would do, to one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostChange {
    pub host: String,
    pub change: Change,
    /// The edge had lost or altered what we wrote (not a change of the
    /// desired state): the controller reports `DriftCorrected`.
    pub drift: bool,
}

/// The edge compared with a desired state, without writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// What `apply(desired)` would do, per desired host.
    pub hosts: Vec<HostChange>,
    /// Hosts we manage on the edge that are not in the desired state.
    pub extra: Vec<String>,
}

/// Answer of the cheap liveness check of our configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Configured,
    /// Something of ours is gone (the edge restarted, or some or all of our
    /// configuration was removed): apply everything.
    Missing,
}

/// A failed edge operation.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The desired state cannot be put on any edge; nothing was written.
    #[error("host {host:?}: {reason}")]
    Invalid { host: String, reason: String },
    /// This edge cannot do what was asked; nothing was written.
    #[error("host {host:?}: {reason}")]
    Unsupported { host: String, reason: String },
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The adapter could not write or remove its certificate files.
    #[error("certificate files in {dir}: {source}")]
    Files {
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

impl EdgeError {
    /// Low-cardinality label for Events, conditions and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            EdgeError::Invalid { .. } => "InvalidHost",
            EdgeError::Unsupported { .. } => "UnsupportedByEdge",
            EdgeError::Backend(e) => e.category(),
            EdgeError::Files { .. } => "EdgeFilesFailing",
        }
    }
}

/// An edge that terminates TLS for tenant hosts.
///
/// Methods return `Send` futures so controllers can run them on any task.
pub trait Edge {
    /// Makes each host exactly as stated; hosts not named are left alone.
    /// An unchanged batch makes no writes.
    fn apply(
        &self,
        hosts: &[HostState],
    ) -> impl Future<Output = Result<Vec<HostChange>, EdgeError>> + Send;

    /// Removes the hosts with their routes, policies and certificates;
    /// `Change::Absent` for a host that was not there.
    fn remove(
        &self,
        hosts: &[String],
    ) -> impl Future<Output = Result<Vec<HostChange>, EdgeError>> + Send;

    /// What `apply(desired)` would do, and which managed hosts are extra.
    fn observe(
        &self,
        desired: &[HostState],
    ) -> impl Future<Output = Result<Observation, EdgeError>> + Send;

    /// A few small requests: is our configuration still on the edge?
    fn probe(&self) -> impl Future<Output = Result<Probe, EdgeError>> + Send;
}

/// Checks a whole batch before anything is written: one bad host fails the
/// batch with an error naming it.
pub fn validate(hosts: &[HostState]) -> Result<(), EdgeError> {
    let mut seen = BTreeSet::new();
    for state in hosts {
        let invalid = |reason: String| EdgeError::Invalid {
            host: state.host.clone(),
            reason,
        };
        validate_host(&state.host)?;
        if !seen.insert(state.host.as_str()) {
            return Err(invalid("named twice in one batch".into()));
        }
        if state.owner.trim().is_empty() {
            return Err(invalid("has no owner".into()));
        }
        for range in &state.allowed_ranges {
            parse_range(range).map_err(invalid)?;
        }
        if let EdgeCertificate::Pem { chain, key } = &state.certificate {
            if pem_certificates(chain).map_err(&invalid)?.is_empty() {
                return Err(invalid("certificate chain holds no CERTIFICATE".into()));
            }
            if rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).is_err() {
                return Err(invalid("key is not a PEM private key".into()));
            }
        }
        if let Some(auth) = &state.client_auth
            && pem_certificates(&auth.ca_pem_bundle)
                .map_err(&invalid)?
                .is_empty()
        {
            return Err(invalid("client CA bundle holds no CERTIFICATE".into()));
        }
        if let Upstream::Proxy { url } = &state.upstream {
            proxy_target(url).map_err(invalid)?;
        }
    }
    Ok(())
}

/// A lowercase DNS name of at least two labels; no wildcards, no trailing dot.
pub fn validate_host(host: &str) -> Result<(), EdgeError> {
    let invalid = |reason: &str| EdgeError::Invalid {
        host: host.to_string(),
        reason: reason.to_string(),
    };
    if host.is_empty() || host.len() > 253 {
        return Err(invalid("a DNS name has 1 to 253 characters"));
    }
    let labels: Vec<&str> = host.split('.').collect();
    if labels.len() < 2 {
        return Err(invalid("needs at least two labels, e.g. shop.example"));
    }
    for label in labels {
        let fits = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !fits {
            return Err(invalid(
                "labels are 1 to 63 of a-z, 0-9 and inner '-' (lowercase, no wildcard)",
            ));
        }
    }
    Ok(())
}

/// An address or CIDR range, e.g. `10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7`.
pub fn parse_range(range: &str) -> Result<(IpAddr, u8), String> {
    let (addr, prefix) = match range.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (range, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("allowed range {range:?} is not an IP address or CIDR"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("allowed range {range:?} has a prefix outside 0..={max}"))?,
    };
    Ok((addr, prefix))
}

/// The base64 bodies of the PEM CERTIFICATE blocks, in order (they are the
/// base64 DER that edges' APIs take); other blocks are an error.
pub fn pem_certificates(pem: &str) -> Result<Vec<String>, String> {
    let mut bodies = Vec::new();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem.as_bytes()) {
        match section {
            Ok((SectionKind::Certificate, _)) => {}
            Ok((kind, _)) => return Err(format!("PEM holds a {kind:?} where certificates belong")),
            Err(e) => return Err(format!("PEM does not parse: {e}")),
        }
    }
    let mut current: Option<String> = None;
    for line in pem.lines().map(str::trim) {
        if line == "-----BEGIN CERTIFICATE-----" {
            current = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            bodies.extend(current.take());
        } else if let Some(body) = current.as_mut() {
            body.push_str(line);
        }
    }
    Ok(bodies)
}

/// `(dial address, uses TLS)` of a proxy upstream URL.
pub fn proxy_target(url: &str) -> Result<(String, bool), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("upstream {url:?}: {e}"))?;
    let tls = match parsed.scheme() {
        "http" => false,
        "https" => true,
        other => return Err(format!("upstream {url:?}: scheme {other} is not http(s)")),
    };
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("upstream {url:?} has no host"))?;
    if parsed.path() != "/" || parsed.query().is_some() || !parsed.username().is_empty() {
        return Err(format!(
            "upstream {url:?}: only scheme://host[:port] is supported"
        ));
    }
    let port = parsed.port_or_known_default().unwrap_or(80);
    Ok((format!("{host}:{port}"), tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str =
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUUxbd\nAAAA\n-----END CERTIFICATE-----\n";

    fn state(host: &str) -> HostState {
        HostState {
            host: host.into(),
            owner: "acme".into(),
            certificate: EdgeCertificate::Managed,
            client_auth: None,
            allowed_ranges: vec![],
            upstream: Upstream::Static { body: "hi".into() },
        }
    }

    #[test]
    fn hosts_must_be_lowercase_dns_names() {
        assert!(validate_host("shop.acme.example").is_ok());
        assert!(validate_host("a-1.b").is_ok());
        for bad in [
            "",
            "localhost",
            "Shop.example",
            "*.example.com",
            "-a.example",
            "a..example",
            "a.example.",
            "a_b.example",
        ] {
            let err = validate_host(bad).unwrap_err();
            assert_eq!(err.category(), "InvalidHost", "{bad}");
        }
        let long = format!("{}.example", "a".repeat(64));
        assert!(validate_host(&long).is_err());
    }

    #[test]
    fn ranges_are_addresses_or_cidrs() {
        assert_eq!(
            parse_range("10.0.0.0/8").unwrap(),
            ("10.0.0.0".parse().unwrap(), 8)
        );
        assert_eq!(parse_range("2001:db8::/32").unwrap().1, 32);
        assert_eq!(parse_range("192.0.2.7").unwrap().1, 32);
        assert!(parse_range("10.0.0.0/33").is_err());
        assert!(parse_range("10.0.0/8").is_err());
        assert!(parse_range("everyone").is_err());
    }

    #[test]
    fn a_batch_is_checked_as_a_whole() {
        let mut bad = state("b.example");
        bad.allowed_ranges = vec!["10.0.0.0/8".into(), "nope".into()];
        let err = validate(&[state("a.example"), bad]).unwrap_err();
        assert!(err.to_string().contains("\"b.example\""), "{err}");
        assert!(err.to_string().contains("\"nope\""), "{err}");

        let err = validate(&[state("a.example"), state("a.example")]).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");

        let mut proxy = state("c.example");
        proxy.upstream = Upstream::Proxy {
            url: "ftp://origin".into(),
        };
        assert!(validate(&[proxy]).is_err());

        let mut no_key = state("d.example");
        no_key.certificate = EdgeCertificate::Pem {
            chain: CERT.into(),
            key: CERT.into(),
        };
        let err = validate(&[no_key]).unwrap_err();
        assert!(err.to_string().contains("private key"), "{err}");
    }

    #[test]
    fn certificate_bodies_are_base64_der() {
        assert_eq!(
            pem_certificates(&format!("{CERT}{CERT}")).unwrap(),
            vec!["MIIBszCCAVmgAwIBAgIUUxbdAAAA"; 2]
        );
        assert!(
            pem_certificates("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .is_err()
        );
    }

    #[test]
    fn proxy_targets_are_dial_addresses() {
        assert_eq!(
            proxy_target("http://app.internal:8080").unwrap(),
            ("app.internal:8080".into(), false)
        );
        assert_eq!(
            proxy_target("https://app.internal").unwrap(),
            ("app.internal:443".into(), true)
        );
        assert!(proxy_target("http://app.internal/path").is_err());
    }

    #[test]
    fn keys_are_never_printed() {
        let cert = EdgeCertificate::Pem {
            chain: "chain".into(),
            key: "-----BEGIN PRIVATE KEY-----".into(),
        };
        assert!(!format!("{cert:?}").contains("PRIVATE"));
    }
}
