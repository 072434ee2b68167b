//! OpenBao adapter: a tenant's KV v2 mount, transit key and ACL policy,
//! through the Vault-compatible HTTP API. Plain HTTP rather than a client
//! library, so every request is counted and every failure mapped exactly.

use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};

use super::{Backend, BackendError, CALL_TIMEOUT, Calls, Change, Verb};

const TOKEN_HEADER: &str = "X-Vault-Token";
const TRANSIT_KEY_TYPE: &str = "aes256-gcm96";
/// Error bodies are cut here: they end up in Events and conditions.
const BODY_LIMIT: usize = 300;
/// Status given to conflicts found by the adapter itself (not sent by OpenBao).
const CONFLICT: u16 = 409;

pub struct OpenBao {
    http: reqwest::Client,
    base: Url,
    token: String,
    calls: Calls,
}

// Written by hand so the token can never reach a log line.
impl std::fmt::Debug for OpenBao {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenBao")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl OpenBao {
    pub fn new(addr: &str, token: &str, calls: Calls) -> Result<Self, BackendError> {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(unreachable)?;
        // Building (not sending) a request validates the address and the token
        // header now, so a misconfiguration fails at startup, not per reconcile.
        let probe = http
            .get(addr)
            .header(TOKEN_HEADER, token)
            .build()
            .map_err(unreachable)?;
        Ok(Self {
            http,
            base: probe.url().clone(),
            token: token.to_string(),
            calls,
        })
    }

    /// KV version 2 secrets engine mounted at `path`. A mount of another
    /// type or KV v1 there is refused, never replaced: its data would be lost.
    pub async fn ensure_kv_mount(
        &self,
        path: &str,
        description: &str,
    ) -> Result<Change, BackendError> {
        let action = format!("mount KV v2 at {path}");
        let Some(entry) = self.mount(path, &action).await? else {
            let body = json!({
                "type": "kv",
                "description": description,
                "options": {"version": "2"},
            });
            self.write(
                Method::POST,
                &format!("sys/mounts/{path}"),
                Some(&body),
                &action,
            )
            .await?;
            return Ok(Change::Created);
        };
        if !is_kv_v2(&entry) {
            return Err(conflict(action, &entry));
        }
        if entry["description"].as_str().unwrap_or_default() == description {
            return Ok(Change::Unchanged);
        }
        let body = json!({"description": description});
        self.write(
            Method::POST,
            &format!("sys/mounts/{path}/tune"),
            Some(&body),
            &format!("describe mount {path}"),
        )
        .await?;
        Ok(Change::Updated)
    }

    /// Transit engine at `path` holding an aes256-gcm96 key `key`, deletable
    /// so that removing the tenant can remove it.
    pub async fn ensure_transit_key(&self, path: &str, key: &str) -> Result<Change, BackendError> {
        let action = format!("mount transit at {path}");
        let mut change = Change::Unchanged;
        match self.mount(path, &action).await? {
            None => {
                let body = json!({"type": "transit", "description": "transit keys"});
                self.write(
                    Method::POST,
                    &format!("sys/mounts/{path}"),
                    Some(&body),
                    &action,
                )
                .await?;
                change = Change::Created;
            }
            Some(entry) if entry["type"] != "transit" => return Err(conflict(action, &entry)),
            Some(_) => {}
        }

        let key_path = format!("{path}/keys/{key}");
        let action = format!("create transit key {key} at {path}");
        // A fresh mount has no keys: skip the read that would find nothing.
        let existing = match change {
            Change::Created => None,
            _ => self.read(&key_path, &action).await?,
        };
        let deletable = match existing {
            None => {
                let body = json!({"type": TRANSIT_KEY_TYPE});
                self.write(Method::POST, &key_path, Some(&body), &action)
                    .await?;
                change = Change::Created;
                false
            }
            Some(found) => {
                let data = &found["data"];
                if data["type"] != TRANSIT_KEY_TYPE {
                    return Err(BackendError::Refused {
                        backend: Backend::OpenBao,
                        action,
                        status: CONFLICT,
                        body: format!(
                            "key exists with type {}, not {TRANSIT_KEY_TYPE}",
                            data["type"]
                        ),
                    });
                }
                data["deletion_allowed"] == true
            }
        };
        if !deletable {
            let body = json!({"deletion_allowed": true});
            self.write(
                Method::POST,
                &format!("{key_path}/config"),
                Some(&body),
                &format!("allow deletion of transit key {key} at {path}"),
            )
            .await?;
            if change == Change::Unchanged {
                change = Change::Updated;
            }
        }
        Ok(change)
    }

