//! A certificate issued by real ACME (Pebble, HTTP-01 via challtestsrv) is
//! served by the real edge (Caddy) and trusted through Pebble's root only.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use ossature_e2e::{
    Check, Stack, eventually, expect_success, http_client, https_client_trusting, unique,
    with_cleanup,
};
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};
use reqwest::{Client, StatusCode};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::json;

/// What the ACME leg hands to the edge leg.
struct Issued {
    domain: String,
    chain_pem: String,
    key_pem: String,
    root_pem: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_certificate_served_by_edge() -> Result<()> {
    let stack = Stack::get().await?;
    let domain = format!("{}.e2e.ossature.test", unique("acme"));
    let issued = issue(stack, &domain).await?;
    verify_chain(&issued)?;
    serve_through_edge(stack, &issued).await
}

async fn issue(stack: &Stack, domain: &str) -> Result<Issued> {
    let challtest = http_client()?;
    // Trust Pebble's HTTPS CA for its API only; it is not the issuing root.
    let (account, _credentials) = Account::builder_with_root(&stack.acme.ca_bundle)?
        .create(
            &NewAccount {
                contact: &[],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            stack.acme.directory.clone(),
            None,
        )
        .await
        .context("creating ACME account")?;

    let identifiers = [Identifier::Dns(domain.to_owned())];
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    ensure!(
        order.state().status == OrderStatus::Pending,
        "fresh order is {:?}, not pending",
        order.state().status
    );

    let mut tokens = Vec::new();
    let mut outcome = answer_challenges(&challtest, stack, &mut order, &mut tokens).await;
    if outcome.is_ok() {
        outcome = order
            .poll_ready(&poll_policy())
            .await
            .context("waiting for the order to become ready")
            .and_then(|status| match status {
                OrderStatus::Ready => Ok(()),
                other => bail!("order ended {other:?}, not ready"),
            });
    }
    // The published responses are only needed until validation is over.
    let mut cleanup = Ok(());
    for token in &tokens {
        if let Err(e) = unpublish(&challtest, stack, token).await {
            cleanup = Err(e);
        }
    }
    with_cleanup(outcome, cleanup)?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![domain.to_owned()])?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key)?;
    order.finalize_csr(csr.der()).await?;
    let chain_pem = order
        .poll_certificate(&poll_policy())
        .await
        .context("waiting for the certificate")?;

    let root_pem = fetch_root(stack).await?;
    account
        .deactivate()
        .await
        .context("deactivating the ACME account")?;
    Ok(Issued {
        domain: domain.to_owned(),
        chain_pem,
        key_pem: key.serialize_pem(),
        root_pem,
    })
}

fn poll_policy() -> RetryPolicy {
    // Pebble may sleep up to 15 s before validating; poll steadily, not exponentially.
    RetryPolicy::new()
        .initial_delay(Duration::from_millis(500))
        .backoff(1.2)
        .timeout(Duration::from_secs(90))
}

async fn answer_challenges(
    challtest: &Client,
    stack: &Stack,
    order: &mut instant_acme::Order,
    tokens: &mut Vec<String>,
) -> Result<()> {
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => bail!("authorization is {other:?}"),
        }
        let mut challenge = authz
            .challenge(ChallengeType::Http01)
            .context("Pebble offered no HTTP-01 challenge")?;
        let key_authorization = challenge.key_authorization();
        let token = challenge.token.clone();
        tokens.push(token.clone());
        expect_success(
            challtest
                .post(format!("{}/add-http01", stack.acme.challenge_admin_url))
                .json(&json!({ "token": token, "content": key_authorization.as_str() }))
                .send()
                .await?,
            "publishing HTTP-01 response",
        )
        .await?;
        challenge.set_ready().await?;
    }
    Ok(())
}

async fn unpublish(challtest: &Client, stack: &Stack, token: &str) -> Result<()> {
    let response = challtest
        .post(format!("{}/del-http01", stack.acme.challenge_admin_url))
        .json(&json!({ "token": token }))
        .send()
        .await?;
    expect_success(response, "removing HTTP-01 response")
        .await
        .map(drop)
}

async fn fetch_root(stack: &Stack) -> Result<String> {
    let ca = tokio::fs::read(&stack.acme.ca_bundle)
        .await
        .with_context(|| format!("reading {}", stack.acme.ca_bundle.display()))?;
    let client = https_client_trusting(&ca)?.build()?;
    let response = client.get(&stack.acme.roots_url).send().await?;
    let pem = expect_success(response, "fetching Pebble's root")
        .await?
        .text()
        .await?;
    ensure!(
        pem.contains("BEGIN CERTIFICATE"),
        "roots URL returned no PEM: {pem}"
    );
    Ok(pem)
}

fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("parsing PEM certificates")?;
    ensure!(!certs.is_empty(), "no certificate in PEM");
    Ok(certs)
}

/// Verifies the issued chain for `domain` against the given root alone.
fn verify_against(issued: &Issued, root_pem: &str) -> Result<()> {
    let mut roots = RootCertStore::empty();
    for root in parse_certs(root_pem)? {
        roots.add(root)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
    let chain = parse_certs(&issued.chain_pem)?;
    let (leaf, intermediates) = chain.split_first().context("empty chain")?;
    let name = ServerName::try_from(issued.domain.clone())?;
    verifier.verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now())?;
    Ok(())
}

fn fresh_ca() -> Result<String> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "Ossature e2e impostor CA");
    Ok(params.self_signed(&key)?.pem())
}

