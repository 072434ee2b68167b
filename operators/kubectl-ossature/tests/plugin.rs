//! The plugin binary against the local stack: a tenant (with an
//! environment, a scope and a certificate of its CA) that the operator in
//! this process, under a selector of its own, makes Ready; `tree` lists
//! what it owns in every backend with Ready states, as text and as JSON;
//! then a scope grants a role nobody defined, and `why` names that scope's
//! RBAC, its reason and message, and the Events that led there. The same
//! commands run as `kubectl ossature`, found on PATH.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use ossature_crds::{Certificate, Environment, Scope, Tenant};
use ossature_e2e::{Check, TEST_LABEL, eventually, operator_flags, unique, with_cleanup};
use ossature_model::tree::Node;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-ossature");
const WAIT: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_secs(1);

fn object<K: DeserializeOwned>(kind: &str, name: &str, namespace: Option<&str>, spec: Value) -> K {
    serde_json::from_value(json!({
        "apiVersion": "ossature.dev/v1alpha1", "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }))
    .expect("a valid object")
}

/// The operator in this process, managing only tenants labelled for
/// `selector`; the stack's CRDs are this branch's, unchanged.
fn start_operator(selector: &str) -> tokio::task::JoinHandle<()> {
    let flags = ["ossature-operator", "--local-stack"].map(String::from);
    let flags = flags.into_iter().chain(operator_flags(selector));
    let args = ossature_operator::cli::Args::try_parse_from(flags).expect("the operator's flags");
    tokio::spawn(async move {
        if let Err(e) = ossature_operator::start::run(args).await {
            panic!("the operator stopped: {e:#}");
        }
    })
}

async fn kube_client(kubeconfig: &str) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// The plugin's output, run as `program` with `args` against the stack.
fn run(program: &str, args: &[&str], env: &[(&str, String)]) -> Result<Output> {
    let output = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        // Off a terminal: no colors, whatever the environment asks.
        .env_remove("CLICOLOR_FORCE")
        .output()
        .with_context(|| format!("running {program} {args:?}"))?;
    Ok(output)
}

fn stdout_of(output: &Output, what: &str) -> Result<String> {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    ensure!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}

fn ready(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Every node of the tree, by `<Kind> <name>`.
fn nodes(root: &Node) -> BTreeMap<String, &Node> {
    root.walk()
        .into_iter()
        .map(|n| (format!("{:?} {}", n.key.kind, n.key.name), n))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tree_and_why_of_a_tenant_on_the_stack() -> Result<()> {
    ossature_e2e::install_crypto_provider();
    let env = ossature_bootstrap::ensure_up().await?;
    let kubeconfig = env["KUBECONFIG"].clone();
    let client = kube_client(&kubeconfig).await?;
    let selector = unique("kp");
    let _operator = start_operator(&selector);
    let tenant = unique("kp");
    let tenants: Api<Tenant> = Api::all(client.clone());
    let mut labelled: Tenant = object(
        "Tenant",
        &tenant,
        None,
        json!({"type": "Business", "displayName": "Plugin test", "residency": "eu"}),
    );
    labelled.metadata.labels = Some(BTreeMap::from([(TEST_LABEL.into(), selector.clone())]));
    tenants.create(&PostParams::default(), &labelled).await?;
    let body = on_the_tenant(&client, &tenant, &kubeconfig).await;
    let cleanup = remove(&tenants, &tenant).await;
    with_cleanup(body, cleanup)
}

async fn on_the_tenant(client: &Client, tenant: &str, kubeconfig: &str) -> Result<()> {
    let namespace = format!("tn-{tenant}");
    let env = [("KUBECONFIG", kubeconfig.to_string())];
    let tenants: Api<Tenant> = Api::all(client.clone());
    eventually("the tenant's namespace", WAIT, POLL, || async {
        Ok(match tenants.get(tenant).await?.status {
            Some(s) if s.namespace.is_some() => Check::Done(()),
            other => Check::Pending(format!("{other:?}")),
        })
    })
    .await?;

    // A missing tenant is an error that says so.
    let missing = run(PLUGIN, &["tree", &format!("tenant/{tenant}-none")], &env)?;
    let said = String::from_utf8_lossy(&missing.stderr);
    ensure!(
        !missing.status.success() && said.contains("not found"),
        "a missing tenant: {} {said}",
        missing.status
    );

    let post = PostParams::default();
    let scopes: Api<Scope> = Api::namespaced(client.clone(), &namespace);
    let grants = json!([{"role": "Editor", "groups": ["eu-team"]}]);
    scopes
        .create(
            &post,
            &object(
                "Scope",
                "eu",
                None,
                json!({"displayName": "Europe", "grants": grants}),
            ),
        )
        .await?;
    Api::<Environment>::namespaced(client.clone(), &namespace)
        .create(
            &post,
            &object("Environment", "prod", None, json!({"kind": "Production"})),
        )
        .await?;
    let dns = format!("api.{tenant}.ossature.test");
    Api::<Certificate>::namespaced(client.clone(), &namespace)
        .create(
            &post,
            &object(
                "Certificate",
                "api",
                None,
                json!({"dnsNames": [dns], "issuer": {"tenantCA": {}}}),
            ),
        )
        .await?;

    // Ready everywhere: the tree says so, object by object.
    let root = eventually("every object of the tree Ready", WAIT, POLL, || async {
        let output = run(
            PLUGIN,
            &["tree", &format!("tenant/{tenant}"), "-o", "json"],
            &env,
        )?;
        let root: Node = serde_json::from_str(&stdout_of(&output, "tree -o json")?)
            .context("tree -o json is the model's Node")?;
        Ok(match root.first_blocking() {
            None => Check::Done(root),
            Some(n) => Check::Pending(format!("{} {:?}", n.key, n.state)),
        })
    })
    .await?;
    let found = nodes(&root);
    let organization = found
        .keys()
        .find(|k| k.starts_with("Organization ") && k.ends_with(&format!("/{tenant}")))
        .cloned();
    for expected in [
        format!("Namespace {namespace}"),
        format!("Namespace {namespace}--prod"),
        format!("PulsarTenant {tenant}"),
        format!("PulsarNamespace {tenant}/prod"),
        format!("KvMount tenants/{tenant}/kv"),
        format!("TransitKey tenants/{tenant}/transit/{tenant}"),
        format!("Scope {namespace}/eu"),
        format!("Certificate {namespace}/api"),
        organization.unwrap_or_else(|| "an Organization".into()),
    ] {
        let node = found
            .get(&expected)
            .with_context(|| format!("{expected} is in the tree: {:?}", found.keys()))?;
        ensure!(node.state.ready, "{expected}: {:?}", node.state);
    }
    ensure!(
        found[&format!("Certificate {namespace}/api")]
            .expires
            .is_some(),
        "the certificate's expiry is shown"
    );
    ensure!(
        !found.keys().any(|k| k.starts_with("Host ")),
        "the operator runs without an edge, and the status says so"
    );

    // As people read it: indented, with states, no colors off a terminal.
    let started = std::time::Instant::now();
    let text = stdout_of(&run(PLUGIN, &["tree", tenant], &env)?, "tree")?;
    eprintln!("tree of a Ready tenant took {:?}", started.elapsed());
    ensure!(!text.contains('\u{1b}'), "{text}");
    for line in [
        format!("Tenant/{tenant}"),
        format!("├─ Namespace/{namespace} "),
        format!("PulsarTenant/{tenant} "),
        format!("KvMount/tenants/{tenant}/kv "),
    ] {
        let row = text
            .lines()
            .find(|l| l.contains(&line))
            .with_context(|| format!("{line:?} in\n{text}"))?;
        ensure!(row.contains(" True "), "{row}");
    }

    // A grant of a role nobody defined: the scope's RBAC is not Ready.
    scopes
        .patch(
            "eu",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"grants": [
                {"role": "Editor", "groups": ["eu-team"]},
                {"role": "auditor", "groups": ["auditors"]},
            ]}})),
        )
        .await?;
    let flags = ["--kubeconfig", kubeconfig, "-o", "json"];
    let why = eventually(
        "why names the scope's RBAC and its Events",
        WAIT,
        POLL,
        || async {
            let mut args = vec!["why", tenant];
            args.extend(flags);
            let output = run(PLUGIN, &args, &[])?;
            let why: Value = serde_json::from_str(&stdout_of(&output, "why -o json")?)?;
            let blocked = why["blocking"]["state"]["reason"] == "RoleNotFound";
            let evented = why["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["reason"] == "RoleNotFound"));
            Ok(match blocked && evented {
                true => Check::Done(why),
                false => Check::Pending(why.to_string()),
            })
        },
    )
    .await?;
    let blocking = &why["blocking"];
    ensure!(blocking["backend"] == "Kubernetes", "{why}");
    ensure!(
        blocking["kind"] == "Role"
            && blocking["name"] == format!("{namespace}/ossature-scope-eu-editor"),
        "the scope's Role is what blocks: {why}"
    );
    ensure!(blocking["state"]["condition"] == "RbacReady", "{why}");
    ensure!(
        blocking["state"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("auditor")),
        "the message names the role: {why}"
    );
    ensure!(
        blocking["reportedBy"]["kind"] == "Scope"
            && blocking["reportedBy"]["name"] == format!("{namespace}/eu"),
        "{why}"
    );
    let event = why["events"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["reason"] == "RoleNotFound"))
        .context("a RoleNotFound event")?;
    ensure!(
        event["object"] == "Scope/eu" && event["type"] == "Warning",
        "{event}"
    );

    // Found by kubectl on PATH, as a plugin; the tenant of a namespace.
    let directory = Path::new(PLUGIN)
        .parent()
        .context("the plugin's directory")?;
    let path = format!(
        "{}:{}",
        directory.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubectl_env = [("KUBECONFIG", kubeconfig.to_string()), ("PATH", path)];
    let started = std::time::Instant::now();
    let text = stdout_of(
        &run(
            "kubectl",
            &["ossature", "why", "-n", &format!("{namespace}--prod")],
            &kubectl_env,
        )?,
        "kubectl ossature why",
    )?;
    eprintln!("kubectl ossature why took {:?}", started.elapsed());
    for expected in [
        format!("Tenant {tenant} is Ready"),
        format!("Role/{namespace}/ossature-scope-eu-editor"),
        "RbacReady=False on Scope/".to_string(),
        "RoleNotFound".to_string(),
        "Events, oldest first".to_string(),
    ] {
        ensure!(text.contains(&expected), "{expected:?} in\n{text}");
    }
    let help = stdout_of(
        &run("kubectl", &["ossature", "--help"], &kubectl_env)?,
        "kubectl ossature --help",
    )?;
    if !(help.contains("tree") && help.contains("why")) {
        bail!("the help names both commands:\n{help}");
    }
    Ok(())
}

/// Deletes the tenant (the operator removes what it made) and waits until
/// it is gone.
async fn remove(tenants: &Api<Tenant>, tenant: &str) -> Result<()> {
    match tenants.delete(tenant, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    eventually("the tenant gone", WAIT, POLL, || async {
        Ok(match tenants.get_opt(tenant).await? {
            None => Check::Done(()),
            Some(t) => Check::Pending(format!(
                "still there, Ready: {}",
                t.status.is_some_and(|s| ready(&s.conditions))
            )),
        })
    })
    .await
}
