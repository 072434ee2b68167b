//! `kubectl ossature`: the tree of everything a tenant owns across every
//! backend, and why it is not Ready, from the Kubernetes objects and their
//! status alone (the model crate's tree, as the control plane's
//! `tenantTree` query answers it).

pub mod cli;
pub mod read;
pub mod render;
pub mod why;

use std::io::Write;

use anyhow::{Context, Result};
use k8s_openapi::jiff::Timestamp;
use ossature_model::Platform;
use ossature_model::conditions::EDGE_READY;
use ossature_model::tree::{Node, Settings, TenantObjects};

use crate::cli::{Args, AutoscalerChoice, Command, Output, Target};

/// Runs one command; what went wrong, in words, otherwise.
pub async fn run(args: Args) -> Result<()> {
    let target = match &args.command {
        Command::Tree(target) => target,
        Command::Why(why) => &why.target,
    };
    let cluster = read::connect(&args.kube).await?;
    let tenant = cli::tenant_asked(
        target.tenant.as_deref(),
        args.kube.namespace.as_deref(),
        &cluster.namespace,
    )
    .map_err(anyhow::Error::msg)?;
    let objects = read::tenant_objects(&cluster.client, &tenant).await?;
    let root = tree_of(&objects, target);
    let now = Timestamp::now();
    let text = match &args.command {
        Command::Tree(_) => match target.output {
            Output::Json => json(&root)?,
            Output::Text => render::tree(&root, now),
        },
        Command::Why(why) => {
            let branch = why::blocking_branch(&root).unwrap_or_default();
            let subjects = why::subjects(&branch, &objects);
            let (events, error) = match (why.events, subjects.is_empty()) {
                (0, _) | (_, true) => (Vec::new(), None),
                _ => match read::events_about(&cluster.client, &subjects).await {
                    Ok(events) => (events, None),
                    Err(e) => (Vec::new(), Some(format!("{e:#}"))),
                },
            };
            let mut diagnosis = why::diagnose(&root, events, why.events);
            diagnosis.events_error = error;
            match target.output {
                Output::Json => json(&diagnosis)?,
                Output::Text => render::diagnosis(&diagnosis, now),
            }
        }
    };
    let mut out = anstream::AutoStream::new(std::io::stdout(), target.color.choice()).lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing the output")
}

fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    let mut text = serde_json::to_string_pretty(value).context("encoding JSON")?;
    text.push('\n');
    Ok(text)
}

/// The tenant's tree with the platform settings the operator runs with:
/// the flags', else what the tenant's status shows of them.
pub fn tree_of(objects: &TenantObjects, target: &Target) -> Node {
    let status = objects.tenant.status.as_ref();
    let tenant = objects.tenant.metadata.name.as_deref().unwrap_or_default();
    let recorded_domain = status
        .and_then(|s| s.host.as_deref())
        .and_then(|host| host.strip_prefix(&format!("{tenant}.")))
        .map(String::from);
    let platform = Platform {
        root_domain: target
            .root_domain
            .clone()
            .or(recorded_domain)
            .unwrap_or_else(|| Platform::default().root_domain),
        ..Platform::default()
    };
    // Without status yet, the operator's default: an edge.
    let edge = !target.no_edge
        && status.is_none_or(|s| {
            s.conditions.is_empty() || s.conditions.iter().any(|c| c.type_ == EDGE_READY)
        });
    let recorded_scaler =
        objects
            .workloads
            .iter()
            .find_map(|w| match w.status.as_ref()?.autoscaler.as_deref()? {
                "KEDA" => Some(AutoscalerChoice::Keda),
                "HPA" => Some(AutoscalerChoice::Hpa),
                _ => None,
            });
    let autoscaler = target
        .autoscaler
        .or(recorded_scaler)
        .unwrap_or(AutoscalerChoice::Hpa);
    let settings = Settings {
        platform: &platform,
        edge,
        autoscaler: autoscaler.model(),
        pulsar_admin_url: "",
    };
    ossature_model::tree::tree(objects, &settings)
}

#[cfg(test)]
mod tests {
    use ossature_model::tree::Kind;
    use serde_json::{Value, json};

    use super::*;
    use crate::cli::ColorWhen;

    fn target(root_domain: Option<&str>, no_edge: bool) -> Target {
        Target {
            tenant: None,
            output: Output::Text,
            color: ColorWhen::Never,
            root_domain: root_domain.map(String::from),
            no_edge,
            autoscaler: None,
        }
    }

    fn acme(status: Value) -> TenantObjects {
        TenantObjects::new(
            serde_json::from_value(json!({
                "apiVersion": "ossature.dev/v1alpha1", "kind": "Tenant",
                "metadata": {"name": "acme"},
                "spec": {"type": "Business", "displayName": "Acme", "residency": "eu"},
                "status": status,
            }))
            .unwrap(),
        )
    }

    fn hosts(objects: &TenantObjects, target: &Target) -> Vec<String> {
        let root = tree_of(objects, target);
        root.walk()
            .into_iter()
            .filter(|n| n.key.kind == Kind::Host)
            .map(|n| n.key.name.clone())
            .collect()
    }

    fn condition(type_: &str) -> Value {
        json!({"type": type_, "status": "True", "reason": "Provisioned", "message": "",
               "lastTransitionTime": "2030-01-01T00:00:00Z"})
    }

    /// The edge and the root domain are what the tenant's status shows of
    /// the operator's, unless the flags say otherwise.
    #[test]
    fn the_edge_and_root_domain_come_from_status_unless_flags_say() {
        let with_edge = acme(json!({
            "host": "acme.apps.example.com",
            "conditions": [condition("Ready"), condition("EdgeReady")],
        }));
        assert_eq!(
            hosts(&with_edge, &target(None, false)),
            ["acme.apps.example.com"]
        );
        assert_eq!(
            hosts(&with_edge, &target(Some("other.example"), false)),
            ["acme.other.example"]
        );
        assert!(hosts(&with_edge, &target(None, true)).is_empty());
        let without = acme(json!({"conditions": [condition("Ready")]}));
        assert!(hosts(&without, &target(None, false)).is_empty());
        // Not reconciled yet: the operator's defaults.
        assert_eq!(
            hosts(&acme(Value::Null), &target(None, false)),
            ["acme.ossature.test"]
        );
    }
}
