//! The operator's flags, each with its environment variable where a
//! deployment sets it, checked as they are read.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use ossature_model::platform::{
    DEFAULT_MAX_DEDICATED_REALMS, DEFAULT_ROOT_DOMAIN, parse_residency, parse_root_domain,
};
pub use ossature_records::LogFormat;

/// Runs Ossature's controllers: each Tenant becomes a namespace with quota
/// and network policies, its identity in Keycloak, a Pulsar tenant, OpenBao
/// paths and its own CA, and (with an edge) a host served with its
/// certificate; each Scope a nested Keycloak group and RBAC that cascades
/// down the tree; each Environment a namespace and a Pulsar namespace; each
/// Certificate a key and certificate from the tenant's CA or an ACME CA;
/// each Topic a Pulsar topic with its schema, policies and grants; each
/// ServiceIdentity a ServiceAccount, a Keycloak client, an OpenBao role, a
/// Pulsar token and a SPIFFE certificate; each Workload a Deployment with
/// its service's secrets as files, a Service, a NetworkPolicy, a
/// PodDisruptionBudget and, for event processors and sinks, a subscription
/// and an autoscaler on its backlog. Each reports one Ready condition
/// naming what blocks.
///
/// With `--local-stack` it brings up the embedded local stack first and takes
/// everything from it. Otherwise backend addresses and credentials come from
/// flags or from the variables `ossature-dev env` prints, and the CRDs must be
/// installed first: `kubectl apply -f crds/yaml/`.
#[derive(Parser, Debug)]
#[command(name = "ossature-operator", version)]
pub struct Args {
    /// Keycloak base URL.
    #[arg(long, env = "OSSATURE_KEYCLOAK_URL")]
    pub keycloak_url: Option<String>,
    /// Keycloak master-realm admin user.
    #[arg(long, env = "OSSATURE_KEYCLOAK_ADMIN_USER")]
    pub keycloak_admin_user: Option<String>,
    /// Keycloak master-realm admin password.
    #[arg(long, env = "OSSATURE_KEYCLOAK_ADMIN_PASSWORD", hide_env_values = true)]
    pub keycloak_admin_password: Option<String>,
    /// Pulsar admin REST URL.
    #[arg(long, env = "OSSATURE_PULSAR_ADMIN_URL")]
    pub pulsar_admin_url: Option<String>,
    /// File holding a Pulsar superuser's token (a JWT); read again when
    /// Pulsar refuses it. Without it, calls are anonymous.
    #[arg(long, env = "OSSATURE_PULSAR_TOKEN_FILE")]
    pub pulsar_token_file: Option<std::path::PathBuf>,
    /// OpenBao address.
    #[arg(long, env = "OSSATURE_OPENBAO_ADDR")]
    pub openbao_addr: Option<String>,
    /// OpenBao token allowed to manage mounts and policies.
    #[arg(long, env = "OSSATURE_OPENBAO_TOKEN", hide_env_values = true)]
    pub openbao_token: Option<String>,
    /// Bring up the embedded local stack (`ossature-dev up`), install the CRDs
    /// into it and take every backend address from it.
    #[cfg(feature = "local-stack")]
    #[arg(long)]
    pub local_stack: bool,
    /// Pulsar clusters of a residency region, as REGION=CLUSTER[,CLUSTER...]; repeat per region.
    #[arg(long = "residency", value_parser = parse_residency, default_values = ["eu=standalone", "us=standalone"])]
    pub residency: Vec<(String, Vec<String>)>,
    /// Seconds between periodic reconciles that detect and correct drift.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(5..=86400))]
    pub resync_seconds: u64,
    /// Longest wait, in seconds, between retries of a failing object.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub max_backoff_seconds: u64,
    /// Objects of each kind reconciled at once; bounds the load on Keycloak and Pulsar.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Manage only the Tenants matching this label selector (and their
    /// Scopes and Environments), e.g. `ossature.dev/shard=a`. Instances with
    /// disjoint selectors share a cluster; one without a selector manages
    /// every Tenant, so run it alone.
    #[arg(long, value_parser = parse_selector)]
    pub selector: Option<String>,
    /// Most dedicated realms (`isolation: Realm`) given out on this Keycloak;
    /// past it a tenant is Stalled with reason RealmCapacityReached. Realm
    /// creation and admin calls slow down with every realm.
    #[arg(long, default_value_t = DEFAULT_MAX_DEDICATED_REALMS as u64, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub max_dedicated_realms: u64,
    /// Namespace of the Leases that elect the one instance managing the
    /// shared realms and that hold tenants' custom domains (one per domain,
    /// named `ossature-domain.<domain>`, its holder the tenant).
    #[arg(long, default_value = "kube-system")]
    pub lease_namespace: String,
    /// Reconcile without electing a leader. By default the instances of one
    /// `--selector` shard elect one through the Lease `ossature-operator`
    /// (`ossature-operator-<hash of the selector>` for a shard) in
    /// `--lease-namespace`; the others keep warm caches and take over within
    /// 15 seconds. Only for a single instance per shard.
    #[arg(long)]
    pub no_leader_election: bool,
    /// OpenBao transit key that signs services' Pulsar tokens (ES256, as the
    /// broker's `tokenPublicKey` expects), as MOUNT/KEY. The operator's
    /// OpenBao policy must allow `MOUNT/sign/KEY`.
    #[arg(long, default_value = "pulsar-tokens/pulsar", value_parser = parse_token_key)]
    pub pulsar_token_key: crate::adapters::openbao::tokens::TokenKey,
    /// Read and write Secrets only in the namespaces of this instance's
    /// tenants and environments (and `--acme-namespace`): the operator
    /// binds this ClusterRole, which must grant only the Secret verbs, to
    /// itself with a RoleBinding `ossature-operator-secrets` in each
    /// namespace it makes, and watches Secrets there alone (one watch per
    /// namespace). It needs `bind` on that ClusterRole, and no cluster-wide
    /// access to Secrets. Without it, Secrets are watched cluster-wide.
    #[arg(long, env = "OSSATURE_SECRETS_ROLE", value_parser = parse_role_name)]
    pub secrets_role: Option<String>,
    /// Namespace of the Secrets of AcmeIssuers: the account credentials the
    /// operator writes, and the External Account Binding keys it reads.
    #[arg(long, default_value = "kube-system")]
    pub acme_namespace: String,
    /// Domain under which every tenant's names sit: tenant `acme` owns
    /// `acme.<root-domain>` and the names below it, and may obtain
    /// certificates for those only (checked at admission). One per cluster.
    #[arg(long, env = "OSSATURE_ROOT_DOMAIN", default_value = DEFAULT_ROOT_DOMAIN, value_parser = parse_root_domain)]
    pub root_domain: String,
    /// Caddy's admin API: tenant hosts are served at this edge, each with
    /// its certificate, mutual TLS and allowed source ranges.
    #[arg(long, env = "OSSATURE_EDGE_ADMIN_URL")]
    pub edge_admin_url: Option<String>,
    /// Name of the Caddy HTTP server that serves tenant hosts.
    #[arg(long, default_value = "edge")]
    pub edge_server: String,
    /// Directory of the edge's key files: Caddy reads them, nobody else
    /// should (created with mode 0700).
    #[arg(long, env = "OSSATURE_EDGE_CERT_DIR")]
    pub edge_cert_dir: Option<PathBuf>,
    /// The AcmeIssuer that signs the certificate of each tenant's host at
    /// the edge. Without it, each tenant's own CA signs it.
    #[arg(long, env = "OSSATURE_HOST_ISSUER")]
    pub host_issuer: Option<String>,
    /// The DNS server (address:port) asked for the TXT records that prove
    /// tenants' custom domains. Default: the system's resolver.
    #[arg(long, env = "OSSATURE_DNS_SERVER")]
    pub dns_server: Option<SocketAddr>,
    /// Run without an edge: tenants get no host, host certificate or route.
    #[arg(long)]
    pub no_edge: bool,
    /// What scales event processors and sinks on their backlog: `auto`, a
    /// KEDA ScaledObject when KEDA's CRDs are installed and an HPA on an
    /// external metric otherwise; or always one of `keda`, `hpa`.
    #[arg(long, value_enum, default_value_t = AutoscalerChoice::Auto)]
    pub autoscaler: AutoscalerChoice,
    /// Where `/metrics` and `/healthz` are served.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
    /// Log format: `json` lines follow the control plane's
    /// `schemas/record.schema.json`.
    #[arg(long, value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

impl Args {
    /// Whether the local stack is asked for (never, in a build without it).
    pub fn local_stack(&self) -> bool {
        #[cfg(feature = "local-stack")]
        return self.local_stack;
        #[cfg(not(feature = "local-stack"))]
        false
    }

