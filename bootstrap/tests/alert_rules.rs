//! The chart's alert rules pass `promtool check rules`, and their unit tests
//! (`promtool test rules`) pass and cover every alert both firing and not.

use std::path::{Path, PathBuf};
use std::process::Command;

use ossature_bootstrap::Layout;
use ossature_bootstrap::tools::ChartTool;
use serde_json::Value;

/// The alerts issue 15 names, which runbooks and routes refer to, and one
/// for when no instance is there to say anything.
const ALERTS: [&str; 7] = [
    "OssatureReconcileStuck",
    "OssatureReconcileErrorRatioHigh",
    "OssatureObjectsNotReady",
    "OssatureBackendDown",
    "OssatureCertificateExpiringSoon",
    "OssatureLeaderMissing",
    "OssatureOperatorDown",
];

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/ossature")
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::from_str(&text).unwrap()
}

/// Runs promtool; its output is the failure message when it fails.
fn promtool(binary: &Path, args: &[&str]) -> String {
    let output = Command::new(binary)
        .args(args)
        .current_dir(chart())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[tokio::test]
async fn the_alert_rules_check_and_their_unit_tests_pass() {
    let layout = Layout::from_env().unwrap();
    let binary = ChartTool::Promtool.ensure(&layout).await.unwrap();
    let checked = promtool(&binary, &["check", "rules", "files/alerts.yaml"]);
    assert!(checked.contains("SUCCESS: 7 rules found"), "{checked}");
    let tested = promtool(&binary, &["test", "rules", "tests/alerts.test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_alert_is_defined_with_what_to_do_and_tested_firing_and_not() {
    let rules = yaml(&chart().join("files/alerts.yaml"));
    let group = &rules["groups"][0];
    assert_eq!(group["name"], "ossature");
    let defined: Vec<&Value> = group["rules"].as_array().unwrap().iter().collect();
    let names: Vec<&str> = defined
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    assert_eq!(names, ALERTS);
    for rule in &defined {
        let name = &rule["alert"];
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["warning", "critical"].contains(&severity),
            "{name}: {severity:?}"
        );
        for annotation in ["summary", "description"] {
            let text = rule["annotations"][annotation].as_str().unwrap_or_default();
            assert!(text.len() > 20, "{name} has no real {annotation}");
        }
    }

    let tests = yaml(&chart().join("tests/alerts.test.yaml"));
    let cases: Vec<&Value> = tests["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
        .collect();
    for alert in ALERTS {
        let of_alert = || cases.iter().filter(|c| c["alertname"] == alert);
        let fired = |c: &&&Value| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
        assert!(
            of_alert().any(|c| fired(&c)),
            "{alert} is never tested firing"
        );
        assert!(
            of_alert().any(|c| !fired(&c)),
            "{alert} is never tested quiet"
        );
    }
}
