//! Two operator instances of one shard: one leads, the other keeps warm
//! caches. Killed (SIGKILL) in the middle of a 50-tenant onboarding, the
//! leader is replaced within the lease's duration; the new one finishes it
//! with no duplicate in any backend, and the old leader's last backend
//! write comes before the new leader's first. Stopped (SIGTERM) in the
//! middle of work, an instance ends within 5 seconds and hands its Lease
//! over.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use ossature_crds::Tenant;
use serde_json::Value;

/// The instance's JSON log lines so far.
fn lines(operator: &Operator) -> Vec<Value> {
    std::fs::read_to_string(&operator.log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn time(line: &Value) -> Timestamp {
    line["time"].as_str().unwrap().parse().unwrap()
}

/// When the instance last said it leads.
fn led_at(operator: &Operator) -> Option<Timestamp> {
    lines(operator)
        .iter()
        .filter(|l| l["message"] == "leading" && l["fields"]["leads"] == true)
        .map(time)
        .next_back()
}

/// Times of the instance's backend writes, in order.
fn writes(operator: &Operator) -> Vec<Timestamp> {
    lines(operator)
        .iter()
        .filter(|l| l["target"] == "ossature_operator::calls" && l["fields"]["write"] == true)
        .map(time)
        .collect()
}

fn start(env: &BTreeMap<String, String>, sel: &str) -> Operator {
    let mut env = env.clone();
    env.insert(
        "RUST_LOG".into(),
        "info,vaultrs=off,rustify=off,ossature_operator::calls=debug".into(),
    );
    start_operator_with(&env, sel, &["--log-format", "json"])
}

async fn wait_leading(operator: &Operator, within: Duration) -> Timestamp {
    wait_for("an instance leading", within, || async { led_at(operator) }).await
}

async fn lease_holder(client: &Client, sel: &str) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let name = ossature_operator::leader::lease_name(Some(&format!("{TEST_LABEL}={sel}")));
    leases
        .get(&name)
        .await
        .ok()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

/// Tenants `<prefix>-0` to `<prefix>-<n - 1>`, for the instances of `sel`.
async fn create_tenants(tenants: &Api<Tenant>, sel: &str, prefix: &str, n: usize) -> Vec<String> {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    for name in &names {
        tenants
            .create(&PostParams::default(), &labelled(bare_tenant(name), sel))
            .await
            .unwrap();
    }
    names
}

#[tokio::test]
async fn the_follower_finishes_what_a_killed_leader_began() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    let sel = format!("le{}", suffix());
    let mut first = start(&env, &sel);
    wait_leading(&first, Duration::from_secs(30)).await;
    let second = start(&env, &sel);
    // The second keeps its caches warm; it does not lead while the first does.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(led_at(&second).is_none(), "two leaders of one shard");

    let tenants: Api<Tenant> = Api::all(client.clone());
    let prefix = format!("le{}", suffix());
    let names = create_tenants(&tenants, &sel, &prefix, 50).await;
    // Killed in the middle: some tenants Ready, not all.
    wait_for("a few tenants Ready", Duration::from_secs(120), || async {
        let ready = tenants
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|t| t.metadata.name.as_ref().unwrap().starts_with(&prefix) && ready(t))
            .count();
        (ready >= 3).then_some(())
    })
    .await;
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &first.pid().to_string()])
        .status();
    let killed = Timestamp::now();
    first.wait_exit(Duration::from_secs(10)).expect("killed");

    let took_over = wait_leading(&second, Duration::from_secs(40)).await;
    let takeover = took_over.duration_since(killed);
    eprintln!("TAKEOVER {takeover:#}");
    assert!(
        takeover.as_secs_f64() <= ossature_operator::leader::LEASE_SECONDS as f64 + 3.0,
        "the follower took {takeover:#} to take over"
    );
    for name in &names {
        wait_tenant_ready(&tenants, name, Duration::from_secs(240)).await;
    }

    // One of each in every backend.
    for name in &names {
        let org = organization(&env, "ossature-consumer-us", name).await;
        assert!(org.is_some(), "no organization for {name}");
        assert_eq!(pulsar_tenant(&env, name).await.0, 200, "{name}");
    }
    let token = keycloak_token(&env).await;
    let (_, orgs) = get(
        format!(
            "{}/admin/realms/ossature-consumer-us/organizations?search={prefix}&max=500",
            env["OSSATURE_KEYCLOAK_URL"]
        ),
        Some(("Authorization", &format!("Bearer {token}"))),
    )
    .await;
    let aliases: Vec<&str> = orgs
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["alias"].as_str().unwrap())
        .collect();
    assert_eq!(aliases.len(), names.len(), "{aliases:?}");

    // The old leader's writes all came before the new one's.
    let old_last = *writes(&first).last().expect("the first leader wrote");
    let new_first = *writes(&second).first().expect("the new leader wrote");
    assert!(
        old_last < new_first,
        "the new leader wrote at {new_first} before the old one's last write at {old_last}"
    );

    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    delete_tenants(&tenants, &names).await;
}

#[tokio::test]
async fn a_stopped_instance_ends_within_seconds_and_hands_its_lease_over() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    let sel = format!("ls{}", suffix());
    let mut operator = start(&env, &sel);
    wait_leading(&operator, Duration::from_secs(30)).await;
    assert!(lease_holder(&client, &sel).await.is_some());

    // Busy with ten tenants when it is stopped.
    let tenants: Api<Tenant> = Api::all(client.clone());
    let names = create_tenants(&tenants, &sel, &format!("ls{}", suffix()), 10).await;
    wait_for("the instance at work", Duration::from_secs(30), || async {
        (!writes(&operator).is_empty()).then_some(())
    })
    .await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &operator.pid().to_string()])
        .status();
    let stopping = Instant::now();
    let exit = operator.wait_exit(Duration::from_secs(30));
    let took = stopping.elapsed();
    eprintln!("SIGTERM STOP {took:?}");
    assert!(exit.is_some(), "still running 30 s after SIGTERM");
    assert!(took <= Duration::from_secs(5), "SIGTERM took {took:?}");
    assert_eq!(
        lease_holder(&client, &sel).await,
        None,
        "the Lease was kept"
    );

    // Another instance finishes the work at once (no lease to wait out).
    let started = Timestamp::now();
    let next = start(&env, &sel);
    let led = wait_leading(&next, Duration::from_secs(10)).await;
    eprintln!(
        "NEXT LEADS {:#} after its start",
        led.duration_since(started)
    );
    for name in &names {
        wait_tenant_ready(&tenants, name, Duration::from_secs(120)).await;
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    delete_tenants(&tenants, &names).await;
}
