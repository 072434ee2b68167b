//! The Caddy edge adapter against the real local Caddy, shared with others:
//! every test is its own adapter instance (own `@id`s, own key directory)
//! with unique host names, and retires it afterwards, even when it fails.

mod common;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Instant;

use futures::FutureExt;
use ossature_operator::adapters::edge::caddy::CaddyEdge;
use ossature_operator::adapters::edge::{
    ClientAuth, ClientAuthMode, Edge, EdgeCertificate, HostChange, HostState, Probe, Upstream,
};
use ossature_operator::adapters::{Backend, Calls, Change, Verb};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A CA made for one test, issuing server and client certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
struct Issued {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn issue(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn server(&self, host: &str) -> Issued {
        self.issue(host, ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn client(&self, name: &str) -> Issued {
        self.issue(name, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

struct Setup {
    edge: CaddyEdge,
    calls: Calls,
    admin: String,
    https: SocketAddr,
    instance: String,
    cert_dir: PathBuf,
    ca: Ca,
    /// The Caddy HTTP server the edge writes to.
    server: String,
    /// The server is this test's own (not the shared `edge`).
    private_server: bool,
    /// This instance removes the server when the test ends (after the
    /// others on it retired).
    removes_server: bool,
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", common::suffix())
}

async fn setup() -> Setup {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let admin = env["OSSATURE_EDGE_ADMIN_URL"].clone();
    let https = env["OSSATURE_EDGE_HTTPS_ADDR"].parse().unwrap();
    let instance = unique("t");
    let cert_dir = std::env::temp_dir().join(format!("ossature-edge-{instance}"));
    let calls = Calls::default();
    let edge = CaddyEdge::new(&admin, "edge", &instance, &cert_dir, calls.clone()).unwrap();
    Setup {
        edge,
        calls,
        admin,
        https,
        instance,
        cert_dir,
        ca: Ca::new("Ossature edge test CA"),
        server: "edge".into(),
        private_server: false,
        removes_server: false,
    }
}

/// A test on a Caddy HTTP server of its own, listening on a free port:
/// taking away a server's routes, policies or the server itself must not
/// touch the shared `edge` server other tests use. The server is set up
/// as the stack sets up `edge`.
async fn setup_own_server() -> Setup {
    let mut s = setup().await;
    let server = format!("srv-{}", s.instance);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = json!({
        "listen": [format!("127.0.0.1:{port}")],
        "routes": [],
        "tls_connection_policies": [{}],
        "automatic_https": {"disable": true},
    });
    let (status, body) = s
        .admin(Method::PUT, &s.server_path(&server), Some(config))
        .await;
    assert_eq!(status, 200, "{body}");
    s.https = SocketAddr::from(([127, 0, 0, 1], port));
    s.private_server = true;
    s.removes_server = true;
    s.on(server)
}

impl Setup {
    /// Another instance on this test's server; its cleanup must run first.
    async fn beside(&self) -> Setup {
        let mut other = setup().await;
        other.https = self.https;
        other.private_server = self.private_server;
        other.on(self.server.clone())
    }

    fn on(mut self, server: String) -> Setup {
        self.edge = CaddyEdge::new(
            &self.admin,
            &server,
            &self.instance,
            &self.cert_dir,
            self.calls.clone(),
        )
        .unwrap();
        self.server = server;
        self
    }

    fn server_path(&self, server: &str) -> String {
        format!("/config/apps/http/servers/{server}")
    }
}

impl Setup {
    fn host(&self, label: &str) -> String {
        format!("{label}.{}.edge.ossature.test", self.instance)
    }

    /// A host served with a certificate of the test CA and a static answer.
    fn state(&self, host: &str) -> HostState {
        let issued = self.ca.server(host);
        HostState {
            host: host.to_string(),
            owner: "acme".into(),
            certificate: EdgeCertificate::Pem {
                chain: issued.cert,
                key: issued.key,
            },
            client_auth: None,
            allowed_ranges: vec![],
            upstream: Upstream::Static {
                body: format!("ossature edge: acme {host}"),
            },
        }
    }

    /// Writes that changed Caddy: those refused because another party had
    /// just changed the shared arrays, or sent again while another party's
    /// reload swapped the admin listener, are retried and not counted here.
    fn writes(&self) -> u64 {
        self.calls.count(Backend::Edge, Verb::Write)
            - self.edge.conflicts()
            - self.edge.resent(Verb::Write)
    }

    fn reads(&self) -> u64 {
        self.calls.count(Backend::Edge, Verb::Read) - self.edge.resent(Verb::Read)
    }

    /// Raw admin API call, bypassing the adapter. Sent again, as the
    /// adapter does, while another test's reload swaps the admin listener.
    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (u16, String) {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let mut tries = 0;
        let response = loop {
            let mut request = client.request(method.clone(), format!("{}{path}", self.admin));
            if let Some(body) = &body {
                request = request.json(body);
            }
            match request.send().await {
                Ok(response) => break response,
                Err(e) if !e.is_timeout() && tries < 20 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("Caddy's admin API answers {method} {path}: {e:?}"),
            }
        };
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// A GET through the edge's HTTPS listener, as `client` would make it.
    async fn fetch(&self, host: &str, client: Client) -> Result<(StatusCode, String), String> {
        let http = client.build(host, self.https);
        let url = format!("https://{host}:{}/", self.https.port());
        match http.get(&url).send().await {
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.map_err(|e| format!("{e:?}"))?;
                Ok((status, body))
            }
            // Debug shows the whole chain of causes.
            Err(e) => Err(format!("{e:?}")),
        }
    }

    async fn expect_served(&self, host: &str, client: Client) {
        let (status, body) = self.fetch(host, client).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, format!("ossature edge: acme {host}"));
    }
}

/// How a test client connects: whom it trusts, its certificate, its address.
#[derive(Default)]
struct Client {
    trust: String,
    identity: Option<String>,
    from: Option<IpAddr>,
}

impl Client {
    fn trusting(ca: &Ca) -> Client {
        Client {
            trust: ca.pem(),
            ..Client::default()
        }
    }

    fn with_certificate(mut self, issued: &Issued) -> Client {
        self.identity = Some(format!("{}{}", issued.cert, issued.key));
        self
    }

    fn from(mut self, addr: &str) -> Client {
        self.from = Some(addr.parse().unwrap());
        self
    }

    fn build(self, host: &str, addr: SocketAddr) -> reqwest::Client {
        let roots = reqwest::Certificate::from_pem_bundle(self.trust.as_bytes()).unwrap();
        let mut builder = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .tls_certs_only(roots)
            .resolve(host, addr)
            .local_address(self.from);
        if let Some(identity) = self.identity {
            builder = builder.identity(reqwest::Identity::from_pem(identity.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    }
}

/// A failed TLS handshake or a connection the server closed on us.
fn refused(err: &str) -> bool {
    ["certificate", "alert", "closed", "handshake", "reset"]
        .iter()
        .any(|sign| err.to_lowercase().contains(sign))
}

/// Runs `body`, then retires the instance and its key directory whatever happened.
async fn cleaned(s: &Setup, body: impl Future<Output = ()>) {
    cleaned_with(s, &[], body).await
}

/// As `cleaned`, also deleting objects the test added by hand by `@id`.
async fn cleaned_with(s: &Setup, ids: &[&str], body: impl Future<Output = ()>) {
    let outcome = AssertUnwindSafe(body).catch_unwind().await;
    for id in ids {
        s.admin(Method::DELETE, &format!("/id/{id}"), None).await;
    }
    let server = s.server_path(&s.server);
    if s.private_server {
        // A test may have taken its server away; retiring must not depend
        // on the repair under test (a server still there answers 409).
        s.admin(Method::PUT, &server, Some(json!({}))).await;
    }
    let retired = s.edge.retire().await;
    if s.removes_server {
        s.admin(Method::DELETE, &server, None).await;
    }
    // Caddy's configuration may still load the key files of an instance
    // not retired: without them every later reload of the shared Caddy fails.
    if retired.is_ok() {
        let _ = std::fs::remove_dir_all(&s.cert_dir);
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    retired.unwrap();
}

fn changes(list: &[HostChange]) -> Vec<(String, Change, bool)> {
    list.iter()
        .map(|c| (c.host.clone(), c.change, c.drift))
        .collect()
}

fn each(hosts: &[&str], change: Change, drift: bool) -> Vec<(String, Change, bool)> {
    hosts
        .iter()
        .map(|h| (h.to_string(), change, drift))
        .collect()
}

#[tokio::test]
async fn certificate_is_served_for_its_name_and_an_unchanged_batch_writes_nothing() {
    let s = setup().await;
    let host = s.host("shop");
    let state = s.state(&host);
    cleaned(&s, async {
        let done = s.edge.apply(std::slice::from_ref(&state)).await.unwrap();
        assert_eq!(changes(&done), each(&[&host], Change::Created, false));
        s.expect_served(&host, Client::trusting(&s.ca)).await;

        let err = s
            .fetch(&host, Client::trusting(&Ca::new("impostor")))
            .await
            .unwrap_err();
        assert!(err.to_lowercase().contains("certificate"), "{err}");

        let (reads, writes) = (s.reads(), s.writes());
        let done = s.edge.apply(std::slice::from_ref(&state)).await.unwrap();
        assert_eq!(changes(&done), each(&[&host], Change::Unchanged, false));
        assert_eq!(s.writes(), writes, "an unchanged batch writes nothing");
        assert_eq!(s.reads() - reads, 1, "one read of the apps");

        // A new desired answer is an update, not drift.
        let mut other = state.clone();
        other.upstream = Upstream::Static {
            body: "changed".into(),
        };
        let done = s.edge.apply(&[other]).await.unwrap();
        assert_eq!(changes(&done), each(&[&host], Change::Updated, false));
        let (status, body) = s.fetch(&host, Client::trusting(&s.ca)).await.unwrap();
        assert_eq!((status, body.as_str()), (StatusCode::OK, "changed"));

        // A rotated certificate is served at once: its hash is in the
        // configuration, so the write makes Caddy reread the files.
        let rotated = Ca::new("Ossature edge test rotated CA");
        let issued = rotated.server(&host);
        let renewed = HostState {
            certificate: EdgeCertificate::Pem {
                chain: issued.cert,
                key: issued.key,
            },
            ..state.clone()
        };
        let done = s.edge.apply(std::slice::from_ref(&renewed)).await.unwrap();
        assert_eq!(changes(&done), each(&[&host], Change::Updated, false));
        s.expect_served(&host, Client::trusting(&rotated)).await;
        let err = s.fetch(&host, Client::trusting(&s.ca)).await.unwrap_err();
        assert!(err.to_lowercase().contains("certificate"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn two_instances_writing_at_once_both_end_complete() {
    let one = setup().await;
    let two = setup().await;
    let batch = |s: &Setup| -> Vec<HostState> {
        (0..20)
            .map(|i| s.state(&s.host(&format!("c{i}"))))
            .collect()
    };
    let (first, second) = (batch(&one), batch(&two));
    cleaned(&one, async {
        cleaned(&two, async {
            // The shared arrays change under each other's reads: 412, reread.
            let (a, b) = tokio::join!(one.edge.apply(&first), two.edge.apply(&second));
            assert!(a.unwrap().iter().all(|c| c.change == Change::Created));
            assert!(b.unwrap().iter().all(|c| c.change == Change::Created));
            for (s, states) in [(&one, &first), (&two, &second)] {
                let seen = s.edge.observe(states).await.unwrap();
                assert!(seen.hosts.iter().all(|c| c.change == Change::Unchanged));
                s.expect_served(&states[19].host, Client::trusting(&s.ca))
                    .await;
            }
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn client_certificates_are_required_or_optional_per_host() {
    let s = setup().await;
    let required = s.host("required");
    let optional = s.host("optional");
    let clients = Ca::new("Ossature edge test client CA");
    let stranger = Ca::new("Ossature edge test stranger CA");
    let with_auth = |host: &str, mode| HostState {
        client_auth: Some(ClientAuth {
            ca_pem_bundle: clients.pem(),
            mode,
        }),
        ..s.state(host)
    };
    let states = [
        with_auth(&required, ClientAuthMode::Required),
        with_auth(&optional, ClientAuthMode::Optional),
    ];
    cleaned(&s, async {
        s.edge.apply(&states).await.unwrap();
        let good = clients.client("alice");
        let bad = stranger.client("mallory");
        let client = || Client::trusting(&s.ca);

        // In TLS 1.3 the server refuses after the client's Finished, so the
        // client may only see the connection close; the good certificate
        // succeeding on the same path shows what made the difference.
        let err = s.fetch(&required, client()).await.unwrap_err();
        assert!(refused(&err), "without a certificate: {err}");
        let err = s
            .fetch(&required, client().with_certificate(&bad))
            .await
            .unwrap_err();
        assert!(refused(&err), "another CA's certificate: {err}");
        s.expect_served(&required, client().with_certificate(&good))
            .await;

        s.expect_served(&optional, client()).await;
        s.expect_served(&optional, client().with_certificate(&good))
            .await;
        let err = s
            .fetch(&optional, client().with_certificate(&bad))
            .await
            .unwrap_err();
        assert!(refused(&err), "optional still verifies: {err}");
    })
    .await;
}

#[tokio::test]
async fn source_ranges_limit_who_reaches_a_host() {
    let s = setup().await;
    let limited = s.host("limited");
    let open = s.host("open");
    let mut state = s.state(&limited);
    state.allowed_ranges = vec!["127.0.0.2/32".into(), "10.0.0.0/8".into()];
    cleaned(&s, async {
        s.edge
            .apply(&[state.clone(), s.state(&open)])
            .await
            .unwrap();
        let client = |addr| Client::trusting(&s.ca).from(addr);

        s.expect_served(&limited, client("127.0.0.2")).await;
        let (status, _) = s.fetch(&limited, client("127.0.0.3")).await.unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN);
        s.expect_served(&open, client("127.0.0.3")).await;

        state.allowed_ranges = vec!["127.0.0.3".into()];
        let done = s.edge.apply(std::slice::from_ref(&state)).await.unwrap();
        assert_eq!(changes(&done), each(&[&limited], Change::Updated, false));
        s.expect_served(&limited, client("127.0.0.3")).await;
        let (status, _) = s.fetch(&limited, client("127.0.0.2")).await.unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN);
    })
    .await;
}

#[tokio::test]
async fn no_private_key_is_readable_through_the_admin_api_or_autosave() {
    let s = setup().await;
    let host = s.host("secret");
    let state = s.state(&host);
    let EdgeCertificate::Pem { key, .. } = &state.certificate else {
        unreachable!()
    };
    // A line of the key's body: present anywhere means the key leaked.
    let key_line = key.lines().nth(1).unwrap().to_string();
    cleaned(&s, async {
        s.edge.apply(std::slice::from_ref(&state)).await.unwrap();
        s.expect_served(&host, Client::trusting(&s.ca)).await;

        // Others may load_pem their own keys into this shared Caddy; ours
        // must appear nowhere, and nothing of ours holds any key.
        let (status, config) = s.admin(Method::GET, "/config/", None).await;
        assert_eq!(status, 200);
        assert!(!config.contains(&key_line), "our key is in GET /config/");
        for path in [
            format!("/id/{}", s.edge.routes_id()),
            "/config/apps/http/servers/edge/tls_connection_policies".to_string(),
            "/config/apps/tls/certificates/load_files".to_string(),
        ] {
            let (_, text) = s.admin(Method::GET, &path, None).await;
            assert!(!text.contains("PRIVATE KEY"), "{path}: {text}");
        }

        let layout = ossature_bootstrap::Layout::from_env().unwrap();
        let autosave = layout.data("caddy").join("config/caddy/autosave.json");
        let saved = std::fs::read_to_string(&autosave).unwrap();
        assert!(saved.contains(&host), "autosave is current: {autosave:?}");
        assert!(!saved.contains(&key_line), "our key is in {autosave:?}");

        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(s.cert_dir.clone()), 0o700);
        assert_eq!(mode(s.cert_dir.join(format!("{host}.key"))), 0o600);
    })
    .await;
}

#[tokio::test]
async fn hand_removed_objects_are_reported_as_drift_and_put_back() {
    let s = setup().await;
    let a = s.host("a");
    let b = s.host("b");
    let c = s.host("c");
    let states = [s.state(&a), s.state(&b), s.state(&c)];
    cleaned(&s, async {
        s.edge.apply(&states).await.unwrap();
        let id = |kind: &str, host: &str| format!("/id/ossature-edge.{}.{kind}.{host}", s.instance);
        for path in [id("host", &a), id("cert", &b)] {
            let (status, body) = s.admin(Method::DELETE, &path, None).await;
            assert_eq!(status, 200, "{path}: {body}");
        }

        let seen = s.edge.observe(&states).await.unwrap();
        assert!(seen.extra.is_empty(), "{seen:?}");
        let mut expected = each(&[&a, &b], Change::Updated, true);
        expected.extend(each(&[&c], Change::Unchanged, false));
        assert_eq!(changes(&seen.hosts), expected);

        let writes = s.writes();
        let done = s.edge.apply(&states).await.unwrap();
        assert_eq!(changes(&done), expected);
        assert_eq!(
            s.writes() - writes,
            1,
            "certificates and routes at once: one reload"
        );
        s.expect_served(&a, Client::trusting(&s.ca)).await;
        s.expect_served(&b, Client::trusting(&s.ca)).await;

        let seen = s.edge.observe(&states[..1]).await.unwrap();
        assert_eq!(changes(&seen.hosts), each(&[&a], Change::Unchanged, false));
        assert_eq!(seen.extra, vec![b.clone(), c.clone()]);
    })
    .await;
}

#[tokio::test]
async fn the_probe_notices_lost_configuration_in_a_few_small_reads() {
    let s = setup().await;
    let host = s.host("probed");
    let state = s.state(&host);
    cleaned(&s, async {
        assert_eq!(s.edge.probe().await.unwrap(), Probe::Missing);
        s.edge.apply(std::slice::from_ref(&state)).await.unwrap();
        let (reads, writes) = (s.reads(), s.writes());
        assert_eq!(s.edge.probe().await.unwrap(), Probe::Configured);
        // Our marker and first host, then that host's policy and certificate.
        assert_eq!((s.reads() - reads, s.writes() - writes), (4, 0));

        // As after a restart: our marker is gone (the shared Caddy stays up).
        let path = format!("/id/{}", s.edge.marker_id());
        let (status, body) = s.admin(Method::DELETE, &path, None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(s.edge.probe().await.unwrap(), Probe::Missing);

        let writes = s.writes();
        let done = s.edge.apply(std::slice::from_ref(&state)).await.unwrap();
        assert_eq!(changes(&done), each(&[&host], Change::Unchanged, false));
        assert_eq!(s.writes() - writes, 1, "the marker is put back");
        assert_eq!(s.edge.probe().await.unwrap(), Probe::Configured);
    })
    .await;
}

#[tokio::test]
async fn removal_takes_only_our_hosts_objects_and_files() {
    let s = setup().await;
    let neighbour = setup().await;
    let ours = s.host("gone");
    let kept = s.host("kept");
    let theirs = neighbour.host("theirs");
    let foreign_id = unique("foreign-route");
    let foreign = json!({
        "@id": foreign_id,
        "match": [{"host": [format!("foreign.{}.edge.ossature.test", s.instance)]}],
        "handle": [{"handler": "static_response", "body": "not ours"}],
    });
    cleaned(&neighbour, async {
        cleaned_with(&s, &[&foreign_id], async {
            let (status, body) = s
                .admin(
                    Method::POST,
                    "/config/apps/http/servers/edge/routes",
                    Some(foreign.clone()),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            neighbour
                .edge
                .apply(&[neighbour.state(&theirs)])
                .await
                .unwrap();
            s.edge
                .apply(&[s.state(&ours), s.state(&kept)])
                .await
                .unwrap();

            let done = s
                .edge
                .remove(&[ours.clone(), s.host("never")])
                .await
                .unwrap();
            assert_eq!(
                changes(&done),
                [
                    each(&[&ours], Change::Deleted, false),
                    each(&[&s.host("never")], Change::Absent, false)
                ]
                .concat()
            );
            let err = s.fetch(&ours, Client::trusting(&s.ca)).await.unwrap_err();
            assert!(refused(&err), "{err}");
            for kind in ["host", "tls", "cert"] {
                let path = format!("/id/ossature-edge.{}.{kind}.{ours}", s.instance);
                assert_eq!(s.admin(Method::GET, &path, None).await.0, 404, "{path}");
            }
            assert!(!s.cert_dir.join(format!("{ours}.key")).exists());
            assert!(!s.cert_dir.join(format!("{ours}.crt")).exists());

            s.expect_served(&kept, Client::trusting(&s.ca)).await;
            neighbour
                .expect_served(&theirs, Client::trusting(&neighbour.ca))
                .await;
            let (status, body) = s
                .admin(Method::GET, &format!("/id/{foreign_id}"), None)
                .await;
            assert_eq!(status, 200);
            assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), foreign);

            let writes = s.writes();
            let done = s.edge.remove(std::slice::from_ref(&ours)).await.unwrap();
            assert_eq!(changes(&done), each(&[&ours], Change::Absent, false));
            assert_eq!(s.writes(), writes, "removing what is gone writes nothing");
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_proxied_host_reaches_its_origin() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = setup().await;
    let host = s.host("proxied");
    // A minimal origin: answers every request with the Host it was asked for.
    let origin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = origin.local_addr().unwrap().port();
    let serving = tokio::spawn(async move {
        loop {
            let (mut socket, _) = origin.accept().await.unwrap();
            let mut request = vec![0; 4096];
            let read = socket.read(&mut request).await.unwrap();
            let text = String::from_utf8_lossy(&request[..read]).to_lowercase();
            let asked = text
                .lines()
                .find_map(|l| l.strip_prefix("host: "))
                .unwrap_or("")
                .to_string();
            let body = format!("origin for {asked}");
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
        }
    });
    let state = HostState {
        upstream: Upstream::Proxy {
            url: format!("http://127.0.0.1:{port}"),
        },
        ..s.state(&host)
    };
    cleaned(&s, async {
        s.edge.apply(&[state]).await.unwrap();
        let (status, body) = s.fetch(&host, Client::trusting(&s.ca)).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, format!("origin for {host}:{}", s.https.port()));
    })
    .await;
    serving.abort();
}

#[tokio::test]
async fn invalid_or_unsupported_hosts_fail_before_anything_is_written() {
    let s = setup().await;
    let mut bad_range = s.state(&s.host("ranges"));
    bad_range.allowed_ranges = vec!["10.0.0.0/40".into()];
    let mut managed = s.state(&s.host("managed"));
    managed.certificate = EdgeCertificate::Managed;
    let upper = s.state("Upper.example");

    let err = s
        .edge
        .apply(&[s.state(&s.host("fine")), bad_range])
        .await
        .unwrap_err();
    assert_eq!(err.category(), "InvalidHost");
    assert!(err.to_string().contains("10.0.0.0/40"), "{err}");
    let err = s.edge.apply(&[upper]).await.unwrap_err();
    assert_eq!(err.category(), "InvalidHost");
    let err = s.edge.apply(&[managed]).await.unwrap_err();
    assert_eq!(err.category(), "UnsupportedByEdge");
    assert!(err.to_string().contains("managed"), "{err}");
    assert_eq!((s.reads(), s.writes()), (0, 0));

    // Removing from an instance that never applied makes no empty container.
    let done = s.edge.remove(&[s.host("never")]).await.unwrap();
    assert_eq!(
        changes(&done),
        each(&[&s.host("never")], Change::Absent, false)
    );
    assert_eq!(s.writes(), 0);
    assert_eq!(s.edge.probe().await.unwrap(), Probe::Missing);
}

#[tokio::test]
async fn a_thousand_hosts_cost_one_write() {
    const HOSTS: usize = 1000;
    let s = setup().await;
    let started = Instant::now();
    let states: Vec<HostState> = (0..HOSTS)
        .map(|i| s.state(&s.host(&format!("h{i}"))))
        .collect();
    let issued = started.elapsed();
    let names: Vec<String> = states.iter().map(|h| h.host.clone()).collect();
    cleaned(&s, async {
        let writes = s.writes();
        let started = Instant::now();
        let done = s.edge.apply(&states).await.unwrap();
        let applied = started.elapsed();
        assert!(done.iter().all(|c| c.change == Change::Created));
        assert_eq!(s.writes() - writes, 1, "one write of the apps");
        s.expect_served(&names[HOSTS - 1], Client::trusting(&s.ca))
            .await;

        let (reads, writes) = (s.reads(), s.writes());
        let started = Instant::now();
        let done = s.edge.apply(&states).await.unwrap();
        let unchanged = started.elapsed();
        assert!(done.iter().all(|c| c.change == Change::Unchanged));
        assert_eq!((s.reads() - reads, s.writes() - writes), (1, 0));

        let writes = s.writes();
        let started = Instant::now();
        let done = s.edge.remove(&names).await.unwrap();
        let removed = started.elapsed();
        assert!(done.iter().all(|c| c.change == Change::Deleted));
        assert_eq!(s.writes() - writes, 1);
        println!(
            "{HOSTS} hosts: certificates made in {issued:?}; apply {applied:?} (1 write), \
             unchanged apply {unchanged:?} (0 writes), remove {removed:?} (1 write); \
             {} writes refused by If-Match under concurrent tests and redone",
            s.edge.conflicts()
        );
    })
    .await;
}

/// The ids of the routes of `server`, in order.
async fn route_ids(s: &Setup, server: &str) -> Vec<String> {
    let (status, body) = s
        .admin(
            Method::GET,
            &format!("{}/routes", s.server_path(server)),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let routes: Value = serde_json::from_str(&body).unwrap();
    routes
        .as_array()
        .unwrap_or_else(|| panic!("routes are an array: {routes}"))
        .iter()
        .map(|r| r["@id"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn a_server_whose_routes_were_removed_gets_them_back_from_instances_repairing_at_once() {
    let one = setup_own_server().await;
    let two = one.beside().await;
    let batch = |s: &Setup| -> Vec<HostState> {
        (0..5).map(|i| s.state(&s.host(&format!("r{i}")))).collect()
    };
    let (first, second) = (batch(&one), batch(&two));
    cleaned(&one, async {
        cleaned(&two, async {
            one.edge.apply(&first).await.unwrap();
            two.edge.apply(&second).await.unwrap();

            // As a configuration reloaded without them: no `routes` at all.
            let path = format!("{}/routes", one.server_path(&one.server));
            let (status, body) = one.admin(Method::DELETE, &path, None).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(one.edge.probe().await.unwrap(), Probe::Missing);

            let (a, b) = tokio::join!(one.edge.apply(&first), two.edge.apply(&second));
            for (done, states) in [(a, &first), (b, &second)] {
                let hosts: Vec<&str> = states.iter().map(|s| s.host.as_str()).collect();
                assert_eq!(
                    changes(&done.unwrap()),
                    each(&hosts, Change::Updated, true),
                    "routes lost are drift"
                );
            }
            for (s, states) in [(&one, &first), (&two, &second)] {
                let seen = s.edge.observe(states).await.unwrap();
                assert!(
                    seen.hosts.iter().all(|c| c.change == Change::Unchanged),
                    "{seen:?}"
                );
                assert_eq!(s.edge.probe().await.unwrap(), Probe::Configured);
                for state in states {
                    s.expect_served(&state.host, Client::trusting(&s.ca)).await;
                }
            }
            let mut ids = route_ids(&one, &one.server).await;
            ids.sort();
            let mut both = vec![one.edge.routes_id(), two.edge.routes_id()];
            both.sort();
            assert_eq!(ids, both, "one container each, nothing else");
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn hosts_are_removed_and_applied_when_their_server_is_gone() {
    // The server gone is what the adapter sees of a removed HTTP app too:
    // the path to its arrays ends early. (The shared app stays.)
    let s = setup_own_server().await;
    let gone = s.host("gone");
    let kept = s.host("kept");
    let kept_state = s.state(&kept);
    cleaned(&s, async {
        s.edge
            .apply(&[s.state(&gone), kept_state.clone()])
            .await
            .unwrap();
        let server = s.server_path(&s.server);
        let (status, body) = s.admin(Method::DELETE, &server, None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(s.edge.probe().await.unwrap(), Probe::Missing);

        // Its certificate was still loaded: deleted, with its files.
        let done = s.edge.remove(std::slice::from_ref(&gone)).await.unwrap();
        assert_eq!(changes(&done), each(&[&gone], Change::Deleted, false));
        let cert = format!("/id/ossature-edge.{}.cert.{gone}", s.instance);
        assert_eq!(s.admin(Method::GET, &cert, None).await.0, 404);
        assert!(!s.cert_dir.join(format!("{gone}.key")).exists());
        let writes = s.writes();
        let done = s.edge.remove(std::slice::from_ref(&gone)).await.unwrap();
        assert_eq!(changes(&done), each(&[&gone], Change::Absent, false));
        assert_eq!(s.writes(), writes, "nothing of ours left to remove");

        let seen = s
            .edge
            .observe(std::slice::from_ref(&kept_state))
            .await
            .unwrap();
        assert_eq!(changes(&seen.hosts), each(&[&kept], Change::Updated, true));
        let done = s
            .edge
            .apply(std::slice::from_ref(&kept_state))
            .await
            .unwrap();
        assert_eq!(changes(&done), each(&[&kept], Change::Updated, true));
        let seen = s
            .edge
            .observe(std::slice::from_ref(&kept_state))
            .await
            .unwrap();
        assert_eq!(
            changes(&seen.hosts),
            each(&[&kept], Change::Unchanged, false)
        );
        assert_eq!(s.edge.probe().await.unwrap(), Probe::Configured);
        assert_eq!(route_ids(&s, &s.server).await, vec![s.edge.routes_id()]);
        let (status, body) = s
            .admin(
                Method::GET,
                &format!("{server}/tls_connection_policies"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let policies: Value = serde_json::from_str(&body).unwrap();
        let ids: Vec<&str> = policies
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["@id"].as_str())
            .collect();
        assert_eq!(ids, [format!("ossature-edge.{}.tls.{kept}", s.instance)]);
    })
    .await;
}

#[tokio::test]
async fn the_probe_notices_the_loss_of_our_policies_certificates_routes_or_server() {
    let s = setup_own_server().await;
    let states = [s.state(&s.host("a")), s.state(&s.host("b"))];
    let server = s.server_path(&s.server);
    let ours = |kind: &str| -> Vec<String> {
        states
            .iter()
            .map(|h| format!("/id/ossature-edge.{}.{kind}.{}", s.instance, h.host))
            .collect()
    };
    cleaned(&s, async {
        s.edge.apply(&states).await.unwrap();
        let losses: [(&str, Vec<String>); 4] = [
            (
                "the server's policies",
                vec![format!("{server}/tls_connection_policies")],
            ),
            ("our certificates", ours("cert")),
            ("the server's routes", vec![format!("{server}/routes")]),
            ("the server", vec![server.clone()]),
        ];
        for (what, paths) in losses {
            let (reads, writes) = (s.reads(), s.writes());
            assert_eq!(s.edge.probe().await.unwrap(), Probe::Configured, "{what}");
            assert_eq!(s.writes(), writes);
            assert!(s.reads() - reads <= 4, "a few small reads");
            for path in &paths {
                let (status, body) = s.admin(Method::DELETE, path, None).await;
                assert_eq!(status, 200, "{path}: {body}");
            }
            assert_eq!(
                s.edge.probe().await.unwrap(),
                Probe::Missing,
                "{what} removed"
            );
            let done = s.edge.apply(&states).await.unwrap();
            assert!(done.iter().all(|c| c.drift), "{what}: {done:?}");
        }
        assert_eq!(s.edge.probe().await.unwrap(), Probe::Configured);
    })
    .await;
}
