//! A tenant at the edge, through the operator and the real Caddy: onboarded,
//! it is reachable over TLS at `<tenant>.<root-domain>` with a certificate
//! of the platform's ACME issuer (Pebble), verified against Pebble's root; mutual TLS and allowed source ranges set on the Tenant are
//! enforced within seconds; a lost edge configuration is noticed by the
//! probe and put back; no private key can be read through Caddy's admin
//! API; deleting the tenant takes its host off the edge.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{Event, Secret};
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
    let response = http()
        .request(method, format!("{}{path}", env["OSSATURE_EDGE_ADMIN_URL"]))
        .send()
        .await
        .unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_is_served_at_its_host_with_its_mtls_and_ranges() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    // The platform's ACME issuer signs hosts: the stack's Pebble.
    let issuer_name = format!("platform-{sel}");
    let _operator = start_operator_with(&env, &sel, &["--host-issuer", &issuer_name]);
    ready_issuer(&client, &issuer(&env, &issuer_name, &sel, json!({}))).await;
    let tenants: Api<Tenant> = Api::all(client.clone());
    let name = format!("edge{}", suffix());
    let other = format!("{name}-eu");
    for t in [&name, &other] {
        tenants
            .create(&PostParams::default(), &labelled(tenant(t), &sel))
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
    let pebble = issuing_root(&env).await;
    let (code, body) = fetch(&env, &host, &pebble, None, "127.0.0.1")
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(body, format!("ossature edge: {name}\n"));
    let (client_chain, tenant_ca) = client_certificate(&client, &name).await;
    let (_, other_ca) = client_certificate(&client, &other).await;
    assert_ne!(tenant_ca, other_ca);
    assert!(
        fetch(&env, &host, &tenant_ca, None, "127.0.0.1")
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
    let (code, _) = fetch(&env, &host, &pebble, Some(&client_chain), "127.0.0.1")
        .await
        .unwrap();
    assert_eq!(
        code, 200,
        "a client certificate of the tenant's CA is let in"
    );
    assert!(
        fetch(&env, &host, &pebble, Some(&other_chain), "127.0.0.1")
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
    let (code, _) = fetch(&env, &host, &pebble, Some(&client_chain), "127.0.0.2")
        .await
        .unwrap();
    assert_eq!(
        code, 200,
        "an address inside the allowed range gets through"
    );

    // No key at the admin surface.
    let (_, config) = admin(&env, reqwest::Method::GET, "/config/").await;
    assert!(!config.to_string().contains("PRIVATE KEY"));

    // The edge loses our configuration (as a restart would): noticed by the
    // probe, every host put back, within seconds and at the default resync.
    let (_, routes) = admin(
        &env,
        reqwest::Method::GET,
        "/config/apps/http/servers/edge/routes",
    )
    .await;
    let ours: Vec<String> = routes
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["@id"].as_str())
        .filter(|id| id.starts_with("ossature-edge.s-"))
        .map(String::from)
        .collect();
    assert!(!ours.is_empty(), "{routes}");
    for id in &ours {
        admin(&env, reqwest::Method::DELETE, &format!("/id/{id}")).await;
    }
    wait_for("the host back on the edge", Duration::from_secs(30), || {
        let env = &env;
        let (host, ca, chain) = (&host, &pebble, &client_chain);
        async move {
            matches!(
                fetch(env, host, ca, Some(chain), "127.0.0.2").await,
                Ok((200, _))
            )
            .then_some(())
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
        .delete(&issuer_name, &Default::default())
        .await
        .unwrap();
    let (_, config) = admin(&env, reqwest::Method::GET, "/config/").await;
    assert!(
        !config.to_string().contains(&host),
        "{host} left at the edge"
    );
    assert!(!matches!(
        fetch(&env, &host, &pebble, Some(&client_chain), "127.0.0.2").await,
        Ok((200, _))
    ));
}
