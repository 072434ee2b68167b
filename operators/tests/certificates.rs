//! Certificates from a tenant's own CA, against the real stack: names a
//! tenant does not own are refused at admission (or Stalled where admission
//! cannot see them); a certificate is issued, verifies against its tenant's
//! CA and no other, lands in the Secret asked for, is renewed before expiry
//! with a new serial, follows a spec change, is put back when its Secret is
//! deleted by hand, and leaves nothing behind when deleted. An issuance
//! killed after its key was recorded signs that same key after a restart.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use ossature_crds::Certificate;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

const ROOT: &str = "ossature.test";

fn certificate(name: &str, namespace: &str, spec: Value) -> Certificate {
    serde_json::from_value(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": "Certificate",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }))
    .unwrap()
}

fn tenant_ca() -> Value {
    json!({"tenantCA": {}})
}

/// A test's stack and operator, and a Ready tenant with its Certificates.
struct Setup {
    env: std::collections::BTreeMap<String, String>,
    client: kube::Client,
    sel: String,
    operator: Operator,
    name: String,
    ns: String,
    certificates: Api<Certificate>,
}

async fn setup() -> Setup {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let operator = start_operator(&env, &sel);
    let name = ready_tenant(&client, &sel).await;
    let ns = format!("tn-{name}");
    let certificates: Api<Certificate> = Api::namespaced(client.clone(), &ns);
    Setup {
        env,
        client,
        sel,
        operator,
        name,
        ns,
        certificates,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_a_tenant_does_not_own_are_refused() {
    let Setup {
        client,
        operator: _operator,
        name,
        ns,
        certificates,
        ..
    } = setup().await;

    // The policy is written by the operator at start: wait until it bites.
    let other = format!("api.{name}-eu.{ROOT}");
    let refused = wait_for("the admission policy", Duration::from_secs(30), || {
        let certificates = certificates.clone();
        let other = other.clone();
        let ns = ns.clone();
        async move {
            let attempt = certificate(
                "other",
                &ns,
                json!({"dnsNames": [other], "issuer": tenant_ca()}),
            );
            match certificates.create(&PostParams::default(), &attempt).await {
                Err(kube::Error::Api(e)) if e.code == 422 || e.code == 403 => Some(e.message),
                Ok(_) => {
                    let _ = certificates.delete("other", &DeleteParams::default()).await;
                    None
                }
                Err(_) => None,
            }
        }
    })
    .await;
    assert!(
        refused.contains(&format!("{name}.{ROOT}")) && refused.contains(&other),
        "the refusal names what the tenant owns and what it asked: {refused}"
    );

    let refusals = [
        (
            ns.as_str(),
            json!({"dnsNames": [format!("*.{ROOT}")], "issuer": tenant_ca()}),
        ),
        (
            ns.as_str(),
            json!({"dnsNames": [ROOT], "issuer": tenant_ca()}),
        ),
        (
            "default",
            json!({"dnsNames": [format!("{name}.{ROOT}")], "issuer": tenant_ca()}),
        ),
        (
            ns.as_str(),
            json!({"dnsNames": [format!("API.{name}.{ROOT}")], "issuer": tenant_ca()}),
        ),
        (
            ns.as_str(),
            json!({"dnsNames": [format!("{name}.{ROOT}")], "issuer": tenant_ca(),
                             "lifetime": "1h", "renewBefore": "2h"}),
        ),
        (
            ns.as_str(),
            json!({"dnsNames": [format!("{name}.{ROOT}"), format!("{name}.{ROOT}")],
                             "issuer": tenant_ca()}),
        ),
        (
            ns.as_str(),
            json!({"dnsNames": [format!("{name}.{ROOT}")], "issuer": {}}),
        ),
        // Workloads by URI: only the tenant's own, only from its CA.
        (ns.as_str(), json!({"issuer": tenant_ca()})),
        (
            ns.as_str(),
            json!({"uris": [format!("spiffe://{name}-eu.{ROOT}/ns/tn-{name}-eu/sa/api")],
                   "issuer": tenant_ca()}),
        ),
        (
            ns.as_str(),
            json!({"uris": [format!("spiffe://{name}.{ROOT}/ns/tn-{name}-eu/sa/api")],
                   "issuer": tenant_ca()}),
        ),
        (
            ns.as_str(),
            json!({"uris": [format!("https://{name}.{ROOT}/api")], "issuer": tenant_ca()}),
        ),
        (
            ns.as_str(),
            json!({"uris": [format!("spiffe://{name}.{ROOT}/ns/{ns}/sa/api")],
                   "issuer": {"acme": {"name": "public"}}}),
        ),
    ];
    for (namespace, spec) in refusals {
        // Untyped: some of these cannot even be built as a Certificate.
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            namespace,
            &ApiResource::erase::<Certificate>(&()),
        );
        let body: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Certificate",
            "metadata": {"name": "bad", "namespace": namespace},
            "spec": spec,
        }))
        .unwrap();
        let result = api.create(&PostParams::default(), &body).await;
        assert!(
            matches!(&result, Err(kube::Error::Api(e)) if e.code == 422 || e.code == 403),
            "{namespace} {spec} was accepted: {result:?}"
        );
    }

    // A name outside the root domain: only the operator can tell (a custom
    // domain the tenant has not proven).
    create(
        &certificates,
        "custom",
        json!({"dnsNames": ["shop.example.com"], "issuer": tenant_ca()}),
    )
    .await;
    let message = wait_for("NameNotOwned", Duration::from_secs(30), || {
        let certificates = certificates.clone();
        async move {
            let s = certificates.get("custom").await.ok()?.status?;
            let stalled = s.conditions.iter().find(|c| c.type_ == "Stalled")?;
            (stalled.reason == "NameNotOwned").then(|| stalled.message.clone())
        }
    })
    .await;
    assert!(message.contains("shop.example.com"), "{message}");

    delete_tenants(&Api::all(client.clone()), &[&name]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_of_the_tenant_ca_is_issued_renewed_and_removed() {
    let Setup {
        env,
        client,
        sel,
        operator: _operator,
        name,
        ns,
        certificates,
    } = setup().await;
    let other = ready_tenant(&client, &sel).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let api_host = format!("api.{name}.{ROOT}");
    create(
        &certificates,
        "api",
        json!({
            "dnsNames": [api_host, format!("{name}.{ROOT}")],
            "secretName": "api-tls",
            // Renewed 20 s after issuance.
            "lifetime": "60s", "renewBefore": "40s",
            "issuer": tenant_ca(),
        }),
    )
    .await;
    let issued = ready_certificate(&certificates, "api").await;
    let status = issued.status.clone().unwrap();
    assert_eq!(status.issuer.as_deref(), Some("tenant-ca"));
    assert_eq!(status.ca_generation, Some(1));
    let first_serial = status.serial_number.clone().unwrap();
    assert!(status.not_after.is_some() && status.renewal_time.is_some());
    assert_eq!(condition(&status.conditions, "Issuing").unwrap().0, "False");

    let tls = secrets.get("api-tls").await.unwrap();
    let text =
        |s: &Secret, key: &str| String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap();
    let (chain, ca) = (text(&tls, "tls.crt"), text(&tls, "ca.crt"));
    assert!(text(&tls, "tls.key").contains("PRIVATE KEY"));
    assert!(
        verifies(&chain, &ca, &api_host),
        "verifies against its tenant's CA"
    );
    // The other tenant's CA, from its own certificate.
    let other_ns = format!("tn-{other}");
    let other_certificates: Api<Certificate> = Api::namespaced(client.clone(), &other_ns);
    create(
        &other_certificates,
        "web",
        json!({"dnsNames": [format!("{other}.{ROOT}")], "secretName": "web-tls",
                       "issuer": tenant_ca()}),
    )
    .await;
    ready_certificate(&other_certificates, "web").await;
    let other_secret = Api::<Secret>::namespaced(client.clone(), &other_ns)
        .get("web-tls")
        .await
        .unwrap();
    let other_ca = text(&other_secret, "ca.crt");
    assert_ne!(ca, other_ca);
    assert!(
        !verifies(&chain, &other_ca, &api_host),
        "a tenant's certificate does not verify against another tenant's CA"
    );
    let (code, kept) = record(&env, &name, &ns, "api").await;
    assert_eq!(code, 200, "{kept}");
    assert_eq!(kept["data"]["data"]["serial"], first_serial.as_str());

    // Renewed before expiry, with a new serial, into the same Secret.
    let renewed = wait_for("renewal", Duration::from_secs(60), || {
        let certificates = certificates.clone();
        let first_serial = first_serial.clone();
        async move {
            let s = certificates.get("api").await.ok()?.status?;
            let serial = s.serial_number?;
            (serial != first_serial).then_some(serial)
        }
    })
    .await;
    let not_after: k8s_openapi::jiff::Timestamp = status.not_after.unwrap().parse().unwrap();
    assert!(
        k8s_openapi::jiff::Timestamp::now() < not_after,
        "renewed before the first expired"
    );
    wait_for("the Secret renewed", Duration::from_secs(15), || {
        let secrets = secrets.clone();
        let chain = chain.clone();
        async move {
            let s = secrets.get("api-tls").await.ok()?;
            (text(&s, "tls.crt") != chain).then_some(())
        }
    })
    .await;
    assert_ne!(renewed, first_serial);

    // The Secret deleted by hand comes back, at the default resync.
    secrets
        .delete("api-tls", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the Secret put back", Duration::from_secs(15), || {
        let secrets = secrets.clone();
        async move { secrets.get_opt("api-tls").await.ok().flatten() }
    })
    .await;

    // A name added: a new certificate that carries it.
    let www = format!("www.{name}.{ROOT}");
    certificates
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "dnsNames": [api_host, format!("{name}.{ROOT}"), www],
                "lifetime": "1h", "renewBefore": null}})),
        )
        .await
        .unwrap();
    ready_certificate(&certificates, "api").await;
    wait_for("the new name served", Duration::from_secs(15), || {
        let secrets = secrets.clone();
        let (www, ca) = (www.clone(), ca.clone());
        async move {
            let s = secrets.get("api-tls").await.ok()?;
            verifies(&text(&s, "tls.crt"), &ca, &www).then_some(())
        }
    })
    .await;

    // Deleted: its Secret and its OpenBao record go with it.
    certificates
        .delete("api", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("certificate gone", Duration::from_secs(30), || {
        let certificates = certificates.clone();
        async move {
            certificates
                .get_opt("api")
                .await
                .ok()
                .filter(Option::is_none)
                .map(drop)
        }
    })
    .await;
    assert!(secrets.get_opt("api-tls").await.unwrap().is_none());
    assert_eq!(record(&env, &name, &ns, "api").await.0, 404);

    delete_tenants(&Api::all(client.clone()), &[&name, &other]).await;
    // The namespace went with the tenant; nothing of its CA is left.
    let mounts = openbao_mounts(&env).await;
    assert!(mounts["data"].get(format!("tenants/{name}/pki/")).is_none());
    assert!(
        Api::<Namespace>::all(client.clone())
            .get_opt(&ns)
            .await
            .unwrap()
            .is_none_or(|n| n.metadata.deletion_timestamp.is_some())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuance_killed_after_its_key_was_recorded_signs_that_key_on_restart() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let operator = start_operator(&env, &sel);
    let name = ready_tenant(&client, &sel).await;
    drop(operator);

    let mut crashing = env.clone();
    crashing.insert(
        "OSSATURE_FAILPOINT".into(),
        "certificate-key-recorded".into(),
    );
    let mut operator = start_operator(&crashing, &sel);
    let ns = format!("tn-{name}");
    let certificates: Api<Certificate> = Api::namespaced(client.clone(), &ns);
    create(
        &certificates,
        "api",
        json!({"dnsNames": [format!("{name}.{ROOT}")], "issuer": tenant_ca()}),
    )
    .await;
    let exit = operator.wait_exit(Duration::from_secs(60));
    assert!(
        exit.is_some_and(|s| !s.success()),
        "the operator died at the failpoint"
    );
    let (code, pending) = record(&env, &name, &ns, "api").await;
    assert_eq!(code, 200, "the key was recorded before signing: {pending}");
    let key = pending["data"]["data"]["key"].as_str().unwrap().to_string();
    assert_eq!(pending["data"]["data"]["certificate"], "");
    drop(operator);

    let _operator = start_operator(&env, &sel);
    ready_certificate(&certificates, "api").await;
    let (_, done) = record(&env, &name, &ns, "api").await;
    assert_eq!(
        done["data"]["data"]["key"].as_str(),
        Some(key.as_str()),
        "the recorded key was signed, none other made"
    );
    let chain = done["data"]["data"]["certificate"].as_str().unwrap();
    let leaf = CertificateDer::pem_slice_iter(chain.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    use rcgen::PublicKeyData;
    let public = rcgen::KeyPair::from_pem(&key).unwrap();
    let der = public.der_bytes().to_vec();
    assert!(
        leaf.as_ref()
            .windows(der.len())
            .any(|w| w == der.as_slice()),
        "the certificate is for the recorded key"
    );

    delete_tenants(&Api::all(client.clone()), &[&name]).await;
}

/// Rotating a tenant CA: the next generation is trusted beside the current
/// one (seen in the Tenant's status as it happens), every certificate the old
/// one signed is issued anew by the new one, then the old one is retired:
/// bundles hold only the new CA, and status counts every leaf on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_rotation_moves_every_leaf_then_retires_the_old_ca() {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    const LEAVES: usize = 7;
    let Setup {
        client,
        operator: _operator,
        name,
        ns,
        certificates,
        ..
    } = setup().await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for i in 0..LEAVES {
        create(
            &certificates,
            &format!("c{i}"),
            json!({"dnsNames": [format!("c{i}.{name}.{ROOT}")], "secretName": format!("c{i}-tls"),
                   "issuer": {"tenantCA": {}}}),
        )
        .await;
    }
    let mut first = BTreeMap::new();
    for i in 0..LEAVES {
        let c = ready_certificate(&certificates, &format!("c{i}")).await;
        let s = c.status.unwrap();
        assert_eq!(s.ca_generation, Some(1));
        first.insert(i, s.serial_number.unwrap());
    }
    let text =
        |s: &Secret, key: &str| String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap();
    let old_ca = text(&secrets.get("c0-tls").await.unwrap(), "ca.crt");
    // With its host at the edge, the tenant has one more: its host's.
    let total = certificates
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .len() as i64;
    assert!(total >= LEAVES as i64);
    let tenants: Api<ossature_crds::Tenant> = Api::all(client.clone());
    let counted = |t: &ossature_crds::Tenant| {
        t.status
            .as_ref()
            .and_then(|s| s.certificate_authority.clone())
            .map(|ca| {
                (
                    ca.generation,
                    ca.generations
                        .iter()
                        .map(|g| (g.generation, g.certificates))
                        .collect::<Vec<_>>(),
                )
            })
    };
    let status_shows = |what: &'static str, generation: i64| {
        let (tenants, name) = (tenants.clone(), name.clone());
        wait_for(what, Duration::from_secs(90), move || {
            let (tenants, name) = (tenants.clone(), name.clone());
            async move {
                let t = tenants.get(&name).await.ok()?;
                (counted(&t) == Some((generation, vec![(generation, total)]))).then_some(())
            }
        })
    };
    status_shows("the leaves counted", 1).await;

    // Every status the tenant goes through, from a watch.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let watching = {
        let seen = seen.clone();
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let changes = watcher(tenants.clone(), config).applied_objects();
        tokio::spawn(async move {
            let mut changes = std::pin::pin!(changes);
            while let Some(Ok(t)) = changes.next().await {
                if let Some(c) = counted(&t) {
                    seen.lock().unwrap().push(c);
                }
            }
        })
    };
    tenants
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"certificateAuthority": {"generation": 2}}})),
        )
        .await
        .unwrap();
    status_shows("the old CA retired", 2).await;
    watching.abort();
    let history = seen.lock().unwrap().clone();
    assert!(
        history
            .iter()
            .any(|(g, gens)| *g == 2 && gens.iter().map(|(g, _)| *g).collect::<Vec<_>>() == [1, 2]),
        "both CAs were trusted during the rotation: {history:?}"
    );

    // Every leaf moved: a new serial from generation 2, verifying against
    // the bundle that now holds the new CA only.
    let new_ca = wait_for(
        "bundles with the new CA only",
        Duration::from_secs(30),
        || {
            let secrets = secrets.clone();
            let old_ca = old_ca.clone();
            async move {
                let ca = text(&secrets.get("c0-tls").await.ok()?, "ca.crt");
                (ca.matches("BEGIN CERTIFICATE").count() == 1 && ca != old_ca).then_some(ca)
            }
        },
    )
    .await;
    for i in 0..LEAVES {
        let s = certificates
            .get(&format!("c{i}"))
            .await
            .unwrap()
            .status
            .unwrap();
        assert_eq!(s.ca_generation, Some(2), "c{i}");
        assert_ne!(
            s.serial_number.as_ref(),
            Some(&first[&i]),
            "c{i} issued anew"
        );
        let secret = wait_for("the Secret's bundle", Duration::from_secs(30), || {
            let secrets = secrets.clone();
            let new_ca = new_ca.clone();
            async move {
                let s = secrets.get(&format!("c{i}-tls")).await.ok()?;
                (text(&s, "ca.crt") == new_ca).then_some(s)
            }
        })
        .await;
        let host = format!("c{i}.{name}.{ROOT}");
        assert!(verifies(&text(&secret, "tls.crt"), &new_ca, &host), "c{i}");
        assert!(!verifies(&text(&secret, "tls.crt"), &old_ca, &host), "c{i}");
    }
    delete_tenants(&tenants, &[&name]).await;
}

