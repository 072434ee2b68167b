//! Caddy as the edge, through its admin API.
//!
//! Everything we write carries an `@id` under `ossature-edge.<instance>.`, in
//! three subtrees, each read once and written at most once per batch:
//! - certificates: our elements of `apps.tls.certificates.load_files`;
//! - TLS connection policies (SNI match, certificate selection, client
//!   authentication): our elements at the front of the server's
//!   `tls_connection_policies`, ahead of any catch-all;
//! - routes: one route of the server, `ossature-edge.<instance>.routes`, whose
//!   subroute holds one route per host, and the probe's marker.
//!
//! Every Caddy write reloads its whole configuration, so a batch is one read
//! and at most one write of the `apps` object, whatever its size: the three
//! subtrees change together, so a route never serves without its policy
//! and certificate, nor they without it. Others' elements are kept verbatim;
//! the write carries `If-Match` on the version read, so a concurrent writer
//! makes ours fail (412) and we read again: nobody's change is lost.
//!
//! What holds our objects is ours to put back too: the HTTP app, the server,
//! its `routes` and `tls_connection_policies` arrays, the TLS app and its
//! `load_files`. A read that finds one of them missing reads "nothing of
//! ours here" (so removal never blocks on it), and the write puts back what
//! it needs. Never more than the path to our objects: a server put back
//! this way has no listener until its owner gives it one.
//!
//! Private keys: we use `load_files`, not `load_pem`. `load_pem` keeps the
//! key inside the configuration, so `GET /config/` and Caddy's autosave
//! would show it. With `load_files` the configuration holds only paths; the
//! key sits in a file written 0600 in a directory (0700) shared with Caddy
//! alone. We preferred that to an on-demand HTTP certificate getter: no TLS
//! handshake then depends on the operator being up, keys never cross the
//! network, and a restarted Caddy needs nothing but our next apply.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, ETAG, IF_MATCH};
use reqwest::{Client, Method, StatusCode, Url};
use serde_json::{Value, json};

use super::{
    ClientAuthMode, Edge, EdgeCertificate, EdgeError, HostChange, HostState, Observation, Probe,
    Upstream, pem_certificates, proxy_target, validate, validate_host,
};
use crate::adapters::http::truncate;
use crate::adapters::{Backend, BackendError, Calls, Change, Verb};

/// Reads and writes of one batch are retried this often after a 412 (any
/// other writer of the apps makes one).
const ATTEMPTS: usize = 12;
/// The configuration's apps: every write of ours is one write of them.
const APPS_PATH: &str = "/config/apps";
/// Caddy swaps its admin listener on every reload (anyone's), refusing or
/// resetting connections meanwhile. Such a request is sent again: a read is
/// harmless, and every write of ours is safe to repeat (`If-Match`, or an
/// `@id` Caddy refuses twice).
const CONNECT_RETRIES: usize = 20;
const CONNECT_PAUSE: Duration = Duration::from_millis(100);

/// Kinds of objects, as the third part of our `@id`s.
const ROUTE: &str = "host";
const POLICY: &str = "tls";
const CERT: &str = "cert";

/// Client of one Caddy's admin API for one instance of the operator.
#[derive(Debug, Clone)]
pub struct CaddyEdge {
    client: Client,
    admin: Url,
    server: String,
    instance: String,
    cert_dir: PathBuf,
    calls: Calls,
    conflicts: Arc<AtomicU64>,
    /// Reads and writes sent again, in that order.
    resent: Arc<[AtomicU64; 2]>,
}

/// One subtree as read: its value (None when absent) and its version.
/// No version either: a parent on its path is missing (or, for the routes
/// container, its id is unknown).
#[derive(Debug, Clone)]
struct Subtree {
    value: Option<Value>,
    etag: Option<String>,
}

/// The apps as one batch read them, and our three subtrees in them.
#[derive(Debug, Clone)]
struct Snapshot {
    apps: Subtree,
    routes: Subtree,
    policies: Subtree,
    certs: Subtree,
}

/// A host's objects as Caddy holds them.
#[derive(Debug, Default)]
struct Current {
    route: Option<Value>,
    policy: Option<Value>,
    cert: Option<Value>,
}

