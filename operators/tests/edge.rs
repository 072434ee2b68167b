//! A tenant at the edge, through the operator and the real Caddy: onboarded,
//! it is reachable over TLS at `<tenant>.<root-domain>` with a certificate
//! of the platform's ACME issuer (Pebble), verified against Pebble's root; mutual TLS and allowed source ranges set on the Tenant are
//! enforced within seconds; a lost edge configuration is noticed by the
//! probe and put back; no private key can be read through Caddy's admin
//! API; deleting the tenant takes its host off the edge. A short-lived host
//! certificate is renewed in the CA's renewal window (ARI) and served by
//! the edge without a request in flight failing.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{Event, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use ossature_crds::{Certificate, Tenant};
use serde_json::{Value, json};

const ROOT: &str = "ossature.test";

async fn admin(
    env: &BTreeMap<String, String>,
    method: reqwest::Method,
    path: &str,
) -> (u16, Value) {
    admin_with(env, method, path, None).await
}

/// An admin API call with a body; sent again while a reload (anyone's)
/// swaps Caddy's admin listener.
async fn admin_with(
    env: &BTreeMap<String, String>,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}{path}", env["OSSATURE_EDGE_ADMIN_URL"]);
    let mut tries = 0;
    let response = loop {
        let mut request = http().request(method.clone(), &url);
        if let Some(body) = &body {
            request = request.json(body);
        }
        match request.send().await {
            Ok(response) => break response,
            Err(e) if !e.is_timeout() && tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("Caddy's admin API answers {method} {path}: {e:?}"),
        }
    };
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn secret_text(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

/// A client certificate of `tenant`'s CA: its chain and key, and the CA.
async fn client_certificate(client: &kube::Client, tenant: &str) -> (String, String) {
    let ns = format!("tn-{tenant}");
    let certificates: Api<Certificate> = Api::namespaced(client.clone(), &ns);
    let spec = json!({"dnsNames": [format!("client.{tenant}.{ROOT}")], "usages": ["Client"],
                      "secretName": "client-tls", "issuer": {"tenantCA": {}}});
    certificates
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "ossature.dev/v1alpha1", "kind": "Certificate",
                "metadata": {"name": "client"}, "spec": spec,
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = wait_for("the client certificate", Duration::from_secs(60), || {
        let secrets = secrets.clone();
        async move { secrets.get_opt("client-tls").await.ok().flatten() }
    })
    .await;
    (
        format!(
            "{}\n{}",
            secret_text(&secret, "tls.crt").trim_end(),
            secret_text(&secret, "tls.key")
        ),
        secret_text(&secret, "ca.crt"),
    )
}

/// Held by a test that adds or removes a Caddy listener, and by one in which
/// no request may fail.
static LISTENERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_is_served_at_its_host_with_its_mtls_and_ranges() {
    // The platform's ACME issuer signs hosts: the stack's Pebble.
    let (platform, _operator) = platform("platform", json!({})).await;
    let Platform {
        env, client, sel, ..
    } = &platform;
    let issuer_name = &platform.issuer;
    let tenants: Api<Tenant> = Api::all(client.clone());
    let name = format!("edge{}", suffix());
    let other = format!("{name}-eu");
    for t in [&name, &other] {
        tenants
            .create(&PostParams::default(), &labelled(tenant(t), sel))
            .await
            .unwrap();
    }
    let ready = wait_tenant_ready(&tenants, &name, Duration::from_secs(90)).await;
    wait_tenant_ready(&tenants, &other, Duration::from_secs(90)).await;
    let status = ready.status.unwrap();
    let host = format!("{name}.{ROOT}");
    assert_eq!(status.host.as_deref(), Some(host.as_str()));
    for wanted in ["CertificateAuthorityReady", "CertificateReady", "EdgeReady"] {
        assert_eq!(
            condition(&status.conditions, wanted).map(|c| c.0),
            Some("True".into()),
            "{wanted}"
        );
    }

    // Real TLS through the edge: the host's certificate chains to Pebble's
    // root (fetched now: Pebble makes a new one when it starts).
    let pebble = issuing_root(env).await;
    let (code, body) = fetch(env, &host, &pebble, None, "127.0.0.1").await.unwrap();
    assert_eq!(code, 200);
    assert_eq!(body, format!("ossature edge: {name}\n"));
    let (client_chain, tenant_ca) = client_certificate(client, &name).await;
    let (_, other_ca) = client_certificate(client, &other).await;
    assert_ne!(tenant_ca, other_ca);
    assert!(
        fetch(env, &host, &tenant_ca, None, "127.0.0.1")
            .await
            .is_err(),
        "the host's certificate is the public CA's, not the tenant CA's"
    );

    // Mutual TLS required, by the tenant's CA; then only 127.0.0.2 may come.
    tenants
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"edge": {"clientAuth": {"mode": "Required"}}}})),
        )
        .await
        .unwrap();
    let other_chain = {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &format!("tn-{other}"));
        let s = secrets.get("client-tls").await.unwrap();
        format!(
            "{}\n{}",
            secret_text(&s, "tls.crt").trim_end(),
            secret_text(&s, "tls.key")
        )
    };
    wait_for("mTLS required", Duration::from_secs(15), || {
        let env = &env;
        let (host, ca) = (&host, &pebble);
        async move {
            fetch(env, host, ca, None, "127.0.0.1")
                .await
                .is_err()
                .then_some(())
        }
    })
    .await;
    let (code, _) = fetch(env, &host, &pebble, Some(&client_chain), "127.0.0.1")
        .await
        .unwrap();
    assert_eq!(
        code, 200,
        "a client certificate of the tenant's CA is let in"
    );
    assert!(
        fetch(env, &host, &pebble, Some(&other_chain), "127.0.0.1")
            .await
            .is_err(),
        "a client certificate of another tenant's CA is refused"
    );

    tenants
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"edge": {"allowedSourceRanges": ["127.0.0.2/32"]}}})),
        )
        .await
        .unwrap();
    wait_for("the allow-list", Duration::from_secs(15), || {
        let env = &env;
        let (host, ca, chain) = (&host, &pebble, &client_chain);
        async move {
            let outside = fetch(env, host, ca, Some(chain), "127.0.0.3").await;
            matches!(outside, Ok((403, _)) | Err(_)).then_some(())
        }
    })
    .await;
    let (code, _) = fetch(env, &host, &pebble, Some(&client_chain), "127.0.0.2")
        .await
        .unwrap();
    assert_eq!(
        code, 200,
        "an address inside the allowed range gets through"
    );

    // No key at the admin surface.
    let (_, config) = admin(env, reqwest::Method::GET, "/config/").await;
    assert!(!config.to_string().contains("PRIVATE KEY"));

    // The edge loses our configuration (as a restart would): noticed by the
    // probe, every host put back, within seconds and at the default resync.
    // Settled first: a reconcile of the new generation would put it back
    // as provisioned, not as drift.
    wait_tenant_ready(&tenants, &name, Duration::from_secs(30)).await;
    let (_, routes) = admin(
        env,
        reqwest::Method::GET,
        "/config/apps/http/servers/edge/routes",
    )
    .await;
    let ours: Vec<String> = routes
        .as_array()
        .unwrap()
        .iter()
        // Only the container holding our host: other tests share the edge.
        .filter(|r| r.to_string().contains(&format!(".host.{host}\"")))
        .filter_map(|r| r["@id"].as_str())
        .filter(|id| id.starts_with("ossature-edge.s-"))
        .map(String::from)
        .collect();
    assert!(!ours.is_empty(), "{routes}");
    for id in &ours {
        admin(env, reqwest::Method::DELETE, &format!("/id/{id}")).await;
    }
    wait_for("the host back on the edge", Duration::from_secs(30), || {
        let env = &env;
        let (host, ca, chain) = (&host, &pebble, &client_chain);
        async move {
            // Caddy answers 200 and no body where no route matches.
            let served = fetch(env, host, ca, Some(chain), "127.0.0.2").await;
            matches!(served, Ok((200, body)) if body.starts_with("ossature edge: ")).then_some(())
        }
    })
    .await;
    let events: Api<Event> = Api::all(client.clone());
    wait_for("a DriftCorrected Event", Duration::from_secs(15), || {
        let events = events.clone();
        let name = name.clone();
        async move {
            let list = events
                .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
                .await
                .ok()?;
            list.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("DriftCorrected"))
                .then_some(())
        }
    })
    .await;

    // Deleted: off the edge.
    delete_tenants(&tenants, &[&name, &other]).await;
    Api::<ossature_crds::AcmeIssuer>::all(client.clone())
        .delete(issuer_name, &Default::default())
        .await
        .unwrap();
    let (_, config) = admin(env, reqwest::Method::GET, "/config/").await;
    assert!(
        !config.to_string().contains(&host),
        "{host} left at the edge"
    );
    assert!(!matches!(
        fetch(env, &host, &pebble, Some(&client_chain), "127.0.0.2").await,
        Ok((200, _))
    ));
}

