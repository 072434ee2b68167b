//! OpenBao's Kubernetes auth is part of OpenBao's readiness: a stack where
//! it went missing is reported as such, and `up` puts it back.

use ossature_bootstrap::Layout;
use ossature_bootstrap::components::Component;
use ossature_bootstrap::kubernetes_auth::AUTH_PATH;
use ossature_bootstrap::stack::{self, State};

#[tokio::test]
async fn a_missing_kubernetes_auth_method_is_reported_and_restored() {
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    assert_eq!(env["OSSATURE_OPENBAO_KUBERNETES_AUTH_PATH"], AUTH_PATH);
    let http = reqwest::Client::new();
    let mount = format!("{}/v1/sys/auth/{AUTH_PATH}", env["OSSATURE_OPENBAO_ADDR"]);
    let root = &env["OSSATURE_OPENBAO_ROOT_TOKEN"];
    let mounted = || async {
        let response = http.get(&mount).header("X-Vault-Token", root).send();
        response.await.unwrap().status().is_success()
    };
    assert!(mounted().await);

    let removed = http.delete(&mount).header("X-Vault-Token", root).send();
    assert!(removed.await.unwrap().status().is_success());
    let layout = Layout::from_env().unwrap();
    let openbao = |rows: Vec<stack::Row>| {
        let row = rows.into_iter().find(|r| r.component == Component::Openbao);
        row.expect("OpenBao has a row").state
    };
    let state = openbao(stack::status(&layout).await);
    let State::NotReady(why) = state else {
        panic!("OpenBao without its Kubernetes auth is not ready, not {state:?}");
    };
    assert!(why.contains("Kubernetes auth"), "{why}");

    ossature_bootstrap::ensure_up().await.unwrap();
    assert!(mounted().await);
    assert_eq!(openbao(stack::status(&layout).await), State::Ready);
}