impl Current {
    fn is_empty(&self) -> bool {
        self.route.is_none() && self.policy.is_none() && self.cert.is_none()
    }
}

/// A host's objects as we want them, and its key files.
#[derive(Debug)]
struct Rendered {
    host: String,
    route: Value,
    policy: Value,
    cert: Value,
    digest: String,
    chain: String,
    key: String,
}

/// New subtree contents and the report of one batch.
struct Plan {
    routes: Value,
    policies: Vec<Value>,
    certs: Vec<Value>,
    changes: Vec<HostChange>,
}

enum Written {
    Done,
    /// Someone changed a subtree since we read it.
    Conflict,
}

impl CaddyEdge {
    /// `server` is the Caddy HTTP server name; `instance` (a-z, 0-9, '-')
    /// separates operators sharing one Caddy; `cert_dir` is where key files
    /// go, a directory Caddy reads and nobody else should.
    pub fn new(
        admin_url: &str,
        server: &str,
        instance: &str,
        cert_dir: impl Into<PathBuf>,
        calls: Calls,
    ) -> Result<Self, EdgeError> {
        let admin = Backend::Edge.base_url(admin_url, "use the admin URL")?;
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if !name_ok(instance) || !name_ok(server) {
            return Err(EdgeError::Invalid {
                host: String::new(),
                reason: format!(
                    "Caddy server {server:?} and instance {instance:?} must be a-z, 0-9 and '-'"
                ),
            });
        }
        // Caddy closes idle admin connections when it reloads.
        let client = Backend::Edge.client(Client::builder().pool_max_idle_per_host(0))?;
        Ok(CaddyEdge {
            client,
            admin,
            server: server.to_string(),
            instance: instance.to_string(),
            cert_dir: cert_dir.into(),
            calls,
            conflicts: Arc::default(),
            resent: Arc::default(),
        })
    }

    /// Writes Caddy refused because the configuration had changed since we
    /// read it (each is followed by a fresh read and plan).
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    /// Requests sent again because Caddy was swapping its admin listener
    /// (someone's reload) when they were first sent.
    pub fn resent(&self, verb: Verb) -> u64 {
        self.resent[usize::from(verb == Verb::Write)].load(Ordering::Relaxed)
    }

    fn id(&self, kind: &str, host: &str) -> String {
        format!("ossature-edge.{}.{kind}.{host}", self.instance)
    }

    /// The container route of all our host routes.
    pub fn routes_id(&self) -> String {
        format!("ossature-edge.{}.routes", self.instance)
    }

    /// The small object `probe` reads.
    pub fn marker_id(&self) -> String {
        format!("ossature-edge.{}.marker", self.instance)
    }

