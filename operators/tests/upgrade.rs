//! Upgrades are quiet: tenants provisioned by the previous release, with
//! their scopes, environments, certificates, host at the edge and custom
//! domain, are taken over by this release without a single write to any
//! backend or to Kubernetes (no object, status, record or Event changes),
//! but the one this release makes on purpose: Admins' Roles gain the right
//! to change a Scope's grants.
//! Finalizers, labels, record paths, Lease names and field managers must
//! stay what they were for that to hold.
//!
//! The previous release is built from the repository's own history, once
//! per machine, into the stack's cache of obtained components.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use ossature_crds::{Certificate, DomainState, Environment, Scope, Tenant};
use serde_json::json;

/// The release this one upgrades from: the last one before the model crate
/// and the kind registry.
const PREVIOUS: &str = "0aaf05bdfbeb4a4dbf206adf05717ae4b829cb99";

/// The previous release's operator binary, built from the repository's
/// history at first use and kept in the component cache.
fn previous_release() -> PathBuf {
    let layout = ossature_bootstrap::Layout::from_env().unwrap();
    let installed = layout.artifact("ossature-operator", PREVIOUS);
    let binary = installed.join("ossature-operator");
    if binary.exists() {
        return binary;
    }
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let present = Command::new("git")
        .arg("-C")
        .arg(&repository)
        .args(["cat-file", "-e", &format!("{PREVIOUS}^{{commit}}")])
        .status()
        .expect("git is on PATH");
    assert!(
        present.success(),
        "commit {PREVIOUS} (the previous release) is not in this clone's history; fetch it (git fetch --unshallow)"
    );
    let work = layout.work(&format!("ossature-operator-{PREVIOUS}"));
    let source = work.join("source");
    let _ = std::fs::remove_dir_all(&source);
    std::fs::create_dir_all(&source).unwrap();
    let archive = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "git -C '{}' archive --format=tar {PREVIOUS} | tar -x -C '{}'",
            repository.display(),
            source.display()
        ))
        .status()
        .unwrap();
    assert!(archive.success(), "extracting {PREVIOUS} failed");
    eprintln!("building the previous release ({PREVIOUS}); kept for later runs");
    let built = Command::new(env!("CARGO"))
        .current_dir(&source)
        .env("CARGO_TARGET_DIR", work.join("target"))
        .args(["build", "--locked", "-p", "ossature-operator", "--bin"])
        .arg("ossature-operator")
        .status()
        .unwrap();
    assert!(built.success(), "building the previous release failed");
    std::fs::create_dir_all(&installed).unwrap();
    let partial = installed.join("ossature-operator.partial");
    std::fs::copy(work.join("target/debug/ossature-operator"), &partial).unwrap();
    std::fs::rename(&partial, &binary).unwrap();
    let _ = std::fs::remove_dir_all(&work);
    binary
}

