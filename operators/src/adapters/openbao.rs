//! OpenBao adapter: a tenant's KV v2 mount and secrets, transit key, ACL
//! policy, PKI (its own CA) and the Kubernetes auth roles of its services,
//! through `vaultrs`, the design's Vault client.
//! Every call is counted as a read or a write and every failure is mapped
//! into `BackendError` (absent, refused, unreachable, unreadable).
//!
//! Where vaultrs lacks a route or a field, the call is still made through
//! vaultrs's client, token middleware and error parsing, as a [`Raw`]
//! endpoint; each such place says what vaultrs lacks.

pub mod pki;
pub mod tokens;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use rustify::endpoint::Endpoint;
use rustify::enums::{RequestMethod, RequestType, ResponseType};
use rustify::errors::ClientError as RestError;
use serde_json::{Value, json};
use vaultrs::api::auth::kubernetes::requests::CreateKubernetesRoleRequest;
use vaultrs::api::auth::kubernetes::responses::ReadKubernetesRoleResponse;
use vaultrs::api::sys::requests::{EnableEngineDataConfig, EnableEngineRequest};
use vaultrs::api::sys::responses::GetConfigurationOfTheSecretEngineResponse as MountEntry;
use vaultrs::api::transit::KeyType;
use vaultrs::api::transit::requests::{CreateKeyRequest, UpdateKeyConfigurationRequest};
use vaultrs::auth::kubernetes;
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;
use vaultrs::{kv2, sys, transit};

pub use pki::{Issuer, LEAF_ROLE, SignRequest, SignedCertificate, TenantCa};

use super::http::absent_as_none;
use super::{Backend, BackendError, CALL_TIMEOUT, Calls, Change, Verb};

const TRANSIT_KEY: KeyType = KeyType::Aes256Gcm96;
const TRANSIT_KEY_TYPE: &str = "aes256-gcm96";
const KV_UPGRADING: &str = "Upgrading from non-versioned to versioned data";
/// Longest wait for a fresh KV v2 mount to set itself up.
const KV_SETUP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Status given to conflicts found by the adapter itself (not sent by OpenBao).
const CONFLICT: u16 = 409;
/// Where the Kubernetes auth method is mounted unless told otherwise.
pub const KUBERNETES_AUTH_PATH: &str = "kubernetes";

pub struct OpenBao {
    client: VaultClient,
    /// `sys/health`, asked by the health probe (no token).
    health_url: reqwest::Url,
    probe: reqwest::Client,
    calls: Calls,
    /// Per PKI mount, the default issuer last found as wanted, and the
    /// names it was checked for.
    checked_cas: std::sync::Arc<std::sync::Mutex<HashMap<String, CheckedCa>>>,
    /// KV mounts seen to be version 2: records are written there without
    /// reading the mount again (until this process unmounts it).
    kv2_mounts: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Mount of the Kubernetes auth method (`auth/<path>/role/...`).
    kubernetes_auth: String,
}

/// A default issuer's id, and the names it was found constrained to.
type CheckedCa = (String, std::collections::BTreeSet<String>);

// Written by hand so the token can never reach a log line.
impl std::fmt::Debug for OpenBao {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenBao")
            .field("base", &self.client.settings.address.as_str())
            .finish_non_exhaustive()
    }
}

impl OpenBao {
    pub fn new(addr: &str, token: &str, calls: Calls) -> Result<Self, BackendError> {
        // vaultrs panics on an address it cannot parse and on a token that is
        // no header value; building (not sending) a request checks both now,
        // so a misconfiguration fails at startup, not per reconcile.
        reqwest::Client::new()
            .get(addr)
            .header("X-Vault-Token", token)
            .build()
            .map_err(|e| Backend::OpenBao.unreachable(e))?;
        let health_url = Backend::OpenBao
            .base_url(addr, "use the address")?
            .join("v1/sys/health")
            .map_err(|e| Backend::OpenBao.unreadable("use the address", e.to_string()))?;
        let settings = VaultClientSettingsBuilder::default()
            .address(addr)
            .token(token)
            // Explicit, so stray VAULT_* variables cannot change where or how it connects.
            .ca_certs(Vec::new())
            .identity(None)
            .verify(true)
            .timeout(Some(CALL_TIMEOUT))
            .build()
            .map_err(|e| Backend::OpenBao.unreadable("configure the client", e.to_string()))?;
        let client =
            VaultClient::new(settings).map_err(|e| backend_error("configure the client", e))?;
        Ok(Self {
            client,
            health_url,
            probe: Backend::OpenBao.client(reqwest::Client::builder())?,
            calls,
            checked_cas: Default::default(),
            kv2_mounts: Default::default(),
            kubernetes_auth: KUBERNETES_AUTH_PATH.to_string(),
        })
    }

