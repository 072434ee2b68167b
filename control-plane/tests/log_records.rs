//! The control plane binary's output with `--log-format json --audit-log -`:
//! log lines and audit records on one stream, each valid against the one
//! published schema (`record.schema.json`), the log lines of an invocation
//! carrying its context.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use serde_json::{Value, json};

/// The binary, stopped when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_and_audit_records_follow_one_schema() {
    let env = stack().await;
    let ops = OperatorsRealm::create(&env, "platform-operators").await;
    let output = std::env::temp_dir().join(format!("{}.jsonl", ossature_e2e::unique("cplog")));
    let file = std::fs::File::create(&output).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ossature-control-plane"))
        .env("KUBECONFIG", &env["KUBECONFIG"])
        .env("RUST_LOG", "info")
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(["--audit-log", "-", "--keycloak-url"])
        .arg(&env["OSSATURE_KEYCLOAK_URL"])
        .args(["--operators-realm", &ops.realm])
        .stdout(file)
        .stderr(Stdio::inherit())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut process = Process(child);

    let started = Instant::now();
    let addr = loop {
        let serving = lines(&output)
            .into_iter()
            .find(|l| l["message"].as_str().unwrap_or("").contains("serving"));
        if let Some(line) = serving {
            break line["fields"]["addr"].as_str().unwrap().to_string();
        }
        assert!(
            process.0.try_wait().unwrap().is_none(),
            "the control plane stopped: {:?}",
            lines(&output)
        );
        assert!(started.elapsed() < Duration::from_secs(60), "never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let base = format!("http://{addr}");

    // Refused (no token), then a query asking for debug lines (a platform
    // operator may), sent as part of the caller's own invocation.
    let refused = http()
        .post(format!("{base}/v1/queries/listTenants"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let context = json!({"actionId": "01JQ3X5T0RYB9Q8K1W7ZC4M2NP",
        "invocationId": "01JQ3X5T0RYB9Q8K1W7ZC4M2NQ", "toggles": {"logLevel": "debug"}});
    let debugged = http()
        .post(format!("{base}/v1/queries/listTenants"))
        .bearer_auth(ops.token().await)
        .header(
            "ossature-invocation",
            base64::engine::general_purpose::STANDARD.encode(context.to_string()),
        )
        .json(&json!({"limit": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(debugged.status(), 200);
    let _ = Command::new("kill")
        .args(["-TERM", &process.0.id().to_string()])
        .status();
    let stopped = tokio::task::spawn_blocking(move || process.0.wait().map(|_| process))
        .await
        .unwrap()
        .unwrap();
    drop(stopped);

    let records = lines(&output);
    assert_lines_valid("record.schema.json", &records);
    let audit: Vec<&Value> = records.iter().filter(|l| l["record"] == "audit").collect();
    let logs: Vec<&Value> = records.iter().filter(|l| l["record"] == "log").collect();
    assert_eq!(audit.len(), 2, "{records:?}");
    assert!(logs.iter().any(|l| l["invocation"].is_null()), "{logs:?}");

    // Each invocation's log lines carry the context its audit record has.
    let of = |audit: &Value| -> Vec<Value> {
        logs.iter()
            .filter(|l| l["invocation"]["invocationId"] == audit["invocation"]["invocationId"])
            .map(|l| (*l).clone())
            .collect()
    };
    let refusal = of(audit[0]);
    assert!(
        refusal
            .iter()
            .any(|l| l["message"] == "refused" && l["fields"]["problem"] == "unauthenticated"),
        "{refusal:?}"
    );
    let debug = of(audit[1]);
    let authorized = debug
        .iter()
        .find(|l| l["level"] == "debug" && l["message"] == "authorized")
        .unwrap_or_else(|| panic!("{debug:?}"));
    assert_eq!(
        authorized["invocation"]["actionId"],
        "01JQ3X5T0RYB9Q8K1W7ZC4M2NP"
    );
    assert_eq!(
        authorized["invocation"]["parentInvocationId"],
        "01JQ3X5T0RYB9Q8K1W7ZC4M2NQ"
    );
    assert_eq!(
        authorized["invocation"]["traceId"],
        audit[1]["invocation"]["traceId"]
    );
    // Without the toggle an invocation logs nothing at debug.
    assert!(refusal.iter().all(|l| l["level"] != "debug"), "{refusal:?}");
}