    pub fn residency(&self) -> BTreeMap<String, Vec<String>> {
        self.residency.iter().cloned().collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AutoscalerChoice {
    Auto,
    Keda,
    Hpa,
}

/// Logs as records (or plain text for a terminal), filtered by `RUST_LOG`;
/// a reconcile's lines carry the control plane invocation that last wrote
/// its object.
pub fn init_logs(format: LogFormat) {
    // vaultrs logs an expected answer (a mount not there yet) as an error;
    // the adapters report what matters themselves.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,vaultrs=off,rustify=off".into());
    ossature_records::init_logs(format, filter);
}

/// `MOUNT/KEY` of an OpenBao transit key.
fn parse_token_key(value: &str) -> Result<crate::adapters::openbao::tokens::TokenKey, String> {
    match value.rsplit_once('/') {
        Some((mount, name)) if !mount.trim_matches('/').is_empty() && !name.is_empty() => {
            Ok(crate::adapters::openbao::tokens::TokenKey {
                mount: mount.trim_matches('/').to_string(),
                name: name.to_string(),
            })
        }
        _ => Err(format!(
            "{value} is not MOUNT/KEY, such as pulsar-tokens/pulsar"
        )),
    }
}

fn parse_selector(value: &str) -> Result<String, String> {
    let value = value.trim();
    let name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    };
    let label_value = |v: &str| {
        v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    let set = |values: &str| {
        values
            .strip_prefix('(')
            .and_then(|v| v.strip_suffix(')'))
            .is_some_and(|v| v.split(',').all(|x| label_value(x.trim())))
    };
    let term = |t: &str| {
        let t = t.trim();
        if let Some(key) = t.strip_prefix('!') {
            return name(key);
        }
        for op in ["!=", "==", "="] {
            if let Some((key, v)) = t.split_once(op) {
                return name(key.trim()) && label_value(v.trim());
            }
        }
        for op in [" notin ", " in "] {
            if let Some((key, values)) = t.split_once(op) {
                return name(key.trim()) && set(values.trim());
            }
        }
        name(t)
    };
    // Terms are separated by commas outside parentheses.
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in value.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&value[start..]);
    if value.is_empty() || depth != 0 || !terms.into_iter().all(term) {
        return Err(format!(
            "{value:?} is not a label selector such as `ossature.dev/shard=a` or `team in (x,y)`"
        ));
    }
    Ok(value.to_string())
}

/// A ClusterRole's name: what the apiserver takes as one path segment.
fn parse_role_name(value: &str) -> Result<String, String> {
    if value.is_empty() || value == "." || value == ".." || value.contains(['/', '%']) {
        return Err(format!(
            "{value:?} is not a ClusterRole name: give the name of the ClusterRole that grants the Secret verbs (the chart's is <release>-ossature-operator-secrets)"
        ));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked_as_they_are_read() {
        assert!(parse_root_domain("apps.example.com").is_ok());
        assert!(parse_root_domain("localhost").is_err());
        assert!(parse_selector("ossature.dev/shard=a").is_ok());
        assert!(parse_selector("team in (x,y)").is_ok());
        assert!(parse_selector("ossature.dev/test=a,!legacy,tier notin (x, y)").is_ok());
        assert!(parse_selector("").is_err());
        assert!(parse_selector("a b").is_err());
        assert!(parse_selector("team in (x,y").is_err());
        assert!(parse_selector("a=b c").is_err());
        assert_eq!(
            parse_residency("eu=c1, c2").unwrap(),
            ("eu".to_string(), vec!["c1".to_string(), "c2".to_string()])
        );
        assert!(parse_residency("eu").is_err());
        let key = parse_token_key("transit/services/pulsar").unwrap();
        assert_eq!(
            (key.mount.as_str(), key.name.as_str()),
            ("transit/services", "pulsar")
        );
        assert!(parse_token_key("pulsar").is_err());
        assert!(parse_token_key("/pulsar").is_err());
        assert!(parse_token_key("pulsar-tokens/").is_err());
        assert!(parse_residency("eu=").is_err());
        let args = Args::try_parse_from(["ossature-operator", "--residency", "mars=red"]).unwrap();
        assert_eq!(args.residency()["mars"], ["red"]);
        assert!(Args::try_parse_from(["ossature-operator", "--concurrency", "0"]).is_err());
    }

    #[test]
    fn a_secrets_role_must_be_a_name() {
        assert_eq!(
            parse_role_name("r-ossature-operator-secrets").unwrap(),
            "r-ossature-operator-secrets"
        );
        for bad in ["", "..", "a/b", "a%2Fb"] {
            let said = parse_role_name(bad).unwrap_err();
            assert!(said.contains("is not a ClusterRole name"), "{said}");
        }
    }
}