    /// Whether OpenBao answers, unsealed (`sys/health`: a sealed or
    /// uninitialized server answers 5xx).
    pub async fn probe(&self) -> Result<(), BackendError> {
        super::http::answers(Backend::OpenBao, self.probe.get(self.health_url.clone())).await
    }

    /// Kubernetes auth roles go to the method mounted at `path`.
    pub fn with_kubernetes_auth_path(mut self, path: &str) -> Self {
        self.kubernetes_auth = path.trim_matches('/').to_string();
        self
    }

    /// Kubernetes auth role `name`: a token of ServiceAccount
    /// `service_account` in `namespace` logs in with it and gets `policies`
    /// for `ttl`. Written only if the stored role differs.
    pub async fn ensure_kubernetes_role(
        &self,
        name: &str,
        service_account: &str,
        namespace: &str,
        policies: &[String],
        ttl: std::time::Duration,
    ) -> Result<Change, BackendError> {
        let wanted = KubernetesRole {
            service_account,
            namespace,
            policies,
            ttl_secs: ttl.as_secs(),
        };
        let change = match self.read_kubernetes_role(name).await? {
            None => Change::Created,
            Some(found) if wanted.matches(&found) => return Ok(Change::Unchanged),
            Some(_) => Change::Updated,
        };
        let mut options = CreateKubernetesRoleRequest::builder();
        options
            .bound_service_account_names(vec![service_account.to_string()])
            .bound_service_account_namespaces(vec![namespace.to_string()])
            .token_policies(policies.to_vec())
            .token_ttl(format!("{}s", wanted.ttl_secs));
        let write = kubernetes::role::create(
            &self.client,
            &self.kubernetes_auth,
            name,
            Some(&mut options),
        );
        self.call(
            Verb::Write,
            &format!("write Kubernetes auth role {name}"),
            write,
        )
        .await?;
        Ok(change)
    }

    pub async fn delete_kubernetes_role(&self, name: &str) -> Result<Change, BackendError> {
        // Deleting an absent role succeeds too; reading tells the two apart.
        if self.read_kubernetes_role(name).await?.is_none() {
            return Ok(Change::Absent);
        }
        let delete = kubernetes::role::delete(&self.client, &self.kubernetes_auth, name);
        self.call(
            Verb::Write,
            &format!("delete Kubernetes auth role {name}"),
            delete,
        )
        .await?;
        Ok(Change::Deleted)
    }

