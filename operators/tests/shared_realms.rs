//! The shared realms are managed by exactly one operator instance, the
//! holder of a Lease: of two instances one holds it, and when it stops the
//! other takes over. (Its own test binary: no other operator contends.)

mod common;

use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("ossature-shared-realms")
        .await
        .ok()??
        .spec?
        .holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_holds_the_shared_realms_and_another_takes_over() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let client = kube_client(&env).await;
    install_crds(&client).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let first = start_operator(&env, &suffix());
    let first_id = format!("-{}", first.pid());
    wait_for(
        "the first instance holds the lease",
        Duration::from_secs(60),
        || {
            let leases = leases.clone();
            let first_id = first_id.clone();
            async move {
                holder(&leases)
                    .await
                    .filter(|h| h.ends_with(&first_id))
                    .map(drop)
            }
        },
    )
    .await;
    // It provisions every shared realm.
    for shared in [
        "ossature-business-eu",
        "ossature-consumer-eu",
        "ossature-business-us",
        "ossature-consumer-us",
    ] {
        wait_for(
            &format!("shared realm {shared}"),
            Duration::from_secs(60),
            || {
                let env = &env;
                async move { (realm(env, shared).await.0 == 200).then_some(()) }
            },
        )
        .await;
    }

    // A second instance does not take it while the first renews it.
    let second = start_operator(&env, &suffix());
    let second_id = format!("-{}", second.pid());
    let watching = Instant::now();
    while watching.elapsed() < Duration::from_secs(25) {
        let held = holder(&leases).await.unwrap_or_default();
        assert!(
            held.ends_with(&first_id),
            "held by {held} while the first runs"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // The first stops: it hands the lease over, the second takes it.
    drop(first);
    wait_for(
        "the second instance holds the lease",
        Duration::from_secs(30),
        || {
            let leases = leases.clone();
            let second_id = second_id.clone();
            async move {
                holder(&leases)
                    .await
                    .filter(|h| h.ends_with(&second_id))
                    .map(drop)
            }
        },
    )
    .await;
    drop(second);
}