fn verify_chain(issued: &Issued) -> Result<()> {
    verify_against(issued, &issued.root_pem)
        .context("chain does not verify against Pebble's root")?;
    let impostor = fresh_ca()?;
    ensure!(
        verify_against(issued, &impostor).is_err(),
        "chain verified against an unrelated CA"
    );
    Ok(())
}

/// Client for Caddy's admin API.
fn caddy_admin() -> Result<Client> {
    // Caddy replaces its admin server on every config load, closing idle
    // connections; a pooled connection could be reset under a later request.
    Ok(reqwest::Client::builder()
        .timeout(ossature_e2e::HTTP_TIMEOUT)
        .pool_max_idle_per_host(0)
        .tls_certs_only([])
        .build()?)
}

/// Sends an admin request, retrying only when no connection was made (so
/// nothing reached Caddy), as happens while it swaps its admin listener.
async fn caddy_send(request: reqwest::RequestBuilder, what: &str) -> Result<reqwest::Response> {
    eventually(
        what,
        Duration::from_secs(15),
        Duration::from_millis(200),
        || async {
            let attempt = request
                .try_clone()
                .context("admin request is not cloneable")?;
            match attempt.send().await {
                Ok(response) => Ok(Check::Done(response)),
                Err(e) if e.is_connect() => Ok(Check::Pending(error_chain(&e))),
                Err(e) => Err(e.into()),
            }
        },
    )
    .await
}

async fn serve_through_edge(stack: &Stack, issued: &Issued) -> Result<()> {
    let admin = caddy_admin()?;
    let admin_url = &stack.edge.admin_url;
    let cert_id = unique("e2e-cert");
    let route_id = unique("e2e-route");
    let marker = unique("served");
    // Which objects Caddy confirmed; others may or may not exist after an error.
    let mut confirmed = Vec::new();

    let body = async {
        let response = caddy_send(
            admin
                .post(format!("{admin_url}/config/apps/tls/certificates/load_pem"))
                .json(&json!({
                    "@id": cert_id,
                    "certificate": issued.chain_pem,
                    "key": issued.key_pem,
                    "tags": [cert_id],
                })),
            "loading certificate into Caddy",
        )
        .await?;
        expect_success(response, "loading certificate into Caddy").await?;
        confirmed.push(cert_id.as_str());

        let response = caddy_send(
            admin
                .post(format!("{admin_url}/config/apps/http/servers/edge/routes"))
                .json(&json!({
                    "@id": route_id,
                    "match": [{ "host": [issued.domain] }],
                    "handle": [{
                        "handler": "static_response",
                        "status_code": 200,
                        "body": marker,
                    }],
                    "terminal": true,
                })),
            "adding edge route",
        )
        .await?;
        expect_success(response, "adding edge route").await?;
        confirmed.push(route_id.as_str());

        request_through_edge(stack, issued, &marker).await
    }
    .await;

    // Route first, so nothing routes to a name whose certificate is gone.
    let cleanup = remove_from_edge(&admin, admin_url, &[&route_id, &cert_id], &confirmed).await;
    with_cleanup(body, cleanup)
}

async fn request_through_edge(stack: &Stack, issued: &Issued, marker: &str) -> Result<()> {
    let addr = stack.edge.https_addr;
    let url = format!("https://{}:{}/", issued.domain, addr.port());

    let trusted = https_client_trusting(issued.root_pem.as_bytes())?
        .resolve(&issued.domain, addr)
        .build()?;
    // Caddy applies config synchronously, but allow a moment for the reload.
    let text = eventually(
        "the edge to serve the route over TLS",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            Ok(match trusted.get(&url).send().await {
                Ok(response) if response.status() == StatusCode::OK => {
                    Check::Done(response.text().await?)
                }
                Ok(response) => Check::Pending(format!("HTTP {}", response.status())),
                Err(e) => Check::Pending(error_chain(&e)),
            })
        },
    )
    .await?;
    assert_eq!(text, marker);

    // Same server, same name, but trusting an unrelated CA: the handshake must fail.
    let impostor = https_client_trusting(fresh_ca()?.as_bytes())?
        .resolve(&issued.domain, addr)
        .build()?;
    match impostor.get(&url).send().await {
        Ok(response) => bail!(
            "TLS succeeded while trusting an unrelated CA (HTTP {})",
            response.status()
        ),
        Err(e) => {
            let chain = error_chain(&e);
            ensure!(
                chain.to_lowercase().contains("certificate"),
                "request failed, but not on certificate trust: {chain}"
            );
        }
    }
    Ok(())
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Deletes each object by its `@id`, then proves Caddy no longer knows it.
/// An id that was never confirmed as added may legitimately be absent.
async fn remove_from_edge(
    admin: &Client,
    admin_url: &str,
    ids: &[&str],
    confirmed: &[&str],
) -> Result<()> {
    let mut failures = Vec::new();
    for id in ids {
        let url = format!("{admin_url}/id/{id}");
        let deleted = match caddy_send(admin.delete(&url), &format!("deleting {id}")).await {
            Ok(r) if r.status() == StatusCode::NOT_FOUND && !confirmed.contains(id) => Ok(()),
            Ok(r) => expect_success(r, &format!("deleting {id}")).await.map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = deleted {
            failures.push(format!("{e:#}"));
            continue;
        }
        match caddy_send(admin.get(&url), &format!("looking up {id}")).await {
            Ok(r) if r.status() == StatusCode::NOT_FOUND => {}
            Ok(r) => failures.push(format!("{id} answers {} after delete", r.status())),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("{}", failures.join("; "))
    }
}