    /// The Kubernetes-auth role `name`, if there is one.
    pub async fn read_kubernetes_role(
        &self,
        name: &str,
    ) -> Result<Option<ReadKubernetesRoleResponse>, BackendError> {
        let read = kubernetes::role::read(&self.client, &self.kubernetes_auth, name);
        absent_as_none(
            self.call(
                Verb::Read,
                &format!("read Kubernetes auth role {name}"),
                read,
            )
            .await,
        )
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
            self.enable(path, &kv_v2_mount(description), &action)
                .await?;
            return Ok(Change::Created);
        };
        if !is_kv_v2(&entry) {
            return Err(conflict(action, &entry));
        }
        if entry.description == description {
            return Ok(Change::Unchanged);
        }
        self.tune(
            path,
            json!({"description": description}),
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
                self.enable(path, &transit_mount(), &action).await?;
                change = Change::Created;
            }
            Some(entry) if entry.mount_type != "transit" => return Err(conflict(action, &entry)),
            Some(_) => {}
        }

        let action = format!("create transit key {key} at {path}");
        // A fresh mount has no keys: skip the read that would find nothing.
        let existing = match change {
            Change::Created => None,
            _ => absent_as_none(
                self.call(
                    Verb::Read,
                    &action,
                    transit::key::read(&self.client, path, key),
                )
                .await,
            )?,
        };
        let deletable = match existing {
            None => {
                self.create_transit_key(path, key).await?;
                change = Change::Created;
                false
            }
            Some(found) => {
                // Compared as OpenBao spells it, so an unexpected type is named in the refusal.
                let kind = serde_json::to_value(found.key_type).unwrap_or_default();
                if kind != TRANSIT_KEY_TYPE {
                    return Err(BackendError::Refused {
                        backend: Backend::OpenBao,
                        action,
                        status: CONFLICT,
                        body: format!("key exists with type {kind}, not {TRANSIT_KEY_TYPE}"),
                    });
                }
                found.deletion_allowed
            }
        };
        if !deletable {
            self.allow_key_deletion(path, key).await?;
            if change == Change::Unchanged {
                change = Change::Updated;
            }
        }
        Ok(change)
    }

    async fn create_transit_key(&self, path: &str, key: &str) -> Result<(), BackendError> {
        let mut options = CreateKeyRequest::builder();
        options.key_type(TRANSIT_KEY);
        self.call(
            Verb::Write,
            &format!("create transit key {key} at {path}"),
            transit::key::create(&self.client, path, key, Some(&mut options)),
        )
        .await
    }

    async fn allow_key_deletion(&self, path: &str, key: &str) -> Result<(), BackendError> {
        let mut options = UpdateKeyConfigurationRequest::builder();
        options.deletion_allowed(Some(true));
        self.call(
            Verb::Write,
            &format!("allow deletion of transit key {key} at {path}"),
            transit::key::update(&self.client, path, key, Some(&mut options)),
        )
        .await
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
        let kv_mount = kv_v2_mount(description);
        // The two mounts do not depend on each other; the key on its mount.
        let (kv_mounted, transit_mounted) = tokio::join!(self.create_mount(kv, &kv_mount), async {
            if !self.create_mount(transit, &transit_mount()).await? {
                return Ok(false);
            }
            self.create_transit_key(transit, key).await?;
            self.allow_key_deletion(transit, key).await?;
            Ok(true)
        },);
        Ok((kv_mounted? && transit_mounted?).then(|| vec![Change::Created, Change::Created]))
    }

    /// Mounts an engine at `path`; false when something is mounted there.
    async fn create_mount(&self, path: &str, mount: &Mount) -> Result<bool, BackendError> {
        let action = format!("mount {} at {path}", mount.kind);
        match self.enable(path, mount, &action).await {
            Err(BackendError::Refused {
                status: 400, body, ..
            }) if body.contains("already in use") => Ok(false),
            other => other.map(|()| true),
        }
    }

    /// Writes policy `name` without reading first (a tenant never provisioned).
    pub async fn create_policy(&self, name: &str, hcl: &str) -> Result<Change, BackendError> {
        self.write_policy(name, hcl).await?;
        Ok(Change::Created)
    }

    /// ACL policy `name` with exactly `hcl`; written only if the stored text differs.
    pub async fn ensure_policy(&self, name: &str, hcl: &str) -> Result<Change, BackendError> {
        let change = match self.read_policy(name).await? {
            None => Change::Created,
            Some(found) if found == hcl => return Ok(Change::Unchanged),
            Some(_) => Change::Updated,
        };
        self.write_policy(name, hcl).await?;
        Ok(change)
    }

    pub async fn delete_policy(&self, name: &str) -> Result<Change, BackendError> {
        // OpenBao answers 204 for absent policies too; reading tells the two apart.
        if self.read_policy(name).await?.is_none() {
            return Ok(Change::Absent);
        }
        self.call(
            Verb::Write,
            &format!("delete policy {name}"),
            sys::policy::delete(&self.client, name),
        )
        .await?;
        Ok(Change::Deleted)
    }

    // vaultrs's `sys::policy` uses the older route `sys/policy/<name>` to the
    // same ACL policies; the operator's own policy grants both routes.
    pub async fn read_policy(&self, name: &str) -> Result<Option<String>, BackendError> {
        let read = sys::policy::read(&self.client, name);
        let found = absent_as_none(
            self.call(Verb::Read, &format!("read policy {name}"), read)
                .await,
        )?;
        Ok(found.map(|policy| policy.rules))
    }

    async fn write_policy(&self, name: &str, hcl: &str) -> Result<(), BackendError> {
        self.call(
            Verb::Write,
            &format!("write policy {name}"),
            sys::policy::set(&self.client, name, hcl),
        )
        .await
    }

    /// Unmounts `path`, destroying everything stored under it.
    pub async fn delete_mount(&self, path: &str) -> Result<Change, BackendError> {
        let action = format!("unmount {path}");
        self.kv2_mounts
            .lock()
            .expect("never poisoned")
            .remove(path.trim_matches('/'));
        if self.mount(path, &action).await?.is_none() {
            return Ok(Change::Absent);
        }
        self.call(
            Verb::Write,
            &action,
            sys::mount::disable(&self.client, path),
        )
        .await?;
        Ok(Change::Deleted)
    }

    /// Secret `path` in the KV v2 mount `mount` holding exactly `data`;
    /// written (as a new version) only if the stored one differs.
    pub async fn put_secret(
        &self,
        mount: &str,
        path: &str,
        data: &BTreeMap<String, String>,
    ) -> Result<Change, BackendError> {
        // A mount that is not KV v2 is refused before it is read.
        self.require_kv2(mount, &format!("write secret {path} in {mount}"))
            .await?;
        let change = match self.get_secret(mount, path).await? {
            None => Change::Created,
            Some(stored) if &stored == data => return Ok(Change::Unchanged),
            Some(_) => Change::Updated,
        };
        self.write_secret(mount, path, data).await?;
        Ok(change)
    }

    /// Writes secret `path` as a new version without comparing it first:
    /// for a caller that knows it changed (a certificate's record).
    pub async fn write_secret(
        &self,
        mount: &str,
        path: &str,
        data: &BTreeMap<String, String>,
    ) -> Result<Change, BackendError> {
        let action = format!("write secret {path} in {mount}");
        self.require_kv2(mount, &action).await?;
        self.set_secret(mount, path, data, &action).await?;
        Ok(Change::Updated)
    }

    async fn set_secret(
        &self,
        mount: &str,
        path: &str,
        data: &BTreeMap<String, String>,
        action: &str,
    ) -> Result<(), BackendError> {
        self.kv(|| {
            self.call(
                Verb::Write,
                action,
                kv2::set(&self.client, mount, path, data),
            )
        })
        .await
        .map(drop)
    }

    /// On a KV v1 mount the v2 routes are plain keys: a write would land at
    /// `data/<path>` and look like success. Such a mount is refused.
    async fn require_kv2(&self, mount: &str, action: &str) -> Result<(), BackendError> {
        let key = mount.trim_matches('/');
        if self
            .kv2_mounts
            .lock()
            .expect("never poisoned")
            .contains(key)
        {
            return Ok(());
        }
        match self.mount(mount, action).await? {
            Some(entry) if is_kv_v2(&entry) => {
                self.kv2_mounts
                    .lock()
                    .expect("never poisoned")
                    .insert(key.to_string());
                Ok(())
            }
            Some(entry) => Err(conflict(action.to_string(), &entry)),
            None => {
                let body = format!("nothing is mounted at {mount}");
                Err(Backend::OpenBao.refused(action, 404, &body))
            }
        }
    }

    /// The latest version of secret `path`; `None` when there is none (or it was deleted).
    pub async fn get_secret(
        &self,
        mount: &str,
        path: &str,
    ) -> Result<Option<BTreeMap<String, String>>, BackendError> {
        let action = format!("read secret {path} in {mount}");
        absent_as_none(
            self.kv(|| self.call(Verb::Read, &action, kv2::read(&self.client, mount, path)))
                .await,
        )
    }

    /// Removes secret `path` with all its versions and its metadata.
    pub async fn delete_secret(&self, mount: &str, path: &str) -> Result<Change, BackendError> {
        let action = format!("delete secret {path} in {mount}");
        // The metadata outlives soft-deleted versions, so it is what tells absence.
        let metadata = kv2::read_metadata(&self.client, mount, path);
        if absent_as_none(self.call(Verb::Read, &action, metadata).await)?.is_none() {
            return Ok(Change::Absent);
        }
        self.call(
            Verb::Write,
            &action,
            kv2::delete_metadata(&self.client, mount, path),
        )
        .await?;
        Ok(Change::Deleted)
    }

    /// The type of the mount at exactly `path` (`kv`, `transit`, `pki`), if any.
    pub async fn mount_type(&self, path: &str) -> Result<Option<String>, BackendError> {
        let action = format!("describe mount {path}");
        Ok(self.mount(path, &action).await?.map(|m| m.mount_type))
    }

    /// Whether transit mount `path` holds key `key`.
    pub async fn transit_key_exists(&self, path: &str, key: &str) -> Result<bool, BackendError> {
        let action = format!("read transit key {key} at {path}");
        let read = transit::key::read(&self.client, path, key);
        Ok(absent_as_none(self.call(Verb::Read, &action, read).await)?.is_some())
    }

    /// The mount at exactly `path`, if any: one mount's configuration, never
    /// the whole table (which grows with every tenant).
    async fn mount(&self, path: &str, action: &str) -> Result<Option<MountEntry>, BackendError> {
        let path = path.trim_matches('/');
        let read = sys::mount::get_configuration_of_a_secret_engine(&self.client, path);
        match self.call(Verb::Read, action, read).await {
            Ok(entry) => Ok(Some(entry)),
            // An absent mount is a 400 that says so.
            Err(BackendError::Refused {
                status: 400, body, ..
            }) if body.contains("No secret engine mount at") => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn enable(&self, path: &str, mount: &Mount, action: &str) -> Result<(), BackendError> {
        let mut options = EnableEngineRequest::builder();
        options.description(mount.description.clone());
        if let Some(version) = mount.version {
            options.options(HashMap::from([(
                "version".to_string(),
                version.to_string(),
            )]));
        }
        if let Some(ttl) = mount.max_lease_ttl {
            options.config(EnableEngineDataConfig {
                max_lease_ttl: Some(ttl.to_string()),
                ..Default::default()
            });
        }
        let enable = sys::mount::enable(&self.client, path, mount.kind, Some(&mut options));
        self.call(Verb::Write, action, enable).await
    }

    /// Tunes mount `path`. vaultrs has no call for `sys/mounts/<path>/tune`.
    async fn tune(&self, path: &str, body: Value, action: &str) -> Result<(), BackendError> {
        let tune = Raw::new(RequestMethod::POST, format!("sys/mounts/{path}/tune"), body);
        self.call(
            Verb::Write,
            action,
            vaultrs::api::exec_with_empty(&self.client, tune),
        )
        .await
    }

    /// A [`Raw`] call answering with `data`.
    async fn raw(&self, verb: Verb, action: &str, raw: Raw) -> Result<Value, BackendError> {
        self.call(
            verb,
            action,
            vaultrs::api::exec_with_result(&self.client, raw),
        )
        .await
    }

    /// Counts one call, then makes it and maps its failure.
    /// A KV call; a fresh KV v2 mount answers for a moment that it is
    /// setting itself up: asked again shortly, for up to `KV_SETUP_WAIT`,
    /// rather than failing the step (a new tenant's first record is written
    /// right after its mount is made).
    async fn kv<T, F, Fut>(&self, call: F) -> Result<T, BackendError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let deadline = std::time::Instant::now() + KV_SETUP_WAIT;
        let mut pause = std::time::Duration::from_millis(50);
        loop {
            match call().await {
                Err(BackendError::Refused {
                    status: 503, body, ..
                }) if body.contains(KV_UPGRADING) && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_millis(500));
                }
                other => return other,
            }
        }
    }

    async fn call<T>(
        &self,
        verb: Verb,
        action: &str,
        request: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, BackendError> {
        self.calls
            .counted(Backend::OpenBao, verb, action, request, backend_error)
            .await
    }
}

