//! The command line, as kubectl users expect it: `kubectl ossature tree
//! tenant/acme`, the usual kubeconfig flags, `-o json`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use ossature_model::names::tenant_of_any;

/// What a tenant owns across Kubernetes, Keycloak, Pulsar, OpenBao and the
/// edge, and why it is not Ready, read from the Kubernetes objects and
/// their status: no backend credentials are needed.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl-ossature",
    bin_name = "kubectl ossature",
    version,
    after_help = "Examples:\n  kubectl ossature tree tenant/acme\n  kubectl ossature why acme -o json\n  kubectl ossature why -n tn-acme--prod     # the tenant of a namespace"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub kube: KubeFlags,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Every object a tenant owns, in Kubernetes and in each backend, as a
    /// tree: its Scopes and Environments, and below each custom resource the
    /// objects its reconcile makes, each with its state and, when it is not
    /// Ready, the reason and message its owner reports.
    Tree(Target),
    /// The first blocking condition down a tenant's tree: the deepest object
    /// that is not Ready on the first such branch (depth first; a reported
    /// failure before a condition not reported yet), its backend, its
    /// owner's condition with reason and message, and the Events of that
    /// object, its owner and the tenant, oldest first.
    Why(WhyArgs),
}

/// The tenant, how to print, and what of the platform shapes the tree.
#[derive(ClapArgs, Debug, Clone)]
pub struct Target {
    /// The tenant: `tenant/acme`, `tenants/acme` or `acme`. Without it, the
    /// tenant whose namespace (or an environment's) `-n` or the current
    /// context names.
    #[arg(value_name = "TENANT", value_parser = parse_tenant)]
    pub tenant: Option<String>,
    /// Output format: a table for people, or JSON for scripts.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Colors: on a terminal only (auto; NO_COLOR and CLICOLOR_FORCE are
    /// honoured), always, or never.
    #[arg(long, value_enum, default_value_t = ColorWhen::Auto)]
    pub color: ColorWhen,
    /// The root domain the operator runs with (its `--root-domain`): names
    /// the tenant's host. By default read from the tenant's status.
    #[arg(long, env = "OSSATURE_ROOT_DOMAIN", value_parser = ossature_model::platform::parse_root_domain)]
    pub root_domain: Option<String>,
    /// The operator runs without an edge (its `--no-edge`): no host, host
    /// certificate or route. By default the tenant's status says (an
    /// `EdgeReady` condition).
    #[arg(long)]
    pub no_edge: bool,
    /// What the operator scales event processors and sinks with (its
    /// `--autoscaler`). By default what the tenant's Workloads' status
    /// shows, else hpa.
    #[arg(long, value_enum)]
    pub autoscaler: Option<AutoscalerChoice>,
}