/// A workload's certificate names it by its SPIFFE ID alone: issued by the
/// tenant CA for mutual TLS, it chains to that CA and carries the URI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_certificate_carries_its_spiffe_id() {
    use rustls::server::WebPkiClientVerifier;

    let Setup {
        client,
        operator: _operator,
        name,
        ns,
        certificates,
        ..
    } = setup().await;
    let uri = format!("spiffe://{name}.{ROOT}/ns/{ns}/sa/billing");
    create(
        &certificates,
        "billing",
        json!({"uris": [uri], "usages": ["Client", "Server"], "secretName": "billing-tls",
               "issuer": tenant_ca()}),
    )
    .await;
    ready_certificate(&certificates, "billing").await;
    let secret = Api::<Secret>::namespaced(client.clone(), &ns)
        .get("billing-tls")
        .await
        .unwrap();
    let data = secret.data.unwrap();
    let text = |key: &str| String::from_utf8(data[key].0.clone()).unwrap();
    let chain: Vec<CertificateDer> = CertificateDer::pem_slice_iter(text("tls.crt").as_bytes())
        .map(Result::unwrap)
        .collect();
    let leaf = chain[0].as_ref();
    assert!(
        leaf.windows(uri.len()).any(|w| w == uri.as_bytes()),
        "the leaf carries {uri}"
    );

    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(text("ca.crt").as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let verifier = WebPkiClientVerifier::builder(std::sync::Arc::new(roots))
        .build()
        .unwrap();
    verifier
        .verify_client_cert(&chain[0], &chain[1..], rustls::pki_types::UnixTime::now())
        .expect("a client of the tenant's CA, within its name constraints");

    delete_tenants(&Api::all(client.clone()), &[&name]).await;
}