/// The fields of a Kubernetes auth role the operator decides.
struct KubernetesRole<'a> {
    service_account: &'a str,
    namespace: &'a str,
    policies: &'a [String],
    ttl_secs: u64,
}

impl KubernetesRole<'_> {
    /// Bindings and policies compare as sets: OpenBao may keep another order.
    fn matches(&self, found: &ReadKubernetesRoleResponse) -> bool {
        let set = |v: &[String]| v.iter().cloned().collect::<std::collections::BTreeSet<_>>();
        found.bound_service_account_names == [self.service_account]
            && found.bound_service_account_namespaces == [self.namespace]
            && set(&found.token_policies) == set(self.policies)
            && found.token_ttl == self.ttl_secs
    }
}

/// What to mount: engine type, description, KV version and lease ceiling.
struct Mount {
    kind: &'static str,
    description: String,
    version: Option<&'static str>,
    max_lease_ttl: Option<&'static str>,
}

fn kv_v2_mount(description: &str) -> Mount {
    Mount {
        kind: "kv",
        description: description.to_string(),
        version: Some("2"),
        max_lease_ttl: None,
    }
}

fn transit_mount() -> Mount {
    Mount {
        kind: "transit",
        description: "transit keys".to_string(),
        version: None,
        max_lease_ttl: None,
    }
}

