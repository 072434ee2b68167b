//! The control plane's flags, each with its environment variable, checked
//! as they are read.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use ossature_model::platform::{parse_residency, parse_root_domain};
pub use ossature_records::LogFormat;

/// Serves Ossature's control plane: an API in RPC style over HTTP/1.1 and
/// HTTP/2 (`POST /v1/commands/<name>`, `POST /v1/queries/<name>`, and the
/// bulk `POST /v1/commands` and `POST /v1/queries`) that onboards, changes
/// and offboards tenants by writing the same custom resources a platform
/// engineer would, with server-side apply. Callers present Keycloak tokens
/// of their tenant (people or service accounts) or of the platform
/// operators' group; every command takes an Idempotency-Key and a dry run;
/// every invocation is audited as one JSON line. The API is described at
/// `/openapi.json`.
///
/// With `--local-stack` it brings up the embedded local stack first and
/// takes the apiserver and Keycloak from it. Otherwise the apiserver is the
/// one the environment names (in-cluster, or KUBECONFIG).
///
/// `ossature-control-plane rbac` prints the ClusterRole, Role and bindings
/// its ServiceAccount needs; at start it names any of those rights it lacks.
#[derive(Parser, Debug, Clone)]
#[command(name = "ossature-control-plane", version)]
pub struct Args {
    /// Address the API listens on.
    #[arg(long, env = "OSSATURE_CP_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Certificate chain (PEM) to serve HTTPS with; needs --tls-key.
    /// Without both, the API is served in clear text (HTTP/1.1, and HTTP/2
    /// with prior knowledge).
    #[arg(long, env = "OSSATURE_CP_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "OSSATURE_CP_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// An origin a browser front end is served from, such as
    /// `https://console.example.com`; repeat for several. Without it no
    /// cross-origin request is allowed.
    #[arg(long = "cors-origin", env = "OSSATURE_CP_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Vec<String>,
    /// Keycloak base URL, where the realms' signing keys (JWKS) are read.
    #[arg(long, env = "OSSATURE_KEYCLOAK_URL")]
    pub keycloak_url: Option<String>,
    /// Keycloak's public base URL, as it appears in tokens' `iss`
    /// (`<url>/realms/<realm>`). Default: --keycloak-url.
    #[arg(long, env = "OSSATURE_KEYCLOAK_ISSUER_URL")]
    pub keycloak_issuer_url: Option<String>,
    /// Realm of the platform operators, who may act on every tenant.
    /// Without it nobody is a platform operator.
    #[arg(long, env = "OSSATURE_CP_OPERATORS_REALM")]
    pub operators_realm: Option<String>,
    /// Group of --operators-realm whose members (in the token's `groups`
    /// claim) are platform operators.
    #[arg(
        long,
        env = "OSSATURE_CP_OPERATORS_GROUP",
        default_value = "platform-operators"
    )]
    pub operators_group: String,
    /// Audience platform operators' tokens must name.
    #[arg(
        long,
        env = "OSSATURE_CP_OPERATORS_AUDIENCE",
        default_value = "ossature-control-plane"
    )]
    pub operators_audience: String,
    /// Namespace where the control plane keeps its own state: one small
    /// ConfigMap per idempotency key.
    #[arg(long, env = "OSSATURE_CP_STATE_NAMESPACE", default_value = "ossature-system", value_parser = parse_namespace)]
    pub state_namespace: String,
    /// Hours an idempotency key is remembered; a sweeper removes it after.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..=720))]
    pub idempotency_ttl_hours: u64,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1024..=(8 << 20)))]
    pub max_body_bytes: u64,
    /// Requests per second each caller may make, on average.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate_limit_per_second: u32,
    /// Requests a caller may make at once above the average.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate_limit_burst: u32,
    /// Where the audit records go, one JSON line per invocation: a file
    /// (appended to), or `-` for standard output.
    #[arg(long, env = "OSSATURE_CP_AUDIT_LOG", default_value = "-")]
    pub audit_log: String,
    /// Domain under which every tenant's names sit, as the operator has it
    /// (its `--root-domain`): plans name the objects the operator makes.
    #[arg(long, env = "OSSATURE_ROOT_DOMAIN", default_value = ossature_model::platform::DEFAULT_ROOT_DOMAIN, value_parser = parse_root_domain)]
    pub root_domain: String,
    /// Pulsar clusters of a residency region, as REGION=CLUSTER[,CLUSTER...];
    /// repeat per region. As the operator's `--residency`.
    #[arg(long = "residency", value_parser = parse_residency, default_values = ["eu=standalone", "us=standalone"])]
    pub residency: Vec<(String, Vec<String>)>,
    /// The AcmeIssuer of tenant hosts' certificates, as the operator's
    /// `--host-issuer`.
    #[arg(long, env = "OSSATURE_HOST_ISSUER")]
    pub host_issuer: Option<String>,
    /// Most dedicated realms, as the operator's `--max-dedicated-realms`.
    #[arg(long, default_value_t = ossature_model::platform::DEFAULT_MAX_DEDICATED_REALMS as u64)]
    pub max_dedicated_realms: u64,
    /// The operator runs without an edge (its `--no-edge`): plans show no
    /// host, host certificate or route.
    #[arg(long)]
    pub no_edge: bool,
    /// What the operator scales event processors and sinks with.
    #[arg(long, value_enum, default_value_t = AutoscalerChoice::Hpa)]
    pub autoscaler: AutoscalerChoice,
    /// Pulsar's admin URL, as KEDA's triggers of the operator's workloads read it.
    #[arg(long, env = "OSSATURE_PULSAR_ADMIN_URL", default_value = "")]
    pub pulsar_admin_url: String,
    /// Bring up the embedded local stack (`ossature-dev up`) and take the
    /// apiserver and Keycloak from it; the CRDs must be installed (the
    /// operator's `--local-stack` installs them).
    #[cfg(feature = "local-stack")]
    #[arg(long)]
    pub local_stack: bool,
    /// Log format: `json` lines follow `schemas/record.schema.json`, like
    /// the audit records.
    #[arg(long, value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Something to do other than serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Prints the ClusterRole, Role and bindings the control plane's
    /// ServiceAccount needs, as YAML for `kubectl apply -f -`: no wildcard,
    /// no Secrets, ConfigMaps only in its own namespace; and an admission
    /// policy that lets it write only tenants' namespaces and its own.
    Rbac(crate::rbac::RbacArgs),
}