#[derive(ClapArgs, Debug, Clone)]
pub struct WhyArgs {
    #[command(flatten)]
    pub target: Target,
    /// Most Events shown (the latest ones); 0 shows none.
    #[arg(long, default_value_t = 20)]
    pub events: usize,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// An indented tree with state columns.
    Text,
    /// The model's tree (or the diagnosis) as JSON.
    Json,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

impl ColorWhen {
    pub fn choice(self) -> anstream::ColorChoice {
        match self {
            ColorWhen::Auto => anstream::ColorChoice::Auto,
            ColorWhen::Always => anstream::ColorChoice::Always,
            ColorWhen::Never => anstream::ColorChoice::Never,
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoscalerChoice {
    /// A KEDA ScaledObject.
    Keda,
    /// A HorizontalPodAutoscaler.
    Hpa,
}

impl AutoscalerChoice {
    pub fn model(self) -> ossature_model::workloads::Autoscaler {
        match self {
            AutoscalerChoice::Keda => ossature_model::workloads::Autoscaler::Keda,
            AutoscalerChoice::Hpa => ossature_model::workloads::Autoscaler::Hpa,
        }
    }
}

/// Which cluster and as whom, as kubectl takes them.
#[derive(ClapArgs, Debug, Clone, Default)]
#[command(next_help_heading = "Cluster")]
pub struct KubeFlags {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The kubeconfig cluster to use.
    #[arg(long, global = true)]
    pub cluster: Option<String>,
    /// The kubeconfig user to use.
    #[arg(long, global = true)]
    pub user: Option<String>,
    /// A tenant's namespace (`tn-acme`) or one of its environments'
    /// (`tn-acme--prod`): its tenant, when none is named.
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// How long to wait for each answer of the apiserver: `30s`, `2m`, or
    /// seconds.
    #[arg(long, global = true, default_value = "30s", value_parser = parse_timeout)]
    pub request_timeout: Duration,
}

/// A tenant as kubectl users name it: `tenant/acme`, `tenants/acme`,
/// `tenant.ossature.dev/acme` or `acme`.
pub fn parse_tenant(value: &str) -> Result<String, String> {
    let name = match value.split_once('/') {
        Some((kind, name)) => {
            let kind = kind.to_ascii_lowercase();
            let known = ["tenant", "tenants"]
                .iter()
                .any(|k| kind == *k || kind == format!("{k}.ossature.dev"));
            if !known {
                return Err(format!(
                    "{value:?} is not a tenant: name one as tenant/NAME or NAME (the tree starts at a tenant; a tenant's namespace goes in -n)"
                ));
            }
            name
        }
        None => value,
    };
    check_tenant_name(name).map(|()| name.to_string())
}

/// A tenant's name is a DNS label without `--` (the separator of its
/// environments' namespaces).
fn check_tenant_name(name: &str) -> Result<(), String> {
    if ossature_policy::roles::is_dns_label(name) && !name.contains("--") {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a tenant name: tenants are named by lowercase letters, digits and single hyphens, starting with a letter, such as acme or acme-eu"
        ))
    }
}

/// The tenant asked for: the one named, else the one whose namespace `-n`
/// names, else the current context's namespace's tenant.
pub fn tenant_asked(
    named: Option<&str>,
    namespace: Option<&str>,
    context_namespace: &str,
) -> Result<String, String> {
    if let Some(name) = named {
        return Ok(name.to_string());
    }
    match namespace {
        Some(namespace) => tenant_of_any(namespace).map(String::from).ok_or_else(|| {
            format!(
                "namespace {namespace} is not a tenant's (tn-<tenant> or tn-<tenant>--<environment>); name the tenant instead, as tenant/NAME"
            )
        }),
        None => tenant_of_any(context_namespace)
            .map(String::from)
            .ok_or_else(|| {
                "name a tenant (tenant/acme), or one of its namespaces with -n"
                    .to_string()
            }),
    }
}

/// `30s`, `2m`, `1h` or plain seconds; at least one second.
pub fn parse_timeout(value: &str) -> Result<Duration, String> {
    let (number, unit) = match value.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => value.split_at(at),
        None => (value, "s"),
    };
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => 0,
    };
    match number.parse::<u64>() {
        Ok(n) if n > 0 && seconds > 0 => Ok(Duration::from_secs(n.saturating_mul(seconds))),
        _ => Err(format!(
            "{value:?} is not a timeout: give a positive number of seconds, minutes or hours, such as 30s, 2m or 1h"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_are_named_as_kubectl_users_name_objects() {
        for given in [
            "acme",
            "tenant/acme",
            "tenants/acme",
            "Tenant/acme",
            "tenant.ossature.dev/acme",
        ] {
            assert_eq!(parse_tenant(given).as_deref(), Ok("acme"), "{given}");
        }
        let wrong_kind = parse_tenant("scope/acme").unwrap_err();
        assert!(wrong_kind.contains("tenant/NAME"), "{wrong_kind}");
        for bad in ["Acme", "acme--prod", "-acme", "", "tenant/", "a_b"] {
            let error = parse_tenant(bad).unwrap_err();
            assert!(error.contains("not a tenant"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_namespace_names_its_tenant() {
        let asked = |named, namespace, context| tenant_asked(named, namespace, context);
        assert_eq!(
            asked(None, Some("tn-acme--prod"), "default").unwrap(),
            "acme"
        );
        assert_eq!(asked(None, Some("tn-acme"), "default").unwrap(), "acme");
        assert_eq!(
            asked(Some("beta"), Some("tn-acme"), "default").unwrap(),
            "beta"
        );
        assert_eq!(asked(None, None, "tn-acme--prod").unwrap(), "acme");
        let other = asked(None, Some("default"), "tn-acme").unwrap_err();
        assert!(other.contains("not a tenant's"), "{other}");
        let none = asked(None, None, "default").unwrap_err();
        assert!(none.contains("-n"), "{none}");
    }

    #[test]
    fn timeouts_read_as_kubectls() {
        assert_eq!(parse_timeout("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_timeout("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_timeout("45"), Ok(Duration::from_secs(45)));
        for bad in ["0", "s", "5d", "-1", "1.5s"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_parse_after_the_subcommand_as_kubectl_passes_them() {
        let args = Args::try_parse_from([
            "kubectl-ossature",
            "why",
            "tenant/acme",
            "--context",
            "stack",
            "-o",
            "json",
            "--events",
            "5",
        ])
        .unwrap();
        assert_eq!(args.kube.context.as_deref(), Some("stack"));
        let Command::Why(why) = args.command else {
            panic!("why parses as why")
        };
        assert_eq!(why.target.tenant.as_deref(), Some("acme"));
        assert_eq!(why.target.output, Output::Json);
        assert_eq!(why.events, 5);
        let error = Args::try_parse_from(["kubectl-ossature", "tree", "scope/eu"]).unwrap_err();
        assert!(error.to_string().contains("not a tenant"), "{error}");
    }
}