/// What one request through the edge was served: the leaf's serial (as in
/// a Certificate's status) and validity, or why it failed.
#[derive(Debug, Clone)]
struct Served {
    at: std::time::SystemTime,
    outcome: Result<Leaf, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Leaf {
    serial: String,
    not_before: Timestamp,
    not_after: Timestamp,
}

fn leaf_of(der: &[u8]) -> Leaf {
    let (_, parsed) = x509_parser::parse_x509_certificate(der).unwrap();
    let at = |t: x509_parser::time::ASN1Time| Timestamp::from_second(t.timestamp()).unwrap();
    Leaf {
        serial: parsed.raw_serial_as_string(),
        not_before: at(parsed.validity().not_before),
        not_after: at(parsed.validity().not_after),
    }
}

/// One request on a new connection (so each sees the certificate served
/// now), verified against `trust`; anything but 200 and the tenant's body
/// is a failure.
async fn serve_once(addr: SocketAddr, host: &str, trust: &str, body: &str) -> Result<Leaf, String> {
    let roots = reqwest::Certificate::from_pem_bundle(trust.as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .tls_certs_only(roots)
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .resolve(host, addr)
        .build()
        .unwrap();
    let response = client
        .get(format!("https://{host}:{}/", addr.port()))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let leaf = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(leaf_of)
        .ok_or("no peer certificate")?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| format!("{e:?}"))?;
    if status != 200 || text != body {
        return Err(format!("{status}: {text}"));
    }
    Ok(leaf)
}

/// The host certificate's record in OpenBao.
async fn host_record(env: &BTreeMap<String, String>, tenant: &str) -> Value {
    let (code, body) = record(
        env,
        tenant,
        &format!("tn-{tenant}"),
        ossature_model::certificates::host::HOST,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    body["data"]["data"].clone()
}

fn first_pem(chain: &str) -> String {
    const END: &str = "-----END CERTIFICATE-----";
    let end = chain.find(END).unwrap() + END.len();
    format!("{}\n", &chain[..end])
}

fn timestamp(value: &Value) -> Timestamp {
    value.as_str().unwrap().parse().unwrap()
}

/// The renewal window Pebble tells for the certificate `chain_pem`, set
/// through its management API.
async fn set_renewal_window(
    env: &BTreeMap<String, String>,
    chain_pem: &str,
    start: Timestamp,
    end: Timestamp,
) {
    let api_trust = std::fs::read_to_string(&env["OSSATURE_ACME_CA_BUNDLE"]).unwrap();
    let mut url = reqwest::Url::parse(&env["OSSATURE_ACME_ROOTS_URL"]).unwrap();
    url.set_path("/set-renewal-info/");
    let window = json!({"suggestedWindow": {"start": start.to_string(), "end": end.to_string()}});
    let response = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(api_trust.as_bytes()).unwrap())
        // Pebble refuses requests without one.
        .user_agent("ossature-test")
        .build()
        .unwrap()
        .post(url)
        .json(&json!({"Certificate": first_pem(chain_pem), "ARIResponse": window.to_string()}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert!(
        status.is_success(),
        "{status}: {}",
        response.text().await.unwrap_or_default()
    );
}

/// The tenant's host certificate, short-lived, is renewed when the CA's
/// renewal window (ARI) says, by an order that names the certificate it
/// replaces, and the edge serves the new one while requests run through it
/// without one failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_host_certificate_is_served_without_a_failed_request() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Instant, SystemTime};

    // Not a request may fail here: no other test adds or removes a listener meanwhile.
    let _listeners = LISTENERS.lock().await;

    let profile = ossature_bootstrap::components::PEBBLE_SHORTLIVED_PROFILE;
    let (platform, operator) = platform("rn", json!({"profile": profile})).await;
    let mut operator = Some(operator);
    let Platform {
        env, client, sel, ..
    } = &platform;
    let issuer_name = &platform.issuer;
    let tenants: Api<Tenant> = Api::all(client.clone());
    let name = format!("rn-{}", suffix());
    tenants
        .create(&PostParams::default(), &labelled(tenant(&name), sel))
        .await
        .unwrap();
    wait_tenant_ready(&tenants, &name, Duration::from_secs(120)).await;
    let host = format!("{name}.{ROOT}");
    let addr: SocketAddr = env["OSSATURE_EDGE_HTTPS_ADDR"].parse().unwrap();
    let pebble = issuing_root(env).await;
    let body = format!("ossature edge: {name}\n");

    // Requests in a loop, each on its own connection, until told to stop
    // (bounded in count and time all the same).
    let log: Arc<Mutex<Vec<Served>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let requests = tokio::spawn({
        let (log, stop) = (log.clone(), stop.clone());
        let (host, pebble, body) = (host.clone(), pebble.clone(), body.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(600);
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let outcome = serve_once(addr, &host, &pebble, &body).await;
                let at = SystemTime::now();
                log.lock().unwrap().push(Served { at, outcome });
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let served = |log: &Arc<Mutex<Vec<Served>>>| -> Vec<Served> { log.lock().unwrap().clone() };
    wait_for("a first request served", Duration::from_secs(30), || {
        let log = log.clone();
        async move { served(&log).iter().any(|s| s.outcome.is_ok()).then_some(()) }
    })
    .await;

    // The operator stopped with no order in progress: what it holds stays.
    let mut held = Value::Null;
    for attempt in 0..3 {
        drop(operator.take());
        held = host_record(env, &name).await;
        if held["order"] == "" {
            break;
        }
        assert!(attempt < 2, "an order in progress at every stop: {held}");
        operator = Some(platform.start_operator());
        wait_for("the order completed", Duration::from_secs(60), || {
            let env = &env;
            let name = &name;
            async move { (host_record(env, name).await["order"] == "").then_some(()) }
        })
        .await;
    }
    let old_chain = held["certificate"].as_str().unwrap().to_string();
    let old_serial = held["serial"].as_str().unwrap().to_string();
    let (old_from, old_until) = (timestamp(&held["notBefore"]), timestamp(&held["notAfter"]));
    let lifetime = old_until.duration_since(old_from);
    assert!(
        (299..=300).contains(&lifetime.as_secs()),
        "the short-lived profile: {lifetime}"
    );
    let before_restart: std::collections::BTreeSet<String> = served(&log)
        .into_iter()
        .filter_map(|s| s.outcome.ok().map(|l| l.serial))
        .collect();

    // The CA moves the held certificate's renewal window well ahead of when
    // the two-thirds rule would renew it: only a client following the
    // window renews inside it.
    let now = Timestamp::now();
    let start = Timestamp::from_second(now.as_second() + 30).unwrap();
    let end = Timestamp::from_second(start.as_second() + 20).unwrap();
    let by_rule = old_from + lifetime * 7 / 12;
    assert!(
        end + Duration::from_secs(30) < by_rule,
        "the window ({start}..{end}) must come well before the rule's time ({by_rule})"
    );
    set_renewal_window(env, &old_chain, start, end).await;
    let _operator = platform.start_operator();

    let certificates: Api<Certificate> = Api::namespaced(client.clone(), &format!("tn-{name}"));
    let planned = wait_for(
        "a renewal time in the CA's window",
        Duration::from_secs(45),
        || {
            let certificates = certificates.clone();
            let old_serial = &old_serial;
            async move {
                let status = certificates
                    .get(ossature_model::certificates::host::HOST)
                    .await
                    .ok()?
                    .status?;
                let renews: Timestamp = status.renewal_time?.parse().ok()?;
                (status.serial_number.as_ref() == Some(old_serial)
                    && start <= renews
                    && renews <= end)
                    .then_some(renews)
            }
        },
    )
    .await;

    // Served by the edge: a new certificate, then a few more requests.
    let is_new = |leaf: &Leaf| leaf.serial != old_serial && !before_restart.contains(&leaf.serial);
    let (first_new_at, new) = wait_for(
        "a renewed certificate served",
        Duration::from_secs(180),
        || {
            let log = log.clone();
            async move {
                served(&log).into_iter().find_map(|s| match s.outcome {
                    Ok(leaf) if is_new(&leaf) => Some((s.at, leaf)),
                    _ => None,
                })
            }
        },
    )
    .await;
    wait_for(
        "more requests after the swap",
        Duration::from_secs(60),
        || {
            let log = log.clone();
            async move {
                let after: Vec<Served> = served(&log)
                    .into_iter()
                    .filter(|s| s.at > first_new_at)
                    .collect();
                let long = after.last().is_some_and(|s| {
                    s.at.duration_since(first_new_at).unwrap() > Duration::from_secs(10)
                });
                (after.len() >= 30 && long).then_some(())
            }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    requests.await.unwrap();
    let log = served(&log);

    let after = log.iter().filter(|s| s.at >= first_new_at).count();
    eprintln!(
        "RENEWAL window {start}..{end} planned {planned} renewed {} requests {} (after the swap {after})",
        new.not_before,
        log.len()
    );
    let failed: Vec<String> = log
        .iter()
        .filter_map(|s| {
            let e = s.outcome.as_ref().err()?;
            Some(format!("{}: {e}", Timestamp::try_from(s.at).unwrap()))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:#?}",
        failed.len(),
        log.len()
    );
    let tail: Vec<&Leaf> = log
        .iter()
        .rev()
        .take(10)
        .filter_map(|s| s.outcome.as_ref().ok())
        .collect();
    assert!(
        tail.iter().all(|l| l.serial != old_serial),
        "the old certificate still served at the end: {tail:?}"
    );
    assert!(
        log.iter()
            .any(|s| s.outcome.as_ref().is_ok_and(|l| l.serial == old_serial)),
        "the old certificate was served before"
    );

    // Renewed inside the window, before the rule and before the old expiry.
    assert!(new.not_before < old_until && Timestamp::try_from(first_new_at).unwrap() < old_until);
    assert!(
        new.not_before >= start - Duration::from_secs(2) && new.not_before < by_rule,
        "renewed at {} for a window {start}..{end} (planned {planned}, rule {by_rule})",
        new.not_before
    );
    assert!(new.not_after > old_until);
    let status = certificates
        .get(ossature_model::certificates::host::HOST)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_ne!(status.serial_number.as_deref(), Some(old_serial.as_str()));
    let not_before: Timestamp = status.not_before.as_deref().unwrap().parse().unwrap();
    assert!(not_before >= new.not_before, "{status:?}");
    assert_ne!(status.renewal_time, Some(planned.to_string()));

    // The renewal's order named the certificate it replaced: the CA now
    // refuses another replacement of it.
    let credentials = Api::<Secret>::namespaced(client.clone(), "kube-system")
        .get(&format!("acme-account-{issuer_name}"))
        .await
        .unwrap();
    let credentials = secret_text(&credentials, "credentials");
    let settings = ossature_operator::adapters::acme::IssuerSettings {
        directory_trust_pem: Some(
            std::fs::read_to_string(&env["OSSATURE_ACME_CA_BUNDLE"]).unwrap(),
        ),
        ..ossature_operator::adapters::acme::IssuerSettings::new(&env["OSSATURE_ACME_DIRECTORY"])
    };
    let responder = ossature_operator::adapters::acme::ChallTestSrv::new(
        &env["OSSATURE_ACME_CHALLENGE_ADMIN_URL"],
    )
    .unwrap();
    let acme = ossature_operator::adapters::acme::Acme::new(
        settings,
        Arc::new(responder),
        Default::default(),
    )
    .unwrap();
    let (account, _) = acme.account(Some(&credentials)).await.unwrap();
    let old_id = ossature_operator::adapters::acme::certificate_id(&old_chain).unwrap();
    match account
        .begin(std::slice::from_ref(&host), Some(profile), Some(&old_id))
        .await
    {
        Err(ossature_operator::adapters::acme::AcmeError::Refused {
            problem_type: Some(t),
            ..
        }) if t.ends_with(":alreadyReplaced") => {}
        other => panic!("the renewal did not replace {old_id}: {other:?}"),
    }

    delete_tenants(&tenants, &[&name]).await;
    // Gone before the operator stops: its finalizer needs the operator.
    delete_and_wait(
        &Api::<ossature_crds::AcmeIssuer>::all(client.clone()),
        issuer_name,
        Duration::from_secs(60),
    )
    .await;
}

/// The operator puts back what its edge server lost: a server whose
/// `routes` were removed serves the tenant again without anyone's help,
/// and with the server gone (as the adapter sees a removed HTTP app too)
/// deleting the tenant does not block. On a Caddy server of the test's
/// own: the shared `edge` server stays whole for other tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_served_again_after_their_server_lost_its_routes_and_leave_once_it_is_gone() {
    use futures::FutureExt;

    // A server of its own comes and goes: a reload that changes Caddy's
    // listeners was seen to drop a connection of another server.
    let _listeners = LISTENERS.lock().await;

    let (platform, operator) = platform("repair", json!({})).await;
    drop(operator);
    let Platform {
        env, client, sel, ..
    } = &platform;
    let edge_server = format!("srv-{sel}");
    let server = format!("/config/apps/http/servers/{edge_server}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // As the stack sets up its `edge` server.
    let config = json!({
        "listen": [addr.to_string()],
        "routes": [],
        "tls_connection_policies": [{}],
        "automatic_https": {"disable": true},
    });
    let (status, body) = admin_with(env, reqwest::Method::PUT, &server, Some(config)).await;
    assert_eq!(status, 200, "{body}");

    let flags = [
        "--host-issuer",
        &platform.issuer,
        "--edge-server",
        &edge_server,
    ];
    let _operator = start_operator_with(env, sel, &flags);
    let tenants: Api<Tenant> = Api::all(client.clone());
    let name = format!("rp-{}", suffix());
    let outcome = std::panic::AssertUnwindSafe(async {
        tenants
            .create(&PostParams::default(), &labelled(tenant(&name), sel))
            .await
            .unwrap();
        wait_tenant_ready(&tenants, &name, Duration::from_secs(120)).await;
        let host = format!("{name}.{ROOT}");
        let pebble = issuing_root(env).await;
        let body = format!("ossature edge: {name}\n");
        serve_once(addr, &host, &pebble, &body).await.unwrap();

        let (status, text) = admin(env, reqwest::Method::DELETE, &format!("{server}/routes")).await;
        assert_eq!(status, 200, "{text}");
        wait_for("the host served again", Duration::from_secs(30), || {
            let (host, pebble, body) = (&host, &pebble, &body);
            async move { serve_once(addr, host, pebble, body).await.ok() }
        })
        .await;
        let ready = wait_tenant_ready(&tenants, &name, Duration::from_secs(30)).await;
        assert_eq!(
            condition(&ready.status.unwrap().conditions, "EdgeReady").map(|c| c.0),
            Some("True".into())
        );

        let (status, text) = admin(env, reqwest::Method::DELETE, &server).await;
        assert_eq!(status, 200, "{text}");
        delete_tenants(&tenants, &[&name]).await;
        // Taken off with the server still gone: removal makes no server.
        assert_eq!(
            admin(env, reqwest::Method::GET, &server).await,
            (200, Value::Null)
        );
        let (_, config) = admin(env, reqwest::Method::GET, "/config/").await;
        assert!(
            !config.to_string().contains(&host),
            "{host} left at the edge"
        );
    })
    .catch_unwind()
    .await;
    let cleanup = std::panic::AssertUnwindSafe(async {
        if outcome.is_err() {
            // Nothing left behind, even by an operator without the repair:
            // the server back (empty; 409 if there), then the tenant off.
            admin_with(env, reqwest::Method::PUT, &server, Some(json!({}))).await;
            let _ = tenants.delete(&name, &Default::default()).await;
            wait_tenant_gone(&tenants, &name, Duration::from_secs(60)).await;
        }
        admin(env, reqwest::Method::DELETE, &server).await;
        // Gone before the operator stops: its finalizer needs the operator.
        let issuers = Api::<ossature_crds::AcmeIssuer>::all(client.clone());
        delete_and_wait(&issuers, &platform.issuer, Duration::from_secs(60)).await;
    })
    .catch_unwind()
    .await;
    for result in [outcome, cleanup] {
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }
}
