//! Custom domains, through the operator, the real challenge server's DNS,
//! Pebble and Caddy: a domain listed on a Tenant is the tenant's once the
//! TXT record named in its status holds the value named there; it is then
//! in the host certificate and served at the edge. A second tenant listing
//! it, even with its own record in place, is `DomainClaimed` and never
//! serves it; once the first lets go of it, the second gets it. Names of a
//! domain not proven are `NameNotOwned`; a domain under the root domain is
//! refused at admission.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use ossature_crds::{Certificate, DomainState, Tenant};
use serde_json::json;

const ROOT: &str = "ossature.test";

/// Publishes (or withdraws) a TXT record at the stack's DNS.
async fn txt(env: &BTreeMap<String, String>, record: &str, value: Option<&str>) {
    let (path, body) = match value {
        Some(value) => (
            "set-txt",
            json!({"host": format!("{record}."), "value": value}),
        ),
        None => ("clear-txt", json!({"host": format!("{record}.")})),
    };
    let response = http()
        .post(format!(
            "{}/{path}",
            env["OSSATURE_ACME_CHALLENGE_ADMIN_URL"]
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

/// The tenant's status entry of `domain`, once it has one.
async fn domain_status(
    tenants: &Api<Tenant>,
    tenant: &str,
    domain: &str,
    state: DomainState,
) -> ossature_crds::DomainStatus {
    wait_for(
        &format!("{tenant}'s {domain} {state:?}"),
        Duration::from_secs(120),
        || async move {
            let t = tenants.get(tenant).await.ok()?;
            t.status?
                .domains
                .into_iter()
                .find(|d| d.name == domain && d.state == state)
        },
    )
    .await
}

/// Waits until the Certificate is Stalled for `reason`.
async fn stalled(certificates: &Api<Certificate>, name: &str, reason: &str) {
    wait_for(
        &format!("{name} {reason}"),
        Duration::from_secs(60),
        || async move {
            let s = certificates.get(name).await.ok()?.status?;
            (condition(&s.conditions, "Stalled")?.1 == reason).then_some(())
        },
    )
    .await;
}

async fn stalled_reason(tenants: &Api<Tenant>, tenant: &str) -> Option<String> {
    let t = tenants.get(tenant).await.ok()?;
    condition(&t.status?.conditions, "Stalled").map(|c| c.1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proven_domain_is_served_for_its_first_tenant_only() {
    let (platform, _operator) = platform("platform", json!({})).await;
    let Platform {
        env, client, sel, ..
    } = &platform;
    let issuer_name = &platform.issuer;
    let tenants: Api<Tenant> = Api::all(client.clone());
    let first = format!("dom{sel}");
    let second = format!("dom{sel}-b");
    let domain = format!("shop-{sel}.example.test");

    // Listed, not proven: pending, with the record to publish.
    let mut a = labelled(tenant(&first), sel);
    a.spec.domains = vec![domain.clone()];
    tenants.create(&PostParams::default(), &a).await.unwrap();
    let pending = domain_status(&tenants, &first, &domain, DomainState::Pending).await;
    assert_eq!(pending.record, format!("_ossature-challenge.{domain}"));
    assert!(
        pending
            .message
            .as_deref()
            .unwrap_or_default()
            .contains(&pending.value),
        "{pending:?}"
    );
    // (The operator is up: it wrote its admission policies at start.)
    // Below the root domain, names are the tenants' own: refused at admission.
    let mut inside = labelled(tenant(&format!("dom{sel}-c")), sel);
    inside.spec.domains = vec![format!("{second}.{ROOT}")];
    let refused = tenants
        .create(&PostParams::default(), &inside)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("custom domains lie outside"), "{refused}");

    let t = tenants.get(&first).await.unwrap();
    let status = t.status.unwrap();
    let (state, reason) = condition(&status.conditions, "DomainsReady").unwrap();
    assert_eq!(
        (state.as_str(), reason.as_str()),
        ("False", "DomainNotVerified")
    );
    // Its names are not the tenant's yet.
    let certificates: Api<Certificate> = Api::namespaced(client.clone(), &format!("tn-{first}"));
    create(
        &certificates,
        "www",
        json!({"dnsNames": [format!("www.{domain}")], "issuer": {"acme": {"name": issuer_name}}}),
    )
    .await;
    stalled(&certificates, "www", "NameNotOwned").await;

    // The record published: proven, held, signed and served.
    txt(env, &pending.record, Some(&pending.value)).await;
    let ready = wait_tenant_ready(&tenants, &first, Duration::from_secs(120)).await;
    let status = ready.status.unwrap();
    assert_eq!(status.domains[0].state, DomainState::Verified);
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let lease = leases
        .get(&format!("ossature-domain.{domain}"))
        .await
        .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some(first.as_str())
    );
    let host: Certificate = Api::namespaced(client.clone(), &format!("tn-{first}"))
        .get("ossature-host")
        .await
        .unwrap();
    assert_eq!(
        host.spec.dns_names,
        vec![format!("{first}.{ROOT}"), domain.clone()]
    );
    let pebble = issuing_root(env).await;
    let (code, body) = fetch(env, &domain, &pebble, None, "127.0.0.1")
        .await
        .unwrap();
    assert_eq!((code, body), (200, format!("ossature edge: {first}\n")));
    // Names below a held domain are the tenant's: from the ACME issuer...
    ready_certificate(&certificates, "www").await;
    // ...though never from the tenant CA, whose names are under its host.
    create(
        &certificates,
        "internal",
        json!({"dnsNames": [format!("api.{domain}")], "issuer": {"tenantCA": {}}}),
    )
    .await;
    wait_for(
        "internal NameOutsideTenantCA",
        Duration::from_secs(60),
        || async {
            let c = certificates.get("internal").await.ok()?;
            let s = c.status?;
            (condition(&s.conditions, "Stalled")?.1 == "NameOutsideTenantCA").then_some(())
        },
    )
    .await;

    // A second tenant lists the same domain and proves it too: the first
    // holds it; the second is DomainClaimed, and the edge still serves the first.
    let mut b = labelled(tenant(&second), sel);
    b.spec.domains = vec![domain.clone()];
    tenants.create(&PostParams::default(), &b).await.unwrap();
    let claimed = domain_status(&tenants, &second, &domain, DomainState::Claimed).await;
    assert_ne!(claimed.value, pending.value);
    txt(env, &claimed.record, Some(&claimed.value)).await;
    wait_for(
        "second tenant DomainClaimed",
        Duration::from_secs(60),
        || {
            let tenants = tenants.clone();
            let second = second.clone();
            async move {
                (stalled_reason(&tenants, &second).await.as_deref() == Some("DomainClaimed"))
                    .then_some(())
            }
        },
    )
    .await;
    // Its own host is served all the same.
    wait_for(
        "second tenant's host served",
        Duration::from_secs(90),
        || {
            let env = &env;
            let (host, pebble) = (format!("{second}.{ROOT}"), &pebble);
            async move { fetch(env, &host, pebble, None, "127.0.0.1").await.ok() }
        },
    )
    .await;
    let second_host: Certificate = Api::namespaced(client.clone(), &format!("tn-{second}"))
        .get("ossature-host")
        .await
        .unwrap();
    assert_eq!(second_host.spec.dns_names, vec![format!("{second}.{ROOT}")]);
    for _ in 0..3 {
        let (code, body) = fetch(env, &domain, &pebble, None, "127.0.0.1")
            .await
            .unwrap();
        assert_eq!((code, body), (200, format!("ossature edge: {first}\n")));
    }
    let second_certificates: Api<Certificate> =
        Api::namespaced(client.clone(), &format!("tn-{second}"));
    create(
        &second_certificates,
        "steal",
        json!({"dnsNames": [format!("www.{domain}")], "issuer": {"acme": {"name": issuer_name}}}),
    )
    .await;
    stalled(&second_certificates, "steal", "NameNotOwned").await;

    // The first lets go of it: off the edge and its Lease gone; the second,
    // whose record is in place, takes it over.
    tenants
        .patch(
            &first,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"domains": null}})),
        )
        .await
        .unwrap();
    domain_status(&tenants, &second, &domain, DomainState::Verified).await;
    wait_tenant_ready(&tenants, &second, Duration::from_secs(120)).await;
    wait_for(
        "the domain served for the second tenant",
        Duration::from_secs(60),
        || {
            let (env, domain, pebble) = (&env, &domain, &pebble);
            let want = format!("ossature edge: {second}\n");
            async move {
                let (code, body) = fetch(env, domain, pebble, None, "127.0.0.1").await.ok()?;
                (code == 200 && body == want).then_some(())
            }
        },
    )
    .await;
    let lease = leases
        .get(&format!("ossature-domain.{domain}"))
        .await
        .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some(second.as_str())
    );
    let first_status = tenants.get(&first).await.unwrap().status.unwrap();
    assert!(
        first_status.domains.is_empty(),
        "{:?}",
        first_status.domains
    );

    // Deleted: the domain leaves the edge and its Lease goes.
    delete_tenants(&tenants, &[&first, &second]).await;
    assert!(
        leases
            .get_opt(&format!("ossature-domain.{domain}"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        fetch(env, &domain, &pebble, None, "127.0.0.1")
            .await
            .is_err(),
        "a deleted tenant's domain is not served"
    );
    txt(env, &format!("_ossature-challenge.{domain}"), None).await;
}
