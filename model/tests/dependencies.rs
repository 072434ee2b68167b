//! The model is pure, and the CRD types are plain types: neither may pull
//! in an async runtime, a Kubernetes or HTTP client, or a controller
//! runtime, so that any binary (a control plane showing a plan, a kubectl
//! plugin) links them without the operator's machinery.

use std::collections::BTreeSet;
use std::process::Command;

/// Crates that mean I/O or a runtime.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "hyper",
    "hyper-util",
    "reqwest",
    "tower",
    "kube-client",
    "kube-runtime",
    "vaultrs",
    "keycloak",
    "instant-acme",
    "pulsar",
    "ossature-operator",
    "ossature-bootstrap",
];

/// The packages in `package`'s normal (non-dev, non-build) dependency tree,
/// with the features it alone asks for.
fn tree(package: &str) -> BTreeSet<String> {
    let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let output = Command::new(env!("CARGO"))
        .args(["tree", "--locked", "--edges", "normal", "--prefix", "none"])
        .args(["--format", "{p}", "--package", package, "--manifest-path"])
        .arg(workspace)
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn assert_pure(package: &str) {
    let packages = tree(package);
    assert!(packages.contains(package), "{packages:?}");
    let found: Vec<&&str> = FORBIDDEN
        .iter()
        .filter(|f| packages.contains(**f))
        .collect();
    assert!(
        found.is_empty(),
        "{package} depends on {found:?}; keep I/O and runtimes out of it"
    );
}

#[test]
fn the_model_has_no_runtime_and_no_client() {
    assert_pure("ossature-model");
}

#[test]
fn the_crd_types_have_no_runtime_and_no_client() {
    assert_pure("ossature-crds");
}

/// The control plane's authorization, fed from its watches, is pure too.
#[test]
fn the_policy_crate_has_no_runtime_and_no_client() {
    assert_pure("ossature-policy");
}
