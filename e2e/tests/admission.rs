//! The real kube-apiserver refuses bad Tenants, Scopes and Environments at
//! admission, each with a message a person understands, and accepts good ones.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use ossature_crds::{Environment, Scope, ServiceIdentity, Tenant, Topic, Workload};
use ossature_e2e::{Check, Stack, eventually, unique, with_cleanup};
use serde_json::{Value, json};

/// Installs the CRDs from the types (server-side apply) and waits until served.
async fn install_crds(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("ossature-e2e").force();
    for crd in ossature_crds::all() {
        let name = crd.metadata.name.clone().context("CRD has a name")?;
        crds.patch(&name, &params, &Patch::Apply(&crd)).await?;
        eventually(
            &format!("CRD {name} established"),
            Duration::from_secs(60),
            Duration::from_millis(250),
            || {
                let crds = crds.clone();
                let name = name.clone();
                async move {
                    let crd = crds.get(&name).await?;
                    let established = crd
                        .status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    Ok(if established {
                        Check::Done(())
                    } else {
                        Check::Pending("not established".into())
                    })
                }
            },
        )
        .await?;
    }
    Ok(())
}

fn tenant(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "ossature.dev/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": spec,
    })
}

fn business() -> Value {
    json!({"type": "Business", "displayName": "Acme", "residency": "eu"})
}