/// A call vaultrs has no typed endpoint (or no field) for, made through
/// vaultrs's own client, token middleware and error parsing all the same.
struct Raw {
    method: RequestMethod,
    path: String,
    body: Value,
}

impl Raw {
    fn new(method: RequestMethod, path: String, body: Value) -> Self {
        Self { method, path, body }
    }
}

impl Endpoint for Raw {
    type Response = Value;
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        self.path.clone()
    }

    fn method(&self) -> RequestMethod {
        self.method.clone()
    }

    fn body(&self) -> Result<Option<Vec<u8>>, RestError> {
        if self.body.is_null() {
            return Ok(None);
        }
        serde_json::to_vec(&self.body)
            .map(Some)
            .map_err(|e| RestError::DataParseError { source: e.into() })
    }
}

/// Whether a mount is a KV version 2 engine.
fn is_kv_v2(entry: &MountEntry) -> bool {
    entry.mount_type == "kv"
        && entry
            .options
            .as_ref()
            .and_then(|o| o.get("version"))
            .is_some_and(|v| v == "2")
}

/// Maps a vaultrs failure: OpenBao's refusals keep their status and error
/// text, a failed connection stays the reqwest error it is, and an answer
/// vaultrs cannot parse is unreadable.
fn backend_error(action: &str, error: ClientError) -> BackendError {
    match error {
        ClientError::APIError { code, errors } => {
            let body = errors.join("; ");
            // A fresh KV v2 mount refuses with 400 until it has set itself up:
            // transient, so reported as the 503 it amounts to.
            let code = if code == 400 && body.contains(KV_UPGRADING) {
                503
            } else {
                code
            };
            Backend::OpenBao.refused(action, code, &body)
        }
        ClientError::RestClientError { source } => match source {
            // An error answer whose body is not OpenBao's `{"errors": [...]}`.
            RestError::ServerResponseError { code, content } => {
                Backend::OpenBao.refused(action, code, &content.unwrap_or_default())
            }
            RestError::RequestError { source, .. } | RestError::ResponseError { source } => {
                match source.downcast::<reqwest::Error>() {
                    Ok(source) => Backend::OpenBao.unreachable(source),
                    Err(other) => Backend::OpenBao.unreadable(action, format!("{other:#}")),
                }
            }
            // The detail sits in the sources, which `{:#}` lists.
            other => {
                Backend::OpenBao.unreadable(action, format!("{:#}", anyhow::Error::new(other)))
            }
        },
        other => Backend::OpenBao.unreadable(action, format!("{:#}", anyhow::Error::new(other))),
    }
}