/// Publishes a TXT record at the stack's DNS.
async fn txt(env: &BTreeMap<String, String>, record: &str, value: &str) {
    let response = http()
        .post(format!(
            "{}/set-txt",
            env["OSSATURE_ACME_CHALLENGE_ADMIN_URL"]
        ))
        .json(&json!({"host": format!("{record}."), "value": value}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

/// `examples/acme.yaml` as tenant `name`, labelled for the test's operator.
fn tenant_file(name: &str, sel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/acme.yaml");
    // Only the kinds the previous release knew: what came since is new work
    // for this release, not an upgrade of what was there.
    std::fs::read_to_string(path)
        .unwrap()
        .split("\n---\n")
        .filter(|document| {
            ["Topic", "ServiceIdentity", "Workload"]
                .iter()
                .all(|kind| !document.contains(&format!("\nkind: {kind}\n")))
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
        .replace("acme", name)
        .replace(
            &format!("kind: Tenant\nmetadata:\n  name: {name}\n"),
            &format!(
                "kind: Tenant\nmetadata:\n  name: {name}\n  labels:\n    {TEST_LABEL}: \"{sel}\"\n"
            ),
        )
}

/// Every object of the tenant with its resource version, and whether all
/// of them are Ready.
async fn snapshot(client: &kube::Client, name: &str) -> (BTreeMap<String, String>, bool) {
    let ns = format!("tn-{name}");
    let ready = |conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]| {
        condition(conditions, "Ready").is_some_and(|(status, _)| status == "True")
    };
    let mut versions = BTreeMap::new();
    let mut all_ready = true;
    let tenant = Api::<Tenant>::all(client.clone()).get(name).await.unwrap();
    all_ready &= tenant.status.as_ref().is_some_and(|s| ready(&s.conditions));
    versions.insert(format!("tenant/{name}"), tenant.resource_version().unwrap());
    let list = ListParams::default();
    for s in Api::<Scope>::namespaced(client.clone(), &ns)
        .list(&list)
        .await
        .unwrap()
    {
        all_ready &= s.status.as_ref().is_some_and(|s| ready(&s.conditions));
        versions.insert(
            format!("scope/{}", s.name_any()),
            s.resource_version().unwrap(),
        );
    }
    for e in Api::<Environment>::namespaced(client.clone(), &ns)
        .list(&list)
        .await
        .unwrap()
    {
        all_ready &= e.status.as_ref().is_some_and(|s| ready(&s.conditions));
        versions.insert(
            format!("environment/{}", e.name_any()),
            e.resource_version().unwrap(),
        );
    }
    for c in Api::<Certificate>::namespaced(client.clone(), &ns)
        .list(&list)
        .await
        .unwrap()
    {
        all_ready &= c.status.as_ref().is_some_and(|s| ready(&s.conditions));
        versions.insert(
            format!("certificate/{}", c.name_any()),
            c.resource_version().unwrap(),
        );
    }
    let labelled = ListParams::default().labels(&format!("ossature.dev/tenant={name}"));
    for namespace in Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .list(&labelled)
        .await
        .unwrap()
    {
        versions.insert(
            format!("namespace/{}", namespace.name_any()),
            namespace.resource_version().unwrap(),
        );
    }
    for secret in Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().labels("ossature.dev/certificate"))
        .await
        .unwrap()
    {
        versions.insert(
            format!("secret/{}", secret.name_any()),
            secret.resource_version().unwrap(),
        );
    }
    for lease in
        Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), "kube-system")
            .list(&labelled)
            .await
            .unwrap()
    {
        versions.insert(
            format!("lease/{}", lease.name_any()),
            lease.resource_version().unwrap(),
        );
    }
    (versions, all_ready)
}

/// An address that forwards every request to Pulsar's admin API with the
/// stack's superuser token; it lives as long as the test's runtime.
async fn token_proxy(env: &BTreeMap<String, String>) -> String {
    use axum::body::{Body, to_bytes};
    use axum::extract::{Request, State};
    use axum::response::Response;

    async fn forward(State((target, auth)): State<(String, String)>, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let body = to_bytes(body, usize::MAX).await.unwrap();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut forwarded = http()
            .request(parts.method, format!("{target}{path}"))
            .header("Authorization", &auth)
            .body(body);
        if let Some(kind) = parts.headers.get("content-type") {
            forwarded = forwarded.header("content-type", kind);
        }
        let answer = forwarded.send().await.unwrap();
        let mut response = Response::builder().status(answer.status());
        if let Some(kind) = answer.headers().get("content-type") {
            response = response.header("content-type", kind);
        }
        response
            .body(Body::from(answer.bytes().await.unwrap()))
            .unwrap()
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let target = env["OSSATURE_PULSAR_ADMIN_URL"]
        .trim_end_matches('/')
        .to_string();
    let app = axum::Router::new()
        .fallback(forward)
        .with_state((target, pulsar_auth(env)));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_releases_tenants_are_taken_over_without_a_write() {
    let previous = tokio::task::spawn_blocking(previous_release).await.unwrap();
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let sel = suffix();
    let name = format!("up{sel}");
    let tenants: Api<Tenant> = Api::all(client.clone());

    // The previous release provisions a tenant of every part. It predates
    // Pulsar's token authentication: a proxy adds the token, as a gateway
    // in front of the broker would.
    let proxy = token_proxy(&env).await;
    let old = start_binary(
        &previous,
        &env,
        &sel,
        &[&format!("--pulsar-admin-url={proxy}")],
    );
    let file = std::env::temp_dir().join(format!("ossature-upgrade-{sel}.yaml"));
    std::fs::write(&file, tenant_file(&name, &sel)).unwrap();
    kubectl(&env, &["apply", "-f", file.to_str().unwrap()]);
    let ns = format!("tn-{name}");
    let certificates: Api<Certificate> = Api::namespaced(client.clone(), &ns);
    create(
        &certificates,
        "api",
        json!({"dnsNames": [format!("api.{name}.ossature.test")], "secretName": "api-tls",
               "issuer": {"tenantCA": {}}}),
    )
    .await;
    let domain = format!("shop-{sel}.example.test");
    tenants
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"domains": [domain]}})),
        )
        .await
        .unwrap();
    let pending = wait_for("the domain's record", Duration::from_secs(120), || {
        let tenants = tenants.clone();
        let name = name.clone();
        async move {
            let status = tenants.get(&name).await.ok()?.status?;
            status.domains.into_iter().next()
        }
    })
    .await;
    txt(&env, &pending.record, &pending.value).await;
    let settled = wait_for(
        "the previous release's tenant settled and Ready",
        Duration::from_secs(180),
        || {
            let client = client.clone();
            let name = name.clone();
            async move {
                let (first, ready) = snapshot(&client, &name).await;
                let verified = Api::<Tenant>::all(client.clone())
                    .get(&name)
                    .await
                    .ok()?
                    .status?
                    .domains
                    .iter()
                    .all(|d| d.state == DomainState::Verified);
                if !(ready && verified) {
                    return None;
                }
                // Nothing moves for a while: the previous release is done.
                tokio::time::sleep(Duration::from_secs(10)).await;
                let (again, _) = snapshot(&client, &name).await;
                (first == again).then_some(first)
            }
        },
    )
    .await;
    // 1 tenant, 4 scopes, 2 environments, 2 certificates (its host's too),
    // 3 namespaces, 1 Secret, 1 Lease.
    assert_eq!(settled.len(), 14, "{settled:?}");
    let before = tenants.get(&name).await.unwrap().status;
    drop(old);

    // This release takes over: reconciles every object, across several
    // resyncs, and writes nothing anywhere.
    let new = start_operator_with(&env, &sel, &["--resync-seconds", "5"]);
    wait_for(
        "this release reconciling every object three times",
        Duration::from_secs(120),
        || async {
            // Serving metrics once it has started.
            http().get(&new.metrics).send().await.ok()?;
            (reconciles(&new).await >= 3 * 10).then_some(())
        },
    )
    .await;
    let (after, ready) = snapshot(&client, &name).await;
    let changed: Vec<&String> = after
        .iter()
        .filter(|(object, version)| settled.get(*object) != Some(*version))
        .map(|(object, _)| object)
        .collect();
    if !changed.is_empty() {
        let now = Api::<Tenant>::all(client.clone()).get(&name).await.unwrap();
        panic!(
            "changed by this release: {changed:?}; the tenant's status before: {before:#?}, now: {:#?}",
            now.status
        );
    }
    assert!(ready, "still Ready");
    let text = http()
        .get(&new.metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let written: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("ossature_backend_calls") && l.contains("write") && !l.ends_with(" 0")
        })
        .collect();
    // The one change this release makes on purpose: Admins' Roles gain the
    // right to change a Scope's grants and group mappings, which admission
    // asks for since this release: one write each, and the Event saying so.
    let roles =
        Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(client.clone(), &format!("tn-{name}"))
            .list(&ListParams::default().labels(ossature_model::names::SCOPE_LABEL))
            .await
            .unwrap();
    let admins: Vec<_> = roles
        .items
        .iter()
        .filter(|r| r.name_any().ends_with("-admin"))
        .collect();
    for admin in &admins {
        let rules = admin.rules.clone().unwrap_or_default();
        assert!(
            rules
                .iter()
                .any(|r| r.resources.iter().flatten().any(|x| x == "scopes/grants")),
            "{admin:?}"
        );
    }
    assert_eq!(
        writes(&new).await,
        2 * admins.len() as u64,
        "an upgrade writes nothing but the Admins' Roles: {written:#?}"
    );

    delete_tenants(&tenants, &[name.as_str()]).await;
    wait_tenant_gone(&tenants, &name, Duration::from_secs(180)).await;
    let _ = std::fs::remove_file(&file);
}