/// An untyped view of a resource kind, so that objects the Rust types could
/// never hold (an unknown enum value) reach the apiserver as a user sends them.
fn raw<K: kube::Resource<DynamicType = ()>>(
    client: &Client,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    let resource = ApiResource::erase::<K>(&());
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// Creating `object` must fail with a message that contains `expected`.
async fn refused<K>(api: &Api<DynamicObject>, object: &K, expected: &str) -> Result<()>
where
    K: serde::Serialize,
{
    let object: DynamicObject = serde_json::from_value(serde_json::to_value(object)?)?;
    match api.create(&PostParams::default(), &object).await {
        Ok(created) => {
            let name = created.metadata.name.clone().unwrap_or_default();
            let _ = api.delete(&name, &DeleteParams::default()).await;
            bail!("{name} was accepted; expected a refusal saying {expected:?}")
        }
        Err(kube::Error::Api(status)) if status.code == 422 || status.code == 400 => {
            if status.message.contains(expected) {
                Ok(())
            } else {
                bail!(
                    "refused, but the message {:?} does not say {expected:?}",
                    status.message
                )
            }
        }
        Err(other) => Err(other.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tenants_are_refused_with_their_reason() -> Result<()> {
    let stack = Stack::get().await?;
    let client = stack.kube_client().await?;
    install_crds(&client).await?;
    let tenants = raw::<Tenant>(&client, None);

    let not_a_label = tenant("acme.corp", business());
    refused(&tenants, &not_a_label, "tenant name must be a DNS label").await?;
    let separator = tenant("acme--eu", business());
    refused(&tenants, &separator, "must not contain '--'").await?;
    let long = tenant(&"a".repeat(31), business());
    refused(&tenants, &long, "at most 30 characters").await?;
    for reserved in ["master", "public", "pulsar", "default", "kube-acme"] {
        refused(
            &tenants,
            &tenant(reserved, business()),
            "reserved by a backend",
        )
        .await?;
    }
    let mut spec = business();
    spec["identity"] = json!({"accessTokenLifetimeSeconds": 7200});
    refused(
        &tenants,
        &tenant(&unique("tn"), spec),
        "between 60 and 3600 (1 hour)",
    )
    .await?;
    let mut spec = business();
    spec["type"] = json!("Reseller");
    refused(
        &tenants,
        &tenant(&unique("tn"), spec),
        "Unsupported value: \"Reseller\"",
    )
    .await?;
    // Messaging limits: a backlog is a positive quantity of bytes.
    for backlog in [json!("lots"), json!("-1Gi"), json!(0)] {
        let mut spec = business();
        spec["quotas"] = json!({"backlog": backlog});
        refused(
            &tenants,
            &tenant(&unique("tn"), spec),
            "backlog must be a positive quantity of bytes",
        )
        .await?;
    }
    let mut spec = business();
    spec["quotas"] = json!({"topics": 0});
    refused(
        &tenants,
        &tenant(&unique("tn"), spec),
        "should be greater than or equal to 1",
    )
    .await?;
    refused(
        &tenants,
        &tenant("ossature-business-eu", business()),
        "reserved for what Ossature shares",
    )
    .await?;
    // Realm-wide settings cannot differ per tenant in a shared realm.
    for identity in [
        json!({"mfaRequired": false}),
        json!({"isolation": "Organization", "passwordPolicy": {"minLength": 20}}),
        json!({"selfRegistration": true}),
        json!({"emailVerification": false}),
    ] {
        let mut spec = business();
        spec["identity"] = identity;
        refused(
            &tenants,
            &tenant(&unique("tn"), spec),
            "set identity.isolation: Realm",
        )
        .await?;
    }
    // What differs per tenant is allowed there; the rest with a realm of its own.
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    for identity in [
        json!({"mfaRequired": true, "accessTokenLifetimeSeconds": 900}),
        json!({"isolation": "Realm", "mfaRequired": false, "passwordPolicy": {"minLength": 20}}),
    ] {
        let mut spec = business();
        spec["identity"] = identity.clone();
        let object: DynamicObject = serde_json::from_value(tenant(&unique("tn"), spec))?;
        tenants
            .create(&dry_run, &object)
            .await
            .with_context(|| format!("identity {identity} refused"))?;
    }
    let consumer = json!({
        "type": "Consumer", "displayName": "Shop", "residency": "us",
        "identity": {"identityProviderFederation": true},
    });
    refused(
        &tenants,
        &tenant(&unique("tn"), consumer),
        "identity provider federation is for Business tenants",
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_type_and_residency_cannot_change() -> Result<()> {
    let stack = Stack::get().await?;
    let client = stack.kube_client().await?;
    install_crds(&client).await?;
    let tenants: Api<Tenant> = Api::all(client);
    let name = unique("tn");
    let mut spec = business();
    spec["identity"] = json!({"isolation": "Realm"});
    tenants
        .create(
            &PostParams::default(),
            &serde_json::from_value(tenant(&name, spec))?,
        )
        .await?;

    let body = async {
        let params = PatchParams::default();
        for (patch, expected) in [
            (json!({"spec": {"type": "Consumer"}}), "type is immutable"),
            (
                json!({"spec": {"residency": "us"}}),
                "residency is immutable",
            ),
            (
                json!({"spec": {"identity": {"isolation": "Organization"}}}),
                "isolation is immutable",
            ),
        ] {
            match tenants.patch(&name, &params, &Patch::Merge(&patch)).await {
                Ok(_) => bail!("patch {patch} was accepted"),
                Err(kube::Error::Api(status)) if status.message.contains(expected) => {}
                Err(other) => bail!("patch {patch}: expected {expected:?}, got {other}"),
            }
        }
        // Other fields stay editable.
        let rename = json!({"spec": {"displayName": "Acme Europe"}});
        let patched = tenants
            .patch(&name, &params, &Patch::Merge(&rename))
            .await?;
        assert_eq!(patched.spec.display_name, "Acme Europe");
        Ok(())
    }
    .await;
    let cleanup = tenants
        .delete(&name, &DeleteParams::default())
        .await
        .map(drop)
        .map_err(Into::into);
    with_cleanup(body, cleanup)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_scopes_and_environments_are_refused() -> Result<()> {
    let stack = Stack::get().await?;
    let client = stack.kube_client().await?;
    install_crds(&client).await?;
    let ns = unique("e2e-admission");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await?;

    let body = async {
        let scopes: Api<Scope> = Api::namespaced(client.clone(), &ns);
        let raw_scopes = raw::<Scope>(&client, Some(&ns));
        let own_parent = json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Scope",
            "metadata": {"name": "eu"},
            "spec": {"displayName": "EU", "parent": "eu"},
        });
        refused(&raw_scopes, &own_parent, "a Scope cannot be its own parent").await?;
        let empty_grant = json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Scope",
            "metadata": {"name": "eu"},
            "spec": {"displayName": "EU", "grants": [{"role": "Viewer"}]},
        });
        refused(
            &raw_scopes,
            &empty_grant,
            "a grant names at least one group or user",
        )
        .await?;
        // A role is a standard one or a tenant's own (a DNS label).
        let odd_role = json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Scope",
            "metadata": {"name": "eu"},
            "spec": {"displayName": "EU", "grants": [{"role": "Owner", "users": ["bob"]}]},
        });
        refused(&raw_scopes, &odd_role, "spec.grants[0].role").await?;
        let odd_mapping = json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Scope",
            "metadata": {"name": "eu"},
            "spec": {"displayName": "EU", "groupMappings": [{"group": "", "role": "Viewer"}]},
        });
        refused(&raw_scopes, &odd_mapping, "spec.groupMappings[0].group").await?;
        let good: Scope = serde_json::from_value(json!({
            "apiVersion": "ossature.dev/v1alpha1", "kind": "Scope",
            "metadata": {"name": "france"},
            "spec": {"displayName": "France", "parent": "eu",
                     "grants": [{"role": "Editor", "groups": ["fr-team"]},
                                {"role": "deployer", "users": ["dana"]}],
                     "groupMappings": [{"group": "idp-fr", "role": "Viewer"}]},
        }))?;
        scopes
            .create(&PostParams::default(), &good)
            .await
            .context("a valid Scope is accepted")?;

        let environments: Api<Environment> = Api::namespaced(client.clone(), &ns);
        let raw_environments = raw::<Environment>(&client, Some(&ns));
        let env = |name: &str, spec: Value| {
            json!({
                "apiVersion": "ossature.dev/v1alpha1", "kind": "Environment",
                "metadata": {"name": name}, "spec": spec,
            })
        };
        refused(
            &raw_environments,
            &env(&"p".repeat(29), json!({"kind": "Production"})),
            "at most 28 characters",
        )
        .await?;
        refused(
            &raw_environments,
            &env("prod", json!({"kind": "Production", "ttl": "72h"})),
            "ttl is only for Ephemeral",
        )
        .await?;
        refused(
            &raw_environments,
            &env("default", json!({"kind": "Staging"})),
            "environment name is reserved",
        )
        .await?;
        refused(
            &raw_environments,
            &env("eu--prod", json!({"kind": "Staging"})),
            "must not contain '--'",
        )
        .await?;
        environments
            .create(
                &PostParams::default(),
                &serde_json::from_value(env("pr-42", json!({"kind": "Ephemeral", "ttl": "72h"})))?,
            )
            .await
            .context("a valid Environment is accepted")?;
        Ok(())
    }
    .await;
    let cleanup = namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .map(drop)
        .map_err(Into::into);
    with_cleanup(body, cleanup)
}

