//! The listener: HTTPS with HTTP/2 by ALPN (and HTTP/1.1), CORS for the
//! configured origin only, and the per-caller rate limit.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_http2_cors_for_its_origin_and_a_rate_per_caller() {
    let env = stack().await;
    let client = kube_client(&env).await;
    let ops = OperatorsRealm::create(&env, "platform-operators").await;
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(ossature_e2e::unique("cp-tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert_file, key.cert.pem()).unwrap();
    std::fs::write(&key_file, key.signing_key.serialize_pem()).unwrap();
    let cp = ControlPlane::start_with(
        &env,
        &client,
        &ops.realm,
        &[
            "--tls-cert",
            cert_file.to_str().unwrap(),
            "--tls-key",
            key_file.to_str().unwrap(),
            "--cors-origin",
            "https://console.example",
            "--rate-limit-per-second",
            "1",
            "--rate-limit-burst",
            "3",
        ],
        "https",
    )
    .await;
    let https = ossature_e2e::https_client_trusting(key.cert.pem().as_bytes())
        .unwrap()
        .build()
        .unwrap();

    // HTTP/2 when the client offers it, HTTP/1.1 otherwise.
    let response = https
        .get(format!("{}/healthz", cp.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let http1 = ossature_e2e::https_client_trusting(key.cert.pem().as_bytes())
        .unwrap()
        .http1_only()
        .build()
        .unwrap();
    let response = http1
        .get(format!("{}/openapi.json", cp.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.status(), 200);

    // A browser on the allowed origin may call; another may not.
    let preflight = |origin: &'static str| {
        https
            .request(
                Method::OPTIONS,
                format!("{}/v1/commands/onboardTenant", cp.base),
            )
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization,idempotency-key,content-type",
            )
            .send()
    };
    let allowed = preflight("https://console.example").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://console.example"
    );
    let methods = allowed.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(methods.contains("POST"), "{methods}");
    let other = preflight("https://elsewhere.example").await.unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));

    // Three at once, then one a second: the fifth at once is refused.
    let token = ops.token().await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let response = https
            .post(format!("{}/v1/queries/listTenants", cp.base))
            .bearer_auth(&token)
            .json(&json!({"limit": 1}))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            assert!(response.headers().contains_key("retry-after"));
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["type"], "https://ossature.dev/problems/rate-limited");
        }
    }
    assert_eq!(&statuses[..3], [200, 200, 200], "{statuses:?}");
    assert_eq!(statuses[4], 429, "{statuses:?}");

    cp.running.stop();
    let _ = std::fs::remove_dir_all(dir);
}