    /// The host an `@id` of ours names, if it is of this kind.
    fn owned<'a>(&self, kind: &str, object: &'a Value) -> Option<&'a str> {
        let prefix = format!("ossature-edge.{}.{kind}.", self.instance);
        object.get("@id")?.as_str()?.strip_prefix(&prefix)
    }

    fn files(&self, host: &str) -> (PathBuf, PathBuf) {
        (
            self.cert_dir.join(format!("{host}.crt")),
            self.cert_dir.join(format!("{host}.key")),
        )
    }

    /// Our objects for one host. Only Pem certificates: a Caddy-managed one
    /// would need an ACME issuer, which this adapter does not configure.
    fn render(&self, state: &HostState) -> Result<Rendered, EdgeError> {
        let host = state.host.as_str();
        let EdgeCertificate::Pem { chain, key } = &state.certificate else {
            return Err(EdgeError::Unsupported {
                host: host.to_string(),
                reason: "the Caddy edge serves given certificates only; \
                         edge-managed certificates need an ACME issuer it does not configure"
                    .into(),
            });
        };
        let cert_id = self.id(CERT, host);
        let (crt_path, key_path) = self.files(host);
        // The chain's hash is in the config, so a new chain changes the
        // config and Caddy reloads (rereading the files); same config, no reload.
        let cert = json!({
            "@id": cert_id,
            "certificate": crt_path.to_string_lossy(),
            "key": key_path.to_string_lossy(),
            "format": "pem",
            "tags": [cert_id, format!("sha256-{}", sha256_hex(chain.as_bytes()))],
        });

        let mut policy = json!({
            "@id": self.id(POLICY, host),
            "match": {"sni": [host]},
            "certificate_selection": {"any_tag": [cert_id]},
        });
        if let Some(auth) = &state.client_auth {
            let cas =
                pem_certificates(&auth.ca_pem_bundle).map_err(|reason| EdgeError::Invalid {
                    host: host.to_string(),
                    reason,
                })?;
            let mode = match auth.mode {
                ClientAuthMode::Optional => "verify_if_given",
                ClientAuthMode::Required => "require_and_verify",
            };
            policy["client_authentication"] = json!({
                "ca": {"provider": "inline", "trusted_ca_certs": cas},
                "mode": mode,
            });
        }

        let serve = match &state.upstream {
            Upstream::Static { body } => json!({
                "handler": "static_response",
                "status_code": 200,
                "body": body,
            }),
            Upstream::Proxy { url } => {
                let (dial, tls) = proxy_target(url).map_err(|reason| EdgeError::Invalid {
                    host: host.to_string(),
                    reason,
                })?;
                let mut proxy = json!({"handler": "reverse_proxy", "upstreams": [{"dial": dial}]});
                if tls {
                    proxy["transport"] = json!({"protocol": "http", "tls": {}});
                }
                proxy
            }
        };
        let mut inner = Vec::new();
        if !state.allowed_ranges.is_empty() {
            // remote_ip is the peer address, not a forwarded header.
            inner.push(json!({
                "match": [{"not": [{"remote_ip": {"ranges": state.allowed_ranges}}]}],
                "handle": [{
                    "handler": "static_response",
                    "status_code": 403,
                    "body": "forbidden\n",
                    "close": true,
                }],
            }));
        }
        inner.push(json!({"handle": [serve]}));

        let digest = sha256_hex(
            &serde_json::to_vec(&json!([state.owner, policy, inner, cert]))
                .expect("JSON values serialize"),
        );
        let route = json!({
            "@id": self.id(ROUTE, host),
            "match": [{"host": [host]}],
            "handle": [
                {"handler": "vars", "ossature_owner": state.owner, "ossature_state": digest},
                {"handler": "subroute", "routes": inner},
            ],
            "terminal": true,
        });
        Ok(Rendered {
            host: host.to_string(),
            route,
            policy,
            cert,
            digest,
            chain: chain.clone(),
            key: key.clone(),
        })
    }

    fn container(&self, host_routes: Vec<Value>) -> Value {
        // As every release wrote it: a change here would rewrite every
        // instance's routes at an upgrade.
        let marker =
            json!({"@id": self.marker_id(), "handler": "vars", "ossature_edge": self.instance});
        json!({
            "@id": self.routes_id(),
            "handle": [marker, {"handler": "subroute", "routes": host_routes}],
        })
    }

    /// Our host routes inside the container as read.
    fn host_routes<'a>(&self, container: Option<&'a Value>) -> Vec<&'a Value> {
        let handlers = container
            .and_then(|c| c.get("handle"))
            .and_then(Value::as_array);
        handlers
            .into_iter()
            .flatten()
            .filter(|h| h.get("handler").and_then(Value::as_str) == Some("subroute"))
            .filter_map(|h| h.get("routes").and_then(Value::as_array))
            .flatten()
            .filter(|r| self.owned(ROUTE, r).is_some())
            .collect()
    }

    /// Every host we have any object for, with those objects.
    fn current(&self, snapshot: &Snapshot) -> BTreeMap<String, Current> {
        let mut hosts: BTreeMap<String, Current> = BTreeMap::new();
        for route in self.host_routes(snapshot.routes.value.as_ref()) {
            if let Some(host) = self.owned(ROUTE, route) {
                hosts.entry(host.to_string()).or_default().route = Some(route.clone());
            }
        }
        for policy in elements(&snapshot.policies) {
            if let Some(host) = self.owned(POLICY, policy) {
                hosts.entry(host.to_string()).or_default().policy = Some(policy.clone());
            }
        }
        for cert in elements(&snapshot.certs) {
            if let Some(host) = self.owned(CERT, cert) {
                hosts.entry(host.to_string()).or_default().cert = Some(cert.clone());
            }
        }
        hosts
    }

    fn plan(&self, snapshot: &Snapshot, upserts: &[Rendered], removals: &[String]) -> Plan {
        let current = self.current(snapshot);
        let mut changes = Vec::new();
        for want in upserts {
            let now = current.get(&want.host);
            let (change, drift) = match now {
                None => (Change::Created, false),
                Some(now) if now.is_empty() => (Change::Created, false),
                Some(now)
                    if now.route.as_ref() == Some(&want.route)
                        && now.policy.as_ref() == Some(&want.policy)
                        && now.cert.as_ref() == Some(&want.cert) =>
                {
                    (Change::Unchanged, false)
                }
                Some(now) => {
                    // We never write a host without its route, and the route
                    // records the state we wrote: a missing route, or a
                    // difference under an unchanged record, is not ours.
                    let recorded = now
                        .route
                        .as_ref()
                        .and_then(|r| r.pointer("/handle/0/ossature_state"))
                        .and_then(Value::as_str);
                    let drift = now.route.is_none() || recorded == Some(want.digest.as_str());
                    (Change::Updated, drift)
                }
            };
            changes.push(HostChange {
                host: want.host.clone(),
                change,
                drift,
            });
        }
        for host in removals {
            let present = current.get(host).is_some_and(|c| !c.is_empty());
            changes.push(HostChange {
                host: host.clone(),
                change: if present {
                    Change::Deleted
                } else {
                    Change::Absent
                },
                drift: false,
            });
        }

        let wanted: BTreeMap<&str, &Rendered> =
            upserts.iter().map(|r| (r.host.as_str(), r)).collect();
        let gone: BTreeSet<&str> = removals.iter().map(String::as_str).collect();
        // Each kind: our objects kept or replaced, then new ones, sorted by host.
        let ours = |kind: &str, existing: Vec<&Value>, pick: fn(&Rendered) -> &Value| {
            let mut by_host: BTreeMap<String, Value> = existing
                .into_iter()
                .filter_map(|v| Some((self.owned(kind, v)?.to_string(), v.clone())))
                .filter(|(host, _)| !gone.contains(host.as_str()))
                .collect();
            for (host, want) in &wanted {
                by_host.insert(host.to_string(), pick(want).clone());
            }
            by_host.into_values().collect::<Vec<_>>()
        };
        let routes = ours(
            ROUTE,
            self.host_routes(snapshot.routes.value.as_ref()),
            |r| &r.route,
        );
        let policies = ours(POLICY, elements(&snapshot.policies).collect(), |r| {
            &r.policy
        });
        let certs = ours(CERT, elements(&snapshot.certs).collect(), |r| &r.cert);
        let policies = self.splice(POLICY, &snapshot.policies, policies);
        let certs = self.splice(CERT, &snapshot.certs, certs);
        Plan {
            routes: self.container(routes),
            policies,
            certs,
            changes,
        }
    }

    /// Others' elements verbatim and in order, with ours as one block where
    /// ours were (so two instances never reorder each other), else before
    /// the first catch-all (a policy without `match` would shadow ours),
    /// else at the end.
    fn splice(&self, kind: &str, current: &Subtree, ours: Vec<Value>) -> Vec<Value> {
        let all: Vec<&Value> = elements(current).collect();
        let at = all
            .iter()
            .position(|v| self.owned(kind, v).is_some())
            .or_else(|| all.iter().position(|v| v.get("match").is_none()))
            .unwrap_or(all.len());
        let others = |range: &[&Value]| -> Vec<Value> {
            range
                .iter()
                .filter(|v| self.owned(kind, v).is_none())
                .map(|v| (*v).clone())
                .collect()
        };
        let mut spliced = others(&all[..at]);
        spliced.extend(ours);
        spliced.extend(others(&all[at..]));
        spliced
    }

    /// One batch: files first, then the write of the apps (see `write`),
    /// retried on conflicts; removed hosts' files last.
    async fn commit(
        &self,
        upserts: &[HostState],
        removals: &[String],
    ) -> Result<Vec<HostChange>, EdgeError> {
        validate(upserts)?;
        for host in removals {
            validate_host(host)?;
        }
        let rendered = upserts
            .iter()
            .map(|s| self.render(s))
            .collect::<Result<Vec<_>, _>>()?;
        self.write_files(&rendered).await?;
        for attempt in 0..ATTEMPTS {
            let snapshot = self.read().await?;
            let plan = self.plan(&snapshot, &rendered, removals);
            let report = plan.changes.clone();
            if let Written::Done = self.write(&snapshot, plan).await? {
                self.remove_files(removals).await?;
                return Ok(report);
            }
            // Others write too: not in step with them.
            let pause = 10 * (attempt as u64 + 1) + rand_millis(20);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        Err(BackendError::Refused {
            backend: Backend::Edge,
            action: "write the edge configuration".into(),
            status: StatusCode::PRECONDITION_FAILED.as_u16(),
            body: format!("the configuration kept changing under us ({ATTEMPTS} attempts)"),
        }
        .into())
    }

    /// The apps, and in them our container, the server's policies and the
    /// certificates loaded from files.
    async fn read(&self) -> Result<Snapshot, EdgeError> {
        let apps = self.get(APPS_PATH, "read the configuration's apps").await?;
        let server = apps
            .value
            .as_ref()
            .and_then(|a| a.get("http")?.get("servers")?.get(&self.server));
        let routes_id = self.routes_id();
        let routes = server
            .and_then(|s| s.get("routes")?.as_array())
            .into_iter()
            .flatten()
            .find(|r| r.get("@id").and_then(Value::as_str) == Some(routes_id.as_str()))
            .cloned();
        let policies = server
            .and_then(|s| s.get("tls_connection_policies"))
            .filter(|v| !v.is_null())
            .cloned();
        let certs = apps
            .value
            .as_ref()
            .and_then(|a| a.pointer("/tls/certificates/load_files"))
            .filter(|v| !v.is_null())
            .cloned();
        let part = |value| Subtree { value, etag: None };
        Ok(Snapshot {
            routes: part(routes),
            policies: part(policies),
            certs: part(certs),
            apps,
        })
    }

    /// Writes the apps with our three subtrees as planned, if any differs,
    /// in one write (one reload), putting back what holds them.
    async fn write(&self, snapshot: &Snapshot, plan: Plan) -> Result<Written, EdgeError> {
        let certs = Value::Array(plan.certs);
        let policies = Value::Array(plan.policies);
        // No container and nothing to put in it: do not make an empty one.
        let pointless = snapshot.routes.value.is_none() && plan.routes == self.container(vec![]);
        let routes_differ = !pointless && differs(&snapshot.routes, &plan.routes);
        let policies_differ = differs(&snapshot.policies, &policies);
        let certs_differ = differs(&snapshot.certs, &certs);
        if !(routes_differ || policies_differ || certs_differ) {
            return Ok(Written::Done);
        }
        let mut apps = snapshot.apps.value.clone().unwrap_or_else(|| json!({}));
        if certs_differ {
            *object_at(&mut apps, &["tls", "certificates"])
                .entry("load_files")
                .or_insert(Value::Null) = certs;
        }
        if !(policies_differ || routes_differ) {
            return self.write_apps(snapshot, &apps).await;
        }
        // What the server holds of ours, the server put back if need be.
        let server = object_at(&mut apps, &["http", "servers", &self.server]);
        if policies_differ {
            server.insert("tls_connection_policies".into(), policies);
        }
        if routes_differ {
            let routes_id = self.routes_id();
            let list = server.entry("routes").or_insert(Value::Null);
            if !list.is_array() {
                *list = json!([]);
            }
            let list = list.as_array_mut().expect("an array");
            match list
                .iter()
                .position(|r| r.get("@id").and_then(Value::as_str) == Some(routes_id.as_str()))
            {
                Some(at) => list[at] = plan.routes,
                None => list.push(plan.routes),
            }
        }
        self.write_apps(snapshot, &apps).await
    }

    async fn write_apps(&self, snapshot: &Snapshot, apps: &Value) -> Result<Written, EdgeError> {
        self.put(
            Method::POST,
            APPS_PATH,
            apps,
            snapshot.apps.etag.as_deref(),
            "write the edge configuration",
        )
        .await
    }

    /// GET of one path; absent (404, null, or a parent missing) is
    /// `value: None`.
    async fn get(&self, path: &str, action: &str) -> Result<Subtree, EdgeError> {
        let response = self.send(Method::GET, path, None, None).await?;
        let status = response.status();
        let etag = response
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.text().await.map_err(unreachable)?;
        // An index past an array's end (a container with no host) is no
        // more there than a missing key.
        let past_end =
            status == StatusCode::BAD_REQUEST && body.contains("array index out of bounds");
        if status == StatusCode::NOT_FOUND || parent_missing(status, &body) || past_end {
            return Ok(Subtree { value: None, etag });
        }
        if !status.is_success() {
            return Err(refused(action, status, &body));
        }
        let value: Value = serde_json::from_str(&body)
            .map_err(|e| unreadable(action, format!("{e}: {}", truncate(&body))))?;
        Ok(Subtree {
            value: (!value.is_null()).then_some(value),
            etag,
        })
    }

    /// One write; a failed `If-Match` is a conflict, not an error.
    async fn put(
        &self,
        method: Method,
        path: &str,
        value: &Value,
        etag: Option<&str>,
        action: &str,
    ) -> Result<Written, EdgeError> {
        let body = serde_json::to_vec(value).expect("JSON values serialize");
        let response = self.send(method, path, Some(body), etag).await?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        if status.is_success() {
            return Ok(Written::Done);
        }
        // 412: changed since read. 409 or a duplicate id: two of us created
        // it at once. Our path gone (the `If-Match` path has an array index,
        // which shifts when others delete routes): changed as well.
        let changed = status == StatusCode::PRECONDITION_FAILED
            || status == StatusCode::CONFLICT
            || text.contains("duplicate ID")
            || (etag.is_some()
                && ["out of bounds", "invalid traversal", "unknown object ID"]
                    .iter()
                    .any(|sign| text.contains(sign)));
        if changed {
            self.conflicts.fetch_add(1, Ordering::Relaxed);
            Ok(Written::Conflict)
        } else {
            Err(refused(action, status, &text))
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        if_match: Option<&str>,
    ) -> Result<reqwest::Response, EdgeError> {
        let verb = if method == Method::GET {
            Verb::Read
        } else {
            Verb::Write
        };
        let url = self
            .admin
            .join(path)
            .map_err(|e| unreadable("build an admin URL", e.to_string()))?;
        let mut tries = 0;
        loop {
            let mut request = self.client.request(method.clone(), url.clone());
            if let Some(body) = &body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            if let Some(etag) = if_match {
                request = request.header(IF_MATCH, etag);
            }
            match self.calls.timed(Backend::Edge, verb, request.send()).await {
                Ok(response) => return Ok(response),
                Err(e) if !e.is_timeout() && tries < CONNECT_RETRIES => {
                    tries += 1;
                    self.resent[usize::from(verb == Verb::Write)].fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(CONNECT_PAUSE).await;
                }
                Err(e) => return Err(unreachable(e)),
            }
        }
    }

    /// Writes each changed chain and key (0600, replaced atomically) before
    /// Caddy is told to load them.
    async fn write_files(&self, rendered: &[Rendered]) -> Result<(), EdgeError> {
        if rendered.is_empty() {
            return Ok(());
        }
        let pairs: Vec<(PathBuf, PathBuf, String, String)> = rendered
            .iter()
            .map(|r| {
                let (crt, key) = self.files(&r.host);
                (crt, key, r.chain.clone(), r.key.clone())
            })
            .collect();
        let dir = self.cert_dir.clone();
        self.on_files(move || {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
            for (crt, key, chain, key_pem) in &pairs {
                write_if_changed(crt, chain)?;
                write_if_changed(key, key_pem)?;
            }
            Ok(())
        })
        .await
    }

    async fn remove_files(&self, hosts: &[String]) -> Result<(), EdgeError> {
        let paths: Vec<PathBuf> = hosts
            .iter()
            .flat_map(|h| {
                let (crt, key) = self.files(h);
                [crt, key]
            })
            .collect();
        self.on_files(move || {
            for path in &paths {
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            Ok(())
        })
        .await
    }

    async fn on_files(
        &self,
        work: impl FnOnce() -> std::io::Result<()> + Send + 'static,
    ) -> Result<(), EdgeError> {
        let files = |source| EdgeError::Files {
            dir: self.cert_dir.display().to_string(),
            source,
        };
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| files(std::io::Error::other(e)))?
            .map_err(files)
    }

    /// Removes every host of this instance and the container itself, e.g.
    /// when an operator instance is retired.
    pub async fn retire(&self) -> Result<Vec<HostChange>, EdgeError> {
        let snapshot = self.read().await?;
        let hosts: Vec<String> = self.current(&snapshot).into_keys().collect();
        let changes = self.commit(&[], &hosts).await?;
        let path = format!("/id/{}", self.routes_id());
        let response = self.send(Method::DELETE, &path, None, None).await?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        if !status.is_success() && status != StatusCode::NOT_FOUND {
            return Err(refused("remove our routes", status, &text));
        }
        Ok(changes)
    }
}

impl Edge for CaddyEdge {
    async fn apply(&self, hosts: &[HostState]) -> Result<Vec<HostChange>, EdgeError> {
        self.commit(hosts, &[]).await
    }

    async fn remove(&self, hosts: &[String]) -> Result<Vec<HostChange>, EdgeError> {
        self.commit(&[], hosts).await
    }

    async fn observe(&self, desired: &[HostState]) -> Result<Observation, EdgeError> {
        validate(desired)?;
        let rendered = desired
            .iter()
            .map(|s| self.render(s))
            .collect::<Result<Vec<_>, _>>()?;
        let snapshot = self.read().await?;
        let named: BTreeSet<&str> = desired.iter().map(|s| s.host.as_str()).collect();
        let extra = self
            .current(&snapshot)
            .into_keys()
            .filter(|h| !named.contains(h.as_str()))
            .collect();
        let plan = self.plan(&snapshot, &rendered, &[]);
        Ok(Observation {
            hosts: plan.changes,
            extra,
        })
    }

    /// Reads our marker (a few bytes): it is there only with the HTTP app,
    /// the server, its routes and our container. Then the id of our first
    /// host route and, if there is one, that host's policy and certificate,
    /// only their `@id`: there only with the policies array, the TLS app and
    /// `load_files`. Four small reads, whatever the number of hosts.
    async fn probe(&self) -> Result<Probe, EdgeError> {
        let marker = self
            .get(&format!("/id/{}", self.marker_id()), "read our marker")
            .await?;
        if marker.value.is_none() {
            return Ok(Probe::Missing);
        }
        // The first of our hosts, for its policy and certificate: the
        // arrays they sit in hold nothing else of ours one read could reach.
        let first = self
            .get(
                &format!("/id/{}/handle/1/routes/0/@id", self.routes_id()),
                "read our first host",
            )
            .await?;
        let prefix = format!("ossature-edge.{}.{ROUTE}.", self.instance);
        let Some(host) = first
            .value
            .as_ref()
            .and_then(Value::as_str)
            .and_then(|id| id.strip_prefix(&prefix))
        else {
            return Ok(Probe::Configured);
        };
        let path = |kind| format!("/id/{}/@id", self.id(kind, host));
        let (policy, cert) = (path(POLICY), path(CERT));
        let (policy, cert) = futures::try_join!(
            self.get(&policy, "read our TLS connection policy"),
            self.get(&cert, "read our certificate"),
        )?;
        Ok(if policy.value.is_some() && cert.value.is_some() {
            Probe::Configured
        } else {
            Probe::Missing
        })
    }
}

/// Caddy's answer to a read through a key that is not there (the app or
/// the server is gone): nothing below it exists.
fn parent_missing(status: StatusCode, body: &str) -> bool {
    status == StatusCode::BAD_REQUEST && body.contains("invalid traversal path")
}

fn elements(subtree: &Subtree) -> impl Iterator<Item = &Value> {
    subtree
        .value
        .as_ref()
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The object at `path` below `root`, made (and anything on the way that
/// is not an object replaced) where missing.
fn object_at<'v>(root: &'v mut Value, path: &[&str]) -> &'v mut serde_json::Map<String, Value> {
    let mut here = root;
    for key in path {
        if !here.is_object() {
            *here = json!({});
        }
        here = here
            .as_object_mut()
            .expect("an object")
            .entry(key.to_string())
            .or_insert(Value::Null);
    }
    if !here.is_object() {
        *here = json!({});
    }
    here.as_object_mut().expect("an object")
}

/// A few random milliseconds, below `bound`.
fn rand_millis(bound: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    u64::from(nanos) % bound.max(1)
}

/// Whether writing `new` would change the subtree; an absent array and an
/// empty one are the same to Caddy.
fn differs(current: &Subtree, new: &Value) -> bool {
    match &current.value {
        Some(value) => value != new,
        None => new.as_array().is_none_or(|a| !a.is_empty()),
    }
}

fn write_if_changed(path: &Path, content: &str) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == content.as_bytes()) {
        return Ok(());
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    // A leftover temporary file keeps its mode; make sure of ours.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(content.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unreachable(source: reqwest::Error) -> EdgeError {
    Backend::Edge.unreachable(source).into()
}