    /// Mounts a KV v2 engine at `path` and a transit engine with key `key` at
    /// `transit`, without reading first, for a tenant never provisioned:
    /// `None` when a mount is in the way (then the `ensure_*` calls compare).
    pub async fn create_tenant_mounts(
        &self,
        kv: &str,
        description: &str,
        transit: &str,
        key: &str,
    ) -> Result<Option<Vec<Change>>, BackendError> {
        let kv_body =
            json!({"type": "kv", "description": description, "options": {"version": "2"}});
        let transit_body = json!({"type": "transit", "description": "transit keys"});
        // The two mounts do not depend on each other; the key on its mount.
        let (kv_mounted, transit_mounted) = tokio::join!(self.create_mount(kv, &kv_body), async {
            if !self.create_mount(transit, &transit_body).await? {
                return Ok(false);
            }
            let key_path = format!("{transit}/keys/{key}");
            self.write(
                Method::POST,
                &key_path,
                Some(&json!({"type": TRANSIT_KEY_TYPE})),
                &format!("create transit key {key} at {transit}"),
            )
            .await?;
            self.write(
                Method::POST,
                &format!("{key_path}/config"),
                Some(&json!({"deletion_allowed": true})),
                &format!("allow deletion of transit key {key} at {transit}"),
            )
            .await?;
            Ok(true)
        },);
        Ok((kv_mounted? && transit_mounted?).then(|| vec![Change::Created, Change::Created]))
    }

    /// Mounts an engine at `path`; false when something is mounted there.
    async fn create_mount(&self, path: &str, body: &Value) -> Result<bool, BackendError> {
        let action = format!("mount {} at {path}", body["type"]);
        let (status, text) = self
            .exchange(
                Verb::Write,
                Method::POST,
                &format!("sys/mounts/{path}"),
                Some(body),
            )
            .await?;
        if status == StatusCode::BAD_REQUEST && text.contains("already in use") {
            return Ok(false);
        }
        check(status, text, &action).map(|_| true)
    }

    /// Writes policy `name` without reading first (a tenant never provisioned).
    pub async fn create_policy(&self, name: &str, hcl: &str) -> Result<Change, BackendError> {
        self.write(
            Method::PUT,
            &format!("sys/policies/acl/{name}"),
            Some(&json!({"policy": hcl})),
            &format!("write policy {name}"),
        )
        .await?;
        Ok(Change::Created)
    }

    /// ACL policy `name` with exactly `hcl`; written only if the stored text differs.
    pub async fn ensure_policy(&self, name: &str, hcl: &str) -> Result<Change, BackendError> {
        let path = format!("sys/policies/acl/{name}");
        let action = format!("write policy {name}");
        let change = match self.read(&path, &action).await? {
            None => Change::Created,
            Some(found) if found["data"]["policy"].as_str() == Some(hcl) => {
                return Ok(Change::Unchanged);
            }
            Some(_) => Change::Updated,
        };
        let body = json!({"policy": hcl});
        self.write(Method::PUT, &path, Some(&body), &action).await?;
        Ok(change)
    }

    pub async fn delete_policy(&self, name: &str) -> Result<Change, BackendError> {
        let path = format!("sys/policies/acl/{name}");
        let action = format!("delete policy {name}");
        // OpenBao answers 204 for absent policies too; reading tells the two apart.
        if self.read(&path, &action).await?.is_none() {
            return Ok(Change::Absent);
        }
        self.write(Method::DELETE, &path, None, &action).await?;
        Ok(Change::Deleted)
    }

    /// Unmounts `path`, destroying everything stored under it.
    pub async fn delete_mount(&self, path: &str) -> Result<Change, BackendError> {
        let action = format!("unmount {path}");
        if self.mount(path, &action).await?.is_none() {
            return Ok(Change::Absent);
        }
        self.write(Method::DELETE, &format!("sys/mounts/{path}"), None, &action)
            .await?;
        Ok(Change::Deleted)
    }