fn conflict(action: String, entry: &MountEntry) -> BackendError {
    let kind = match entry.mount_type.as_str() {
        "kv" => {
            let version = entry.options.as_ref().and_then(|o| o.get("version"));
            format!("kv version {}", version.map_or("1", String::as_str))
        }
        other => other.to_string(),
    };
    BackendError::Refused {
        backend: Backend::OpenBao,
        action,
        status: CONFLICT,
        body: format!("a mount of type {kind} is already there; it is left untouched"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::http::BODY_LIMIT;

    fn entry(kind: &str, version: Option<&str>) -> MountEntry {
        let options = version
            .map(|v| json!({"version": v}))
            .unwrap_or(Value::Null);
        serde_json::from_value(json!({
            "accessor": "kv_1", "config": {"default_lease_ttl": 0, "force_no_cache": false, "max_lease_ttl": 0},
            "description": "", "external_entropy_access": false, "local": false,
            "options": options, "seal_wrap": false, "type": kind, "uuid": "u",
        }))
        .unwrap()
    }

    #[test]
    fn a_kubernetes_role_matches_its_bindings_policies_and_ttl_only() {
        let policies = ["tenant-a-svc".to_string(), "tenant-a-read".to_string()];
        let wanted = KubernetesRole {
            service_account: "svc",
            namespace: "tn-a",
            policies: &policies,
            ttl_secs: 3600,
        };
        let found = |changes: Value| -> ReadKubernetesRoleResponse {
            let mut role = json!({
                "bound_service_account_names": ["svc"],
                "bound_service_account_namespaces": ["tn-a"],
                "token_policies": ["tenant-a-read", "tenant-a-svc"],
                "token_ttl": 3600, "token_max_ttl": 0, "token_bound_cidrs": [],
                "token_explicit_max_ttl": 0, "token_no_default_policy": false,
                "token_num_uses": 0, "token_period": 0, "token_type": "default",
            });
            for (key, value) in changes.as_object().unwrap() {
                role[key] = value.clone();
            }
            serde_json::from_value(role).unwrap()
        };
        assert!(wanted.matches(&found(json!({}))));
        assert!(wanted.matches(&found(json!({"token_max_ttl": 7200}))));
        assert!(!wanted.matches(&found(json!({"bound_service_account_names": ["svc", "*"]}))));
        assert!(!wanted.matches(&found(json!({"bound_service_account_namespaces": ["*"]}))));
        assert!(!wanted.matches(&found(json!({"token_policies": ["tenant-a-svc"]}))));
        assert!(!wanted.matches(&found(json!({"token_ttl": 60}))));
    }

    #[test]
    fn kv_v2_is_recognised_and_nothing_else() {
        assert!(is_kv_v2(&entry("kv", Some("2"))));
        assert!(!is_kv_v2(&entry("kv", Some("1"))));
        assert!(!is_kv_v2(&entry("kv", None)));
        assert!(!is_kv_v2(&entry("generic", None)));
        assert!(!is_kv_v2(&entry("transit", Some("2"))));
    }

    #[test]
    fn conflicts_name_the_existing_mount() {
        let v1 = conflict("a".into(), &entry("kv", None));
        assert!(v1.to_string().contains("kv version 1"), "{v1}");
        assert_eq!(v1.category(), "BackendRefused");
        let other = conflict("a".into(), &entry("transit", None));
        assert!(other.to_string().contains("type transit"), "{other}");
    }

    #[test]
    fn raw_calls_encode_each_segment() {
        let url = |path: &str| {
            Raw::new(RequestMethod::GET, path.to_string(), Value::Null)
                .url("http://127.0.0.1:8200")
                .unwrap()
                .to_string()
        };
        assert_eq!(
            url("sys/mounts/tenants/acme/kv/tune"),
            "http://127.0.0.1:8200/sys/mounts/tenants/acme/kv/tune"
        );
        assert_eq!(
            url("sys/policies/acl/a b?c"),
            "http://127.0.0.1:8200/sys/policies/acl/a%20b%3Fc"
        );
        assert_eq!(
            url("tenants/../sys/mounts"),
            "http://127.0.0.1:8200/tenants/sys/mounts"
        );
    }

    #[test]
    fn refusals_keep_bodies_short_and_their_status() {
        let long = "é".repeat(BODY_LIMIT + 50);
        let error = ClientError::APIError {
            code: 403,
            errors: vec![long],
        };
        let BackendError::Refused { status, body, .. } = backend_error("read", error) else {
            panic!("a 403 is a refusal");
        };
        assert_eq!(status, 403);
        assert_eq!(body.chars().count(), BODY_LIMIT + 3);
        let plain = RestError::ServerResponseError {
            code: 502,
            content: Some("bad gateway".into()),
        };
        let error = backend_error("read", ClientError::RestClientError { source: plain });
        assert_eq!(error.category(), "BackendFailing", "{error}");
        let upgrading = ClientError::APIError {
            code: 400,
            errors: vec![format!(
                "{KV_UPGRADING}. This backend will be unavailable for a brief period"
            )],
        };
        assert_eq!(
            backend_error("read", upgrading).category(),
            "BackendFailing"
        );
        let empty = backend_error("read", ClientError::ResponseDataEmptyError);
        assert_eq!(empty.category(), "BackendUnreadable", "{empty}");
    }
}