impl Args {
    /// Whether the local stack is asked for (never, in a build without it).
    pub fn local_stack(&self) -> bool {
        #[cfg(feature = "local-stack")]
        return self.local_stack;
        #[cfg(not(feature = "local-stack"))]
        false
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AutoscalerChoice {
    /// A KEDA ScaledObject (KEDA's CRDs are installed).
    Keda,
    /// A HorizontalPodAutoscaler on an external backlog metric.
    Hpa,
}

impl Args {
    /// What of the platform shapes the desired objects, as the operator
    /// runs with; what is wrong with it, in words.
    pub fn platform(&self) -> Result<crate::commands::plan::PlanSettings, String> {
        let platform = ossature_model::Platform {
            root_domain: self.root_domain.clone(),
            residency: self.residency.iter().cloned().collect(),
            host_issuer: self.host_issuer.clone(),
            max_dedicated_realms: usize::try_from(self.max_dedicated_realms).unwrap_or(usize::MAX),
        };
        if let Some(problem) = platform.problems().into_iter().next() {
            return Err(problem);
        }
        Ok(crate::commands::plan::PlanSettings {
            platform,
            edge: !self.no_edge,
            autoscaler: match self.autoscaler {
                AutoscalerChoice::Keda => ossature_model::workloads::Autoscaler::Keda,
                AutoscalerChoice::Hpa => ossature_model::workloads::Autoscaler::Hpa,
            },
            pulsar_admin_url: self.pulsar_admin_url.clone(),
        })
    }
}

/// The filter of log lines: `RUST_LOG`, or info; an invocation whose
/// context asks for it (a permission) logs at debug.
pub fn log_filter() -> tracing_subscriber::EnvFilter {
    let base = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::EnvFilter::new(format!(
        "{base},ossature_control_plane[invocation{{debug=true}}]=debug"
    ))
}

/// Logs as records (or plain text for a terminal), each line with the
/// invocation it serves.
pub fn init_logs(format: LogFormat) {
    ossature_records::init_logs(format, log_filter());
}

fn parse_origin(value: &str) -> Result<String, String> {
    let value = value.trim().trim_end_matches('/');
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', ' ', '*']) => {
            Ok(value.to_string())
        }
        _ => Err(format!(
            "{value:?} is not an origin such as https://console.example.com (scheme and host, optionally a port, no path)"
        )),
    }
}

fn parse_namespace(value: &str) -> Result<String, String> {
    crate::api::validate::dns_label(value, 63)
        .map(|()| value.to_string())
        .map_err(|problem| format!("{value:?} is not a namespace name: {problem}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked_as_they_are_read() {
        assert_eq!(
            parse_origin("https://console.example.com/").unwrap(),
            "https://console.example.com"
        );
        assert!(parse_origin("http://localhost:5173").is_ok());
        assert!(parse_origin("console.example.com").is_err());
        assert!(parse_origin("https://x.example.com/app").is_err());
        assert!(parse_origin("https://*").is_err());
        assert!(parse_namespace("ossature-system").is_ok());
        assert!(parse_namespace("Ossature").is_err());
        assert!(Args::try_parse_from(["cp", "--tls-cert", "c.pem"]).is_err());
        assert!(Args::try_parse_from(["cp", "--tls-cert", "c.pem", "--tls-key", "k.pem"]).is_ok());
        assert!(Args::try_parse_from(["cp", "--max-body-bytes", "10"]).is_err());
        let args =
            Args::try_parse_from(["cp", "--cors-origin", "https://a.example,https://b.example"])
                .unwrap();
        assert_eq!(args.cors_origins.len(), 2);
        let args =
            Args::try_parse_from(["cp", "--residency", "mars=red,blue", "--no-edge"]).unwrap();
        let plan = args.platform().unwrap();
        assert_eq!(plan.platform.residency["mars"], ["red", "blue"]);
        assert!(!plan.edge);
        assert!(Args::try_parse_from(["cp", "--residency", "mars"]).is_err());
        assert!(Args::try_parse_from(["cp", "--root-domain", "localhost"]).is_err());
    }

    #[test]
    fn help_names_every_flag() {
        use clap::CommandFactory;
        let help = Args::command().render_long_help().to_string();
        for flag in [
            "--listen",
            "--tls-cert",
            "--cors-origin",
            "--keycloak-url",
            "--operators-realm",
            "--audit-log",
            "--log-format",
            "rbac",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
        }
        let mut command = Args::command();
        let rbac = command.find_subcommand_mut("rbac").unwrap();
        let help = rbac.render_long_help().to_string();
        for flag in ["--service-account", "--namespace", "--name"] {
            assert!(help.contains(flag), "{flag} missing from rbac --help");
        }
        let args = Args::try_parse_from([
            "cp",
            "rbac",
            "--service-account",
            "cp",
            "--namespace",
            "platform",
        ])
        .unwrap();
        assert!(matches!(args.command, Some(Command::Rbac(r)) if r.grantee().name == "cp"));
        assert!(Args::try_parse_from(["cp", "rbac", "--namespace", "Platform"]).is_err());
    }
}