    /// The mount at exactly `path`, if any: one mount's configuration, never
    /// the whole table (which grows with every tenant).
    async fn mount(&self, path: &str, action: &str) -> Result<Option<Value>, BackendError> {
        let path = path.trim_matches('/');
        let (status, body) = self
            .exchange(Verb::Read, Method::GET, &format!("sys/mounts/{path}"), None)
            .await?;
        // An absent mount is a 400 that says so.
        if status == StatusCode::BAD_REQUEST && body.contains("No secret engine mount at") {
            return Ok(None);
        }
        let found: Value = check(status, body, action).and_then(|body| {
            serde_json::from_str(&body).map_err(|e| unreadable(action, e.to_string()))
        })?;
        mount_entry(&found)
            .map(Some)
            .map_err(|detail| unreadable(action, detail))
    }

    /// GET of a JSON document; `None` when OpenBao answers 404.
    async fn read(&self, path: &str, action: &str) -> Result<Option<Value>, BackendError> {
        let (status, body) = self.exchange(Verb::Read, Method::GET, path, None).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        check(status, body, action).and_then(|body| {
            serde_json::from_str(&body)
                .map(Some)
                .map_err(|e| unreadable(action, e.to_string()))
        })
    }

    async fn write(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        action: &str,
    ) -> Result<(), BackendError> {
        let (status, text) = self.exchange(Verb::Write, method, path, body).await?;
        check(status, text, action).map(drop)
    }

