//! OpenBao's Kubernetes auth on the real stack: a ServiceAccount logs in with
//! its own token (TokenRequest) through the role bound to it, reads its
//! service's secret and is refused another service's. Everything the test
//! makes is removed, even when it fails.

mod common;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use ossature_operator::adapters::openbao::OpenBao;
use ossature_operator::adapters::{BackendError, Calls, Change};
use serde_json::{Value, json};

struct Stack {
    http: reqwest::Client,
    addr: String,
    auth_path: String,
}

impl Stack {
    /// One OpenBao call; the status and the JSON answer.
    async fn call(&self, token: Option<&str>, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}/v1/{path}", self.addr);
        let mut request = match body {
            Some(body) => self.http.post(url).json(&body),
            None => self.http.get(url),
        };
        if let Some(token) = token {
            request = request.header("X-Vault-Token", token);
        }
        let response = request.send().await.expect("OpenBao answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Logs in as `role` with a ServiceAccount token: the client token, or the refusal's status.
    async fn login(&self, role: &str, jwt: &str) -> Result<String, u16> {
        let body = json!({"role": role, "jwt": jwt});
        let path = format!("auth/{}/login", self.auth_path);
        match self.call(None, &path, Some(body)).await {
            (200, answer) => Ok(answer["auth"]["client_token"]
                .as_str()
                .expect("a login answers with a token")
                .to_string()),
            (status, _) => Err(status),
        }
    }
}

fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}-{nanos:x}", std::process::id())
}

#[tokio::test]
async fn a_service_account_reads_its_own_secret_only() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env = ossature_bootstrap::ensure_up().await.unwrap();
    let stack = Stack {
        http: reqwest::Client::new(),
        addr: env["OSSATURE_OPENBAO_ADDR"].clone(),
        auth_path: env["OSSATURE_OPENBAO_KUBERNETES_AUTH_PATH"].clone(),
    };
    let root = env["OSSATURE_OPENBAO_ROOT_TOKEN"].clone();
    let admin = OpenBao::new(&stack.addr, &root, Calls::default()).unwrap();
    let operator = OpenBao::new(
        &stack.addr,
        &env["OSSATURE_OPENBAO_TOKEN"],
        Calls::default(),
    )
    .unwrap()
    .with_kubernetes_auth_path(&stack.auth_path);
    let client = common::kube_client(&env).await;

    let id = format!("kauth-{}", unique_suffix());
    let namespace = id.clone();
    let mount = format!("tenants/{id}/kv");
    let services = ["a", "b"];
    let role = |s: &str| format!("tenant-{id}-{s}");
    let account = |s: &str| format!("svc-{s}");
    let untenanted = format!("{id}-c");

    let body = async {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns = serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
        admin
            .ensure_kv_mount(&mount, "kubernetes auth test")
            .await
            .unwrap();
        let mut tokens = BTreeMap::new();
        for s in services {
            let sa = serde_json::from_value(json!({"metadata": {"name": account(s)}})).unwrap();
            accounts.create(&PostParams::default(), &sa).await.unwrap();
            let data = BTreeMap::from([("value".to_string(), format!("secret of {s}"))]);
            admin.put_secret(&mount, s, &data).await.unwrap();
            // Each service's policy reads its own path and nothing else.
            let hcl = format!("path \"{mount}/data/{s}\" {{\n  capabilities = [\"read\"]\n}}\n");
            admin.ensure_policy(&role(s), &hcl).await.unwrap();
            let change = operator
                .ensure_kubernetes_role(
                    &role(s),
                    &account(s),
                    &namespace,
                    &[role(s)],
                    Duration::from_secs(600),
                )
                .await
                .unwrap();
            assert_eq!(change, Change::Created);
            tokens.insert(s, common::account_token(&accounts, &account(s)).await);
        }

        for (own, other) in [("a", "b"), ("b", "a")] {
            let token = stack.login(&role(own), &tokens[own]).await.unwrap();
            let (status, read) = stack
                .call(Some(&token), &format!("{mount}/data/{own}"), None)
                .await;
            assert_eq!(status, 200, "{own} reads its own secret: {read}");
            assert_eq!(read["data"]["data"]["value"], format!("secret of {own}"));
            let (status, _) = stack
                .call(Some(&token), &format!("{mount}/data/{other}"), None)
                .await;
            assert_eq!(status, 403, "{own} is refused the secret of {other}");
        }
        // A role admits only the ServiceAccount it is bound to.
        assert_eq!(stack.login(&role("a"), &tokens["b"]).await, Err(403));

        // The operator's token writes tenants' roles only.
        let refused = operator
            .ensure_kubernetes_role(
                &untenanted,
                &account("a"),
                &namespace,
                &[role("a")],
                Duration::from_secs(600),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(refused, BackendError::Refused { status: 403, .. }),
            "{refused}"
        );
        for s in services {
            assert_eq!(
                operator.delete_kubernetes_role(&role(s)).await.unwrap(),
                Change::Deleted
            );
        }
        assert_eq!(stack.login(&role("a"), &tokens["a"]).await, Err(400));
    };
    let outcome = AssertUnwindSafe(body).catch_unwind().await;

    let root_bao = admin.with_kubernetes_auth_path(&stack.auth_path);
    for name in [role("a"), role("b"), untenanted.clone()] {
        let _ = root_bao.delete_kubernetes_role(&name).await;
        let _ = root_bao.delete_policy(&name).await;
    }
    let _ = root_bao.delete_mount(&mount).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces
        .delete(&namespace, &DeleteParams::default())
        .await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
