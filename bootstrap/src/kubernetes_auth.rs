//! OpenBao's Kubernetes auth method, so that a workload's ServiceAccount
//! token logs in to OpenBao. OpenBao checks every token it is shown with a
//! TokenReview, made with the long-lived token of a reviewer ServiceAccount
//! bound to `system:auth-delegator`; the controller-manager's token
//! controller fills that token into a Secret.

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, Patch, PatchParams};
use reqwest::Method;
use serde_json::{Value, json};

use crate::components::{APISERVER_PORT, https_url};
use crate::files::write_private;
use crate::health::{Probes, openbao_keys};
use crate::layout::Layout;

/// Where the auth method is mounted (`auth/kubernetes/...`).
pub const AUTH_PATH: &str = "kubernetes";
/// The platform's own namespace.
pub const SYSTEM_NAMESPACE: &str = "ossature-system";
/// The reviewer ServiceAccount, and the Secret holding its token.
pub const REVIEWER: &str = "openbao-token-reviewer";
const REVIEWER_BINDING: &str = "ossature:openbao-token-reviewer";
const AUTH_DELEGATOR: &str = "system:auth-delegator";
const FIELD_MANAGER: &str = "ossature-dev";
/// A digest of the reviewer token last written to OpenBao, which never
/// returns it: tells a token replaced in Kubernetes without keeping a copy.
const REVIEWER_DIGEST_FILE: &str = "openbao-token-reviewer.sha256";

/// The objects in Kubernetes, in the order they must exist.
fn reviewer_objects() -> [Value; 4] {
    let labels = json!({"app.kubernetes.io/managed-by": FIELD_MANAGER});
    [
        json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": SYSTEM_NAMESPACE, "labels": labels},
        }),
        json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": REVIEWER, "namespace": SYSTEM_NAMESPACE, "labels": labels},
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": REVIEWER_BINDING, "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": AUTH_DELEGATOR,
            },
            "subjects": [{"kind": "ServiceAccount", "name": REVIEWER, "namespace": SYSTEM_NAMESPACE}],
        }),
        // A token that does not expire, for as long as this Secret exists.
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "type": "kubernetes.io/service-account-token",
            "metadata": {
                "name": REVIEWER,
                "namespace": SYSTEM_NAMESPACE,
                "labels": labels,
                "annotations": {"kubernetes.io/service-account.name": REVIEWER},
            },
        }),
    ]
}

/// What `auth/kubernetes/config` should hold, without the reviewer token.
fn wanted_config(layout: &Layout) -> Result<Value> {
    let ca = layout.pki().ca_cert();
    let ca = std::fs::read_to_string(&ca).with_context(|| format!("reading {}", ca.display()))?;
    Ok(json!({
        "kubernetes_host": https_url(APISERVER_PORT),
        "kubernetes_ca_cert": ca,
        // OpenBao runs outside any pod: never look for a mounted token.
        "disable_local_ca_jwt": true,
    }))
}