/// Every document of `examples/` passes admission (server-side dry run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_pass_admission() -> Result<()> {
    use serde::Deserialize;
    let stack = Stack::get().await?;
    let client = stack.kube_client().await?;
    install_crds(&client).await?;
    // Namespaced examples are checked in a scratch namespace: theirs may not exist yet.
    let ns = unique("e2e-examples");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await?;
    let body = async {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let dry_run = PostParams {
            dry_run: true,
            ..Default::default()
        };
        let mut kinds = std::collections::BTreeMap::<String, usize>::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path)?;
            for document in serde_norway::Deserializer::from_str(&text) {
                let mut object: DynamicObject = DynamicObject::deserialize(document)
                    .with_context(|| format!("parsing {}", path.display()))?;
                let kind = object
                    .types
                    .as_ref()
                    .map(|t| t.kind.clone())
                    .unwrap_or_default();
                let api = match kind.as_str() {
                    "Namespace" => raw::<Namespace>(&client, None),
                    "Tenant" => raw::<Tenant>(&client, None),
                    "Scope" => raw::<Scope>(&client, Some(&ns)),
                    "Environment" => raw::<Environment>(&client, Some(&ns)),
                    "Topic" => raw::<Topic>(&client, Some(&ns)),
                    "ServiceIdentity" => raw::<ServiceIdentity>(&client, Some(&ns)),
                    "Workload" => raw::<Workload>(&client, Some(&ns)),
                    other => bail!("{}: unexpected kind {other}", path.display()),
                };
                if kind != "Tenant" && kind != "Namespace" {
                    object.metadata.namespace = Some(ns.clone());
                }
                api.create(&dry_run, &object)
                    .await
                    .with_context(|| format!("{} {kind} refused", path.display()))?;
                *kinds.entry(kind).or_default() += 1;
            }
        }
        // Two tenants of each type, each with its namespace, two scope
        // branches and two environments; the prod environments of acme and
        // globex with their namespaces, two topics, two services and a
        // workload of each template each.
        assert_eq!(kinds.get("Tenant"), Some(&4), "{kinds:?}");
        assert_eq!(kinds.get("Namespace"), Some(&6), "{kinds:?}");
        assert_eq!(kinds.get("Topic"), Some(&4), "{kinds:?}");
        assert_eq!(kinds.get("ServiceIdentity"), Some(&4), "{kinds:?}");
        assert_eq!(kinds.get("Workload"), Some(&8), "{kinds:?}");
        assert_eq!(kinds.get("Scope"), Some(&16), "{kinds:?}");
        assert_eq!(kinds.get("Environment"), Some(&8), "{kinds:?}");
        Ok(())
    }
    .await;
    let cleanup = namespaces
        .delete(&ns, &DeleteParams::default())
        .await
        .map(drop)
        .map_err(Into::into);
    with_cleanup(body, cleanup)
}