fn unreadable(action: &str, detail: String) -> EdgeError {
    Backend::Edge.unreadable(action, detail).into()
}

fn refused(action: &str, status: StatusCode, body: &str) -> EdgeError {
    Backend::Edge.refused(action, status.as_u16(), body).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge() -> CaddyEdge {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = "/nonexistent/ossature-edge";
        CaddyEdge::new("http://127.0.0.1:1", "edge", "one", dir, Calls::default()).unwrap()
    }

    fn subtree(value: Value) -> Subtree {
        Subtree {
            value: Some(value),
            etag: None,
        }
    }

    #[test]
    fn our_policies_go_before_a_catch_all_and_then_stay_where_they_are() {
        let edge = edge();
        let ours = |host: &str| json!({"@id": edge.id(POLICY, host), "match": {"sni": [host]}});
        let theirs = json!({"@id": "theirs", "match": {"sni": ["x.example"]}});
        let fresh = subtree(json!([theirs, {}]));
        assert_eq!(
            edge.splice(POLICY, &fresh, vec![ours("a.example")]),
            vec![theirs.clone(), ours("a.example"), json!({})]
        );
        // Another party put theirs ahead of ours: we do not move back.
        let moved = subtree(json!([theirs, ours("a.example"), {}]));
        assert_eq!(
            edge.splice(POLICY, &moved, vec![ours("a.example"), ours("b.example")]),
            vec![theirs, ours("a.example"), ours("b.example"), json!({})]
        );
    }

    #[test]
    fn another_instance_is_not_ours() {
        let edge = edge();
        let other = json!({"@id": "ossature-edge.one-two.tls.a.example"});
        assert_eq!(edge.owned(POLICY, &other), None);
        let ours = json!({"@id": "ossature-edge.one.tls.a.example"});
        assert_eq!(edge.owned(POLICY, &ours), Some("a.example"));
        assert_eq!(edge.owned(CERT, &ours), None);
    }

    #[test]
    fn drift_is_a_difference_from_what_we_recorded() {
        let edge = edge();
        let state = HostState {
            host: "a.example".into(),
            owner: "acme".into(),
            certificate: EdgeCertificate::Pem {
                chain: "chain".into(),
                key: "key".into(),
            },
            client_auth: None,
            allowed_ranges: vec![],
            upstream: Upstream::Static { body: "hi".into() },
        };
        let want = edge.render(&state).unwrap();
        let snapshot = |route: Option<&Value>| Snapshot {
            apps: Subtree {
                value: None,
                etag: None,
            },
            routes: subtree(edge.container(route.into_iter().cloned().collect())),
            policies: subtree(json!([want.policy])),
            certs: subtree(json!([want.cert])),
        };
        let verdict = |snapshot: &Snapshot| {
            let plan = edge.plan(snapshot, std::slice::from_ref(&want), &[]);
            (plan.changes[0].change, plan.changes[0].drift)
        };
        assert_eq!(
            verdict(&snapshot(Some(&want.route))),
            (Change::Unchanged, false)
        );
        assert_eq!(verdict(&snapshot(None)), (Change::Updated, true));

        let mut edited = want.route.clone();
        edited["terminal"] = json!(false);
        assert_eq!(verdict(&snapshot(Some(&edited))), (Change::Updated, true));

        let older = edge
            .render(&HostState {
                allowed_ranges: vec!["10.0.0.0/8".into()],
                ..state.clone()
            })
            .unwrap();
        assert_eq!(
            verdict(&snapshot(Some(&older.route))),
            (Change::Updated, false)
        );
    }
}
