//! The operator's log lines (`--log-format json`) are records of the schema
//! the control plane's audit records follow, and the lines of a reconcile
//! carry the control plane invocation recorded on the object.

mod common;

use std::time::Duration;

use common::*;
use kube::Api;
use kube::api::PostParams;
use ossature_crds::Tenant;
use serde_json::Value;

const ACTION: &str = "01JQ3X5T0RYB9Q8K1W7ZC4M2NP";
const INVOCATION: &str = "01JQ3X5T0RYB9Q8K1W7ZC4M2NQ";
const PARENT: &str = "01JQ3X5T0RYB9Q8K1W7ZC4M2NR";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test]
async fn log_lines_are_records_carrying_the_invocation_that_wrote_the_object() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    let sel = format!("log{}", suffix());
    let operator = start_operator_with(&env, &sel, &["--log-format", "json"]);
    let tenants: Api<Tenant> = Api::all(client.clone());

    // Written as the control plane writes it: its invocation in annotations.
    let name = format!("lg{}", suffix());
    let mut tenant = labelled(tenant(&name), &sel);
    let annotation = ossature_records::annotation;
    tenant.metadata.annotations = Some(
        [
            (annotation("action-id"), ACTION),
            (annotation("invocation-id"), INVOCATION),
            (annotation("parent-invocation-id"), PARENT),
            (annotation("trace-id"), TRACE),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect(),
    );
    tenants
        .create(&PostParams::default(), &tenant)
        .await
        .unwrap();
    wait_tenant_ready(&tenants, &name, Duration::from_secs(120)).await;

    // Its Events are log lines too: wait for the tenant's to be written.
    let lines = wait_for("the tenant's lines", Duration::from_secs(30), || {
        let path = operator.log.clone();
        let name = name.clone();
        async move {
            let lines: Vec<Value> = std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
                .collect();
            lines
                .iter()
                .any(|l| l["fields"]["name"] == name.as_str() && l["fields"]["kind"] == "Tenant")
                .then_some(lines)
        }
    })
    .await;

    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../control-plane/schemas/record.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for line in &lines {
        let errors: Vec<String> = validator.iter_errors(line).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{line} does not validate: {errors:?}");
        assert_eq!(line["record"], "log", "{line}");
    }

    // The tenant's reconcile lines name the invocation; the start does not.
    let of_tenant: Vec<&Value> = lines
        .iter()
        .filter(|l| l["fields"]["name"] == name.as_str() && l["fields"]["kind"] == "Tenant")
        .collect();
    assert!(
        of_tenant
            .iter()
            .any(|l| l["fields"]["reason"] == "Provisioned"),
        "{of_tenant:?}"
    );
    for line in &of_tenant {
        let invocation = &line["invocation"];
        assert_eq!(invocation["invocationId"], INVOCATION, "{line}");
        assert_eq!(invocation["actionId"], ACTION, "{line}");
        assert_eq!(invocation["parentInvocationId"], PARENT, "{line}");
        assert_eq!(invocation["traceId"], TRACE, "{line}");
    }
    assert!(lines[0]["invocation"].is_null(), "{}", lines[0]);

    delete_tenants(&tenants, &[&name]).await;
}