    async fn exchange(
        &self,
        verb: Verb,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, String), BackendError> {
        self.calls.record(Backend::OpenBao, verb);
        let mut request = self
            .http
            .request(method, api_url(&self.base, path))
            .header(TOKEN_HEADER, &self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        Ok((status, text))
    }
}

/// The policy granting exactly a tenant's KV v2 secrets and encrypt/decrypt
/// with its transit key; mount configuration and key management stay with
/// the operator. Paths come from DNS-label tenant names, so need no quoting.
pub fn tenant_policy(kv_path: &str, transit_path: &str, key: &str) -> String {
    let kv = kv_path.trim_matches('/');
    let transit = transit_path.trim_matches('/');
    format!(
        r#"# Managed by ossature-operator; edits are overwritten.
path "{kv}/data/*" {{
  capabilities = ["create", "read", "update", "patch", "delete"]
}}
path "{kv}/metadata/*" {{
  capabilities = ["read", "list", "update", "patch", "delete"]
}}
path "{kv}/subkeys/*" {{
  capabilities = ["read"]
}}
path "{kv}/delete/*" {{
  capabilities = ["update"]
}}
path "{kv}/undelete/*" {{
  capabilities = ["update"]
}}
path "{kv}/destroy/*" {{
  capabilities = ["update"]
}}
path "{transit}/encrypt/{key}" {{
  capabilities = ["update"]
}}
path "{transit}/decrypt/{key}" {{
  capabilities = ["update"]
}}
"#
    )
}

/// Whether a mount listing entry is a KV version 2 engine.
fn is_kv_v2(entry: &Value) -> bool {
    entry["type"] == "kv" && entry["options"]["version"] == "2"
}

/// The mount's configuration from a `sys/mounts/<path>` answer.
fn mount_entry(answer: &Value) -> Result<Value, String> {
    let data = &answer["data"];
    if data["type"].is_string() {
        Ok(data.clone())
    } else {
        Err(format!("sys/mounts answer has no mount type: {answer}"))
    }
}

/// `{base}/v1/{path}`, each segment percent-encoded so a name cannot
/// reach another route.
fn api_url(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    // Always Ok: `new` accepted the base, so it has a host.
    if let Ok(mut segments) = url.path_segments_mut() {
        segments
            .pop_if_empty()
            .push("v1")
            .extend(path.split('/').filter(|s| !s.is_empty()));
    }
    url
}

fn check(status: StatusCode, body: String, action: &str) -> Result<String, BackendError> {
    if status.is_success() {
        return Ok(body);
    }
    Err(BackendError::Refused {
        backend: Backend::OpenBao,
        action: action.to_string(),
        status: status.as_u16(),
        body: truncate(body.trim()),
    })
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(BODY_LIMIT) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

fn conflict(action: String, entry: &Value) -> BackendError {
    let version = entry["options"]["version"].as_str().unwrap_or("1");
    let kind = match entry["type"].as_str() {
        Some("kv") => format!("kv version {version}"),
        Some(other) => other.to_string(),
        None => "unknown type".to_string(),
    };
    BackendError::Refused {
        backend: Backend::OpenBao,
        action,
        status: CONFLICT,
        body: format!("a mount of type {kind} is already there; it is left untouched"),
    }
}

fn unreachable(source: reqwest::Error) -> BackendError {
    BackendError::Unreachable {
        backend: Backend::OpenBao,
        source,
    }
}

fn unreadable(action: &str, detail: String) -> BackendError {
    BackendError::Unreadable {
        backend: Backend::OpenBao,
        action: action.to_string(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_v2_is_recognised_and_nothing_else() {
        assert!(is_kv_v2(
            &json!({"type": "kv", "options": {"version": "2"}})
        ));
        assert!(!is_kv_v2(
            &json!({"type": "kv", "options": {"version": "1"}})
        ));
        assert!(!is_kv_v2(&json!({"type": "kv", "options": null})));
        assert!(!is_kv_v2(&json!({"type": "kv"})));
        assert!(!is_kv_v2(&json!({"type": "generic", "options": null})));
        assert!(!is_kv_v2(
            &json!({"type": "transit", "options": {"version": "2"}})
        ));
    }

    #[test]
    fn a_mount_is_read_from_its_own_answer() {
        let answer = json!({"type": "kv", "data": {"type": "kv", "options": {"version": "2"}}});
        assert!(is_kv_v2(&mount_entry(&answer).unwrap()));
        assert!(mount_entry(&json!({"errors": []})).is_err());
    }

    #[test]
    fn conflicts_name_the_existing_mount() {
        let v1 = conflict("a".into(), &json!({"type": "kv", "options": null}));
        assert!(v1.to_string().contains("kv version 1"), "{v1}");
        assert_eq!(v1.category(), "BackendRefused");
        let other = conflict("a".into(), &json!({"type": "transit"}));
        assert!(other.to_string().contains("type transit"), "{other}");
    }

    #[test]
    fn tenant_policy_grants_only_the_tenant_paths() {
        let hcl = tenant_policy("tenants/acme/kv", "/tenants/acme/transit/", "acme");
        let paths: Vec<&str> = hcl
            .lines()
            .filter_map(|l| l.strip_prefix("path \"")?.split('"').next())
            .collect();
        assert_eq!(
            paths,
            [
                "tenants/acme/kv/data/*",
                "tenants/acme/kv/metadata/*",
                "tenants/acme/kv/subkeys/*",
                "tenants/acme/kv/delete/*",
                "tenants/acme/kv/undelete/*",
                "tenants/acme/kv/destroy/*",
                "tenants/acme/transit/encrypt/acme",
                "tenants/acme/transit/decrypt/acme",
            ]
        );
        assert!(!hcl.contains("sudo"));
        assert_eq!(hcl.matches("capabilities").count(), paths.len());
        // Pure: the same inputs give byte-identical text, so ensure_policy stays idempotent.
        assert_eq!(
            hcl,
            tenant_policy("tenants/acme/kv", "tenants/acme/transit", "acme")
        );
    }

    #[test]
    fn urls_encode_each_segment() {
        let base = Url::parse("http://127.0.0.1:8200/").unwrap();
        assert_eq!(
            api_url(&base, "sys/mounts/tenants/acme/kv").as_str(),
            "http://127.0.0.1:8200/v1/sys/mounts/tenants/acme/kv"
        );
        assert_eq!(
            api_url(&base, "sys/policies/acl/a b?c").as_str(),
            "http://127.0.0.1:8200/v1/sys/policies/acl/a%20b%3Fc"
        );
        assert_eq!(
            api_url(&base, "tenants/../sys/mounts").as_str(),
            "http://127.0.0.1:8200/v1/tenants/sys/mounts"
        );
        let prefixed = Url::parse("https://bao.example/proxy").unwrap();
        assert_eq!(
            api_url(&prefixed, "sys/mounts").as_str(),
            "https://bao.example/proxy/v1/sys/mounts"
        );
    }

    #[test]
    fn refusals_keep_bodies_short() {
        let long = "é".repeat(BODY_LIMIT + 50);
        let Err(BackendError::Refused { status, body, .. }) =
            check(StatusCode::FORBIDDEN, long, "read")
        else {
            panic!("a 403 is a refusal");
        };
        assert_eq!(status, 403);
        assert_eq!(body.chars().count(), BODY_LIMIT + 3);
        assert_eq!(
            check(StatusCode::NO_CONTENT, "ok".into(), "x").unwrap(),
            "ok"
        );
    }
}