fn digest(jwt: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, jwt.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why a stored configuration is not `wanted` with reviewer token `jwt`, if it is not.
fn config_differs(
    stored: &Value,
    wanted: &Value,
    jwt: &str,
    written: Option<&str>,
) -> Option<String> {
    for field in [
        "kubernetes_host",
        "kubernetes_ca_cert",
        "disable_local_ca_jwt",
    ] {
        if stored[field] != wanted[field] {
            return Some(format!("its {field} is not the stack's"));
        }
    }
    if written.map(str::trim) != Some(digest(jwt).as_str()) {
        return Some("its reviewer token is not the current one".into());
    }
    None
}

impl Probes {
    /// `Ok` once the auth method is mounted and configured with the stack's
    /// apiserver, CA and the reviewer's current token.
    pub(crate) async fn kubernetes_auth_ready(&self) -> Result<(), String> {
        match self.kubernetes_auth_problem().await {
            Ok(None) => Ok(()),
            Ok(Some(why)) => Err(format!("Kubernetes auth: {why}")),
            Err(e) => Err(format!("Kubernetes auth: {e:#}")),
        }
    }

    async fn kubernetes_auth_problem(&self) -> Result<Option<String>> {
        let client = self.kube().await?;
        let binding: Api<ClusterRoleBinding> = Api::all(client.clone());
        let bound = binding.get_opt(REVIEWER_BINDING).await?.is_some_and(|b| {
            b.role_ref.name == AUTH_DELEGATOR
                && b.subjects
                    .unwrap_or_default()
                    .iter()
                    .any(|s| s.name == REVIEWER && s.namespace.as_deref() == Some(SYSTEM_NAMESPACE))
        });
        if !bound {
            return Ok(Some(format!("{REVIEWER} is not bound to {AUTH_DELEGATOR}")));
        }
        let Some(jwt) = reviewer_token(&client).await? else {
            return Ok(Some(format!("{REVIEWER} has no token yet")));
        };
        let root = openbao_keys(self.layout())?.root_token;
        match self.auth_method(&root).await?.as_deref() {
            Some("kubernetes") => {}
            Some(other) => return Ok(Some(not_kubernetes(other))),
            None => return Ok(Some(format!("nothing is mounted at auth/{AUTH_PATH}"))),
        }
        let (status, stored) = self
            .openbao_call(
                &root,
                Method::GET,
                &format!("auth/{AUTH_PATH}/config"),
                None,
            )
            .await?;
        if status == 404 {
            return Ok(Some("not configured".into()));
        }
        if status != 200 {
            bail!("reading its configuration answered {status}: {stored}");
        }
        let written = std::fs::read_to_string(self.layout().secret(REVIEWER_DIGEST_FILE)).ok();
        Ok(config_differs(
            &stored["data"],
            &wanted_config(self.layout())?,
            &jwt,
            written.as_deref(),
        ))
    }

    /// The type of the auth method mounted at `AUTH_PATH`, if any.
    async fn auth_method(&self, root: &str) -> Result<Option<String>> {
        let (status, mount) = self
            .openbao_call(root, Method::GET, &format!("sys/auth/{AUTH_PATH}"), None)
            .await?;
        // An absent method is a 400 that says so.
        Ok(match status {
            200 => Some(mount["data"]["type"].as_str().unwrap_or_default().into()),
            _ => None,
        })
    }

    /// The reviewer's objects in Kubernetes, the auth method and its
    /// configuration, each written only where it is missing or differs.
    /// Needs the apiserver and the controller-manager: until they serve this
    /// fails, and `up` asks again.
    pub(crate) async fn ensure_kubernetes_auth(&self) -> Result<()> {
        if let Ok(None) = self.kubernetes_auth_problem().await {
            return Ok(());
        }
        let client = self.kube().await?;
        let [namespace, account, binding, secret] = reviewer_objects();
        apply(Api::<Namespace>::all(client.clone()), namespace).await?;
        apply(
            Api::<ServiceAccount>::namespaced(client.clone(), SYSTEM_NAMESPACE),
            account,
        )
        .await?;
        apply(Api::<ClusterRoleBinding>::all(client.clone()), binding).await?;
        apply(
            Api::<Secret>::namespaced(client.clone(), SYSTEM_NAMESPACE),
            secret,
        )
        .await?;
        let Some(jwt) = reviewer_token(&client).await? else {
            bail!("waiting for the token controller to fill Secret {SYSTEM_NAMESPACE}/{REVIEWER}");
        };

        let root = openbao_keys(self.layout())?.root_token;
        match self.auth_method(&root).await?.as_deref() {
            Some("kubernetes") => {}
            None => {
                let body = json!({"type": "kubernetes", "description": "ServiceAccount tokens"});
                let (status, answer) = self
                    .openbao_call(
                        &root,
                        Method::POST,
                        &format!("sys/auth/{AUTH_PATH}"),
                        Some(body),
                    )
                    .await?;
                if !(200..300).contains(&status) {
                    bail!("enabling auth/{AUTH_PATH} answered {status}: {answer}");
                }
            }
            // Another method there is left alone: replacing it would lose its roles.
            Some(other) => bail!("{}; move it or `ossature-dev reset`", not_kubernetes(other)),
        }

        let path = format!("auth/{AUTH_PATH}/config");
        let (_, stored) = self.openbao_call(&root, Method::GET, &path, None).await?;
        let digest_file = self.layout().secret(REVIEWER_DIGEST_FILE);
        let written = std::fs::read_to_string(&digest_file).ok();
        let mut wanted = wanted_config(self.layout())?;
        if config_differs(&stored["data"], &wanted, &jwt, written.as_deref()).is_none() {
            return Ok(());
        }
        wanted["token_reviewer_jwt"] = jwt.clone().into();
        let (status, answer) = self
            .openbao_call(&root, Method::POST, &path, Some(wanted))
            .await?;
        if !(200..300).contains(&status) {
            bail!("configuring auth/{AUTH_PATH} answered {status}: {answer}");
        }
        write_private(&digest_file, digest(&jwt).as_bytes())
    }
}

fn not_kubernetes(kind: &str) -> String {
    format!("auth/{AUTH_PATH} is a method of type {kind:?}, not kubernetes")
}

/// Server-side apply of `object` under the stack's field manager.
async fn apply<K>(api: Api<K>, object: Value) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(name, &params, &Patch::Apply(&object))
        .await
        .with_context(|| format!("applying {} {name}", object["kind"]))?;
    Ok(())
}

/// The reviewer's token, once the token controller has filled it in.
async fn reviewer_token(client: &kube::Client) -> Result<Option<String>> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let token = secrets
        .get_opt(REVIEWER)
        .await?
        .and_then(|s| s.data?.remove("token"))
        .map(|t| String::from_utf8(t.0))
        .transpose()
        .context("the reviewer's token is not text")?;
    Ok(token.filter(|t| !t.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_differs_by_any_field_or_by_the_token() {
        let wanted = json!({
            "kubernetes_host": "https://127.0.0.1:6443",
            "kubernetes_ca_cert": "PEM",
            "disable_local_ca_jwt": true,
        });
        let mut stored = wanted.clone();
        stored["token_reviewer_jwt_set"] = true.into();
        let written = digest("jwt");
        assert_eq!(
            config_differs(&stored, &wanted, "jwt", Some(&written)),
            None
        );
        assert!(config_differs(&stored, &wanted, "other", Some(&written)).is_some());
        assert!(config_differs(&stored, &wanted, "jwt", None).is_some());
        stored["kubernetes_ca_cert"] = "OTHER".into();
        let why = config_differs(&stored, &wanted, "jwt", Some(&written)).unwrap();
        assert!(why.contains("kubernetes_ca_cert"), "{why}");
    }

    #[test]
    fn the_reviewer_is_bound_to_token_review_only() {
        let [namespace, account, binding, secret] = reviewer_objects();
        assert_eq!(namespace["metadata"]["name"], SYSTEM_NAMESPACE);
        assert_eq!(account["metadata"]["name"], REVIEWER);
        assert_eq!(binding["roleRef"]["name"], AUTH_DELEGATOR);
        assert_eq!(binding["subjects"][0]["namespace"], SYSTEM_NAMESPACE);
        assert_eq!(
            secret["metadata"]["annotations"]["kubernetes.io/service-account.name"],
            REVIEWER
        );
    }
}
