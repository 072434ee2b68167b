//! Keycloak adapter: realms, nested groups and the group-path token claim,
//! driven through the admin REST API. Every method reads first and writes
//! only the fields that differ, so an unchanged object costs no writes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use reqwest::header::LOCATION;
use reqwest::{Method, StatusCode, Url};
use serde_json::{Map, Value, json};
use tokio::sync::Mutex;

use super::{Backend, BackendError, CALL_TIMEOUT, Calls, Change, Verb};

/// Client scope that carries the caller's group paths.
pub const SCOPE_NAME: &str = "ossature-scopes";
/// Name of the group-membership mapper inside [`SCOPE_NAME`].
pub const MAPPER_NAME: &str = "scopes";
/// Token claim holding the full group paths.
pub const SCOPE_CLAIM: &str = "scopes";
const MAPPER_TYPE: &str = "oidc-group-membership-mapper";
/// Built-in client scope of realms with organizations; maps membership.
pub const ORGANIZATION_SCOPE: &str = "organization";
const ORGANIZATION_GROUPS_MAPPER: &str = "oidc-organization-group-membership-mapper";
const PROTOCOL: &str = "openid-connect";
const TOTP: &str = "CONFIGURE_TOTP";
const SIGNATURE_ALGORITHM: &str = "EdDSA";
const KEY_PROVIDER_TYPE: &str = "org.keycloak.keys.KeyProvider";
/// Event types every realm keeps, so logins can be audited.
pub const LOGIN_EVENTS: [&str; 3] = ["LOGIN", "LOGIN_ERROR", "LOGOUT"];
/// Refresh the admin token this long before it expires, so a call never
/// races its expiry.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);
const BODY_LIMIT: usize = 300;

/// Managed settings of one realm.
#[derive(Debug, Clone, PartialEq)]
pub struct RealmSettings {
    pub name: String,
    pub display_name: String,
    pub registration_allowed: bool,
    pub verify_email: bool,
    /// Realised as the CONFIGURE_TOTP required action being a default action.
    pub mfa_required: bool,
    /// Keycloak policy string, e.g. "length(12) and digits(1)".
    pub password_policy: String,
    pub access_token_lifespan_seconds: i32,
    /// Organizations enabled: a shared realm holding many tenants.
    pub organizations: bool,
}

/// An organization: one tenant in a shared realm.
#[derive(Debug, Clone, PartialEq)]
pub struct OrganizationSettings {
    /// Unique in the realm, immutable in Keycloak: the tenant's name.
    pub alias: String,
    pub description: String,
}

/// The client a tenant's people and services get tokens from.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSettings {
    pub client_id: String,
    pub name: String,
    pub access_token_lifespan_seconds: i32,
    /// Claims and scopes the client's tokens carry, as protocol mappers.
    pub mappers: Vec<Value>,
    /// Client scopes (by name) every token of the client includes.
    pub default_scopes: Vec<String>,
    /// Where logins may be sent back to.
    pub redirect_uris: Vec<String>,
}

/// Marks what Ossature manages among a realm's identity providers.
pub const MANAGED_CONFIG: &str = "ossature.dev/managed";

/// One identity provider as Keycloak holds it. No `Debug`: it carries a secret.
#[derive(Clone, PartialEq)]
pub struct IdentityProviderSettings {
    /// Alias in Keycloak: prefixed by the tenant in a shared realm.
    pub alias: String,
    pub display_name: String,
    /// `oidc` or `saml`.
    pub provider: &'static str,
    /// Managed config keys and values (for SAML, added to what its metadata gives).
    pub config: BTreeMap<String, String>,
    /// The OIDC client secret: sent when the provider is created or its
    /// hash (in `config`) changed; Keycloak never shows it back.
    pub secret: Option<String>,
    /// For SAML: where Keycloak imports the rest of the config from.
    pub metadata_url: Option<String>,
    /// Mappers, each named `ossature-...`.
    pub mappers: Vec<Value>,
}

/// Where a tenant's groups live: the realm's own tree, or an organization's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupHome<'a> {
    Realm(&'a str),
    Organization { realm: &'a str, id: &'a str },
}

impl<'a> GroupHome<'a> {
    pub fn realm(self) -> &'a str {
        match self {
            GroupHome::Realm(realm) | GroupHome::Organization { realm, .. } => realm,
        }
    }

    /// Path segments of the groups collection.
    fn groups(self) -> Vec<&'a str> {
        match self {
            GroupHome::Realm(realm) => vec!["admin", "realms", realm, "groups"],
            GroupHome::Organization { realm, id } => {
                vec!["admin", "realms", realm, "organizations", id, "groups"]
            }
        }
    }

    /// Path segments of the lookup by path.
    fn by_path(self) -> Vec<&'a str> {
        match self {
            GroupHome::Realm(realm) => vec!["admin", "realms", realm, "group-by-path"],
            GroupHome::Organization { realm, id } => vec![
                "admin",
                "realms",
                realm,
                "organizations",
                id,
                "groups",
                "group-by-path",
            ],
        }
    }
}

impl std::fmt::Display for GroupHome<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupHome::Realm(realm) => write!(f, "realm {realm}"),
            GroupHome::Organization { realm, id } => {
                write!(f, "organization {id} of realm {realm}")
            }
        }
    }
}

/// Client for one Keycloak server, authenticated as a master-realm admin.
pub struct Keycloak {
    http: reqwest::Client,
    base: Url,
    admin_user: String,
    admin_password: String,
    token: Mutex<Option<Token>>,
    calls: Calls,
}

struct Token {
    value: String,
    refresh_at: Instant,
}

/// A finished HTTP exchange, whatever its status.
struct Answer {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

impl Keycloak {
    pub fn new(
        base_url: &str,
        admin_user: &str,
        admin_password: &str,
        calls: Calls,
    ) -> Result<Self, BackendError> {
        let base = Url::parse(base_url)
            .ok()
            .filter(|url| !url.cannot_be_a_base())
            .ok_or_else(|| BackendError::Unreadable {
                backend: Backend::Keycloak,
                action: "parse the base URL".into(),
                detail: format!("{base_url:?} is not an http(s) base URL"),
            })?;
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(unreachable)?;
        Ok(Self {
            http,
            base,
            admin_user: admin_user.into(),
            admin_password: admin_password.into(),
            token: Mutex::new(None),
            calls,
        })
    }

    /// Creates the realm or updates only the managed fields that differ.
    pub async fn ensure_realm(&self, desired: &RealmSettings) -> Result<Change, BackendError> {
        let name = desired.name.as_str();
        let realm_url = self.url(&["admin", "realms", name]);
        let current = self
            .read(realm_url.clone(), &format!("read realm {name}"))
            .await?;
        if current.is_none() {
            let mut body = realm_diff(&Value::Null, desired);
            body.insert("realm".into(), json!(name));
            self.write(
                Method::POST,
                self.url(&["admin", "realms"]),
                Some(&Value::Object(body)),
                &format!("create realm {name}"),
            )
            .await?;
        }
        // The key comes before the algorithm switch so signing never lacks a key.
        let mut wrote = self.ensure_eddsa_key(name).await?;
        if let Some(patch) = current.as_ref().and_then(|c| realm_patch(c, desired)) {
            self.write(
                Method::PUT,
                realm_url,
                Some(&patch),
                &format!("update realm {name}"),
            )
            .await?;
            wrote = true;
        }
        wrote |= self.ensure_totp(name, desired.mfa_required).await?;
        Ok(match (current.is_none(), wrote) {
            (true, _) => Change::Created,
            (false, true) => Change::Updated,
            (false, false) => Change::Unchanged,
        })
    }

    pub async fn delete_realm(&self, name: &str) -> Result<Change, BackendError> {
        let action = format!("delete realm {name}");
        let answer = self
            .call(
                Verb::Write,
                Method::DELETE,
                self.url(&["admin", "realms", name]),
                None,
                &action,
            )
            .await?;
        deletion(answer, &action)
    }

    /// Ensures the group at `path` (e.g. ["global", "eu", "france"]) exists
    /// in `home` with exactly `attributes`. The parent must already exist.
    /// A group still at `moved_from` (where the scope was before its parent
    /// changed) is moved, with its members and subgroups, not created anew.
    pub async fn ensure_group(
        &self,
        home: GroupHome<'_>,
        path: &[String],
        attributes: &BTreeMap<String, Vec<String>>,
        moved_from: Option<&[String]>,
    ) -> Result<Change, BackendError> {
        let shown = group_path(path);
        check_path(path, &format!("ensure group {shown} in {home}"))?;
        let group_url = |id: &str| {
            let mut segments = home.groups();
            segments.push(id);
            self.url(&segments)
        };
        if let Some(current) = self.group(home, path).await? {
            if group_attributes_equal(&current, attributes) {
                return Ok(Change::Unchanged);
            }
            let action = format!("update group {shown} in {home}");
            let id = str_field(&current, "id", &action)?;
            let body = json!({ "name": path[path.len() - 1], "attributes": attributes });
            self.write(Method::PUT, group_url(id), Some(&body), &action)
                .await?;
            return Ok(Change::Updated);
        }
        let existing = match moved_from {
            Some(from) if from != path && check_path(from, "").is_ok() => {
                self.group(home, from).await?
            }
            _ => None,
        };
        let verb = if existing.is_some() { "move" } else { "create" };
        let action = format!("{verb} group {shown} in {home}");
        let (parent, name) = path.split_at(path.len() - 1);
        let url = if parent.is_empty() {
            self.url(&home.groups())
        } else {
            let Some(parent_group) = self.group(home, parent).await? else {
                return Err(BackendError::Refused {
                    backend: Backend::Keycloak,
                    action,
                    status: StatusCode::NOT_FOUND.as_u16(),
                    body: format!("parent group {} does not exist", group_path(parent)),
                });
            };
            let parent_id = str_field(&parent_group, "id", &action)?;
            let mut segments = home.groups();
            segments.extend([parent_id, "children"]);
            self.url(&segments)
        };
        let body = json!({ "name": name[0], "attributes": attributes });
        let Some(existing) = existing else {
            self.write(Method::POST, url, Some(&body), &action).await?;
            // An organization drops the attributes of a new child group:
            // they are written once it exists.
            if let GroupHome::Organization { .. } = home
                && !attributes.is_empty()
                && let Some(created) = self.group(home, path).await?
                && !group_attributes_equal(&created, attributes)
            {
                let id = str_field(&created, "id", &action)?;
                self.write(Method::PUT, group_url(id), Some(&body), &action)
                    .await?;
            }
            return Ok(Change::Created);
        };
        // With the id of an existing group, Keycloak moves it under the
        // parent; it keeps the group's attributes, so they are written after.
        let id = str_field(&existing, "id", &action)?;
        self.write(
            Method::POST,
            url,
            Some(&json!({ "id": id, "name": name[0] })),
            &action,
        )
        .await?;
        if !group_attributes_equal(&existing, attributes) {
            self.write(
                Method::PUT,
                group_url(id),
                Some(&body),
                &format!("update group {shown} in {home}"),
            )
            .await?;
        }
        Ok(Change::Updated)
    }

    /// Deletes the group at `path` and, as Keycloak does, its subgroups.
    pub async fn delete_group(
        &self,
        home: GroupHome<'_>,
        path: &[String],
    ) -> Result<Change, BackendError> {
        let action = format!("delete group {} in {home}", group_path(path));
        check_path(path, &action)?;
        let Some(current) = self.group(home, path).await? else {
            return Ok(Change::Absent);
        };
        let id = str_field(&current, "id", &action)?;
        let mut segments = home.groups();
        segments.push(id);
        let answer = self
            .call(
                Verb::Write,
                Method::DELETE,
                self.url(&segments),
                None,
                &action,
            )
            .await?;
        deletion(answer, &action)
    }

    /// Whether the realm exists (one read; the cost does not grow with realms).
    pub async fn realm_exists(&self, name: &str) -> Result<bool, BackendError> {
        Ok(self
            .read(
                self.url(&["admin", "realms", name]),
                &format!("read realm {name}"),
            )
            .await?
            .is_some())
    }

    /// The organization with this alias, found through the alias index.
    pub async fn organization(
        &self,
        realm: &str,
        alias: &str,
    ) -> Result<Option<Value>, BackendError> {
        let mut url = self.url(&["admin", "realms", realm, "organizations"]);
        url.query_pairs_mut()
            .append_pair("q", &format!("alias:{alias}"))
            .append_pair("exact", "true")
            .append_pair("briefRepresentation", "false");
        let action = format!("find organization {alias} in realm {realm}");
        self.find_by(url, &action, realm, "alias", alias).await
    }

    /// The one item of a search answer whose `key` is `value` (the searches
    /// go by a unique key); a missing realm is an error.
    async fn find_by(
        &self,
        url: Url,
        action: &str,
        realm: &str,
        key: &str,
        value: &str,
    ) -> Result<Option<Value>, BackendError> {
        let found = self
            .read(url, action)
            .await?
            .ok_or_else(|| not_found(action, &format!("realm {realm} does not exist")))?;
        Ok(found.as_array().and_then(|items| {
            items
                .iter()
                .find(|i| i.get(key).and_then(Value::as_str) == Some(value))
                .cloned()
        }))
    }

    /// Creates the organization or updates what differs; returns its id.
    pub async fn ensure_organization(
        &self,
        realm: &str,
        desired: &OrganizationSettings,
    ) -> Result<(Change, String), BackendError> {
        let alias = desired.alias.as_str();
        let Some(current) = self.organization(realm, alias).await? else {
            return self
                .create_organization(realm, desired)
                .await?
                .ok_or_else(|| raced(&format!("create organization {alias} in realm {realm}")));
        };
        let action = format!("update organization {alias} in realm {realm}");
        let id = str_field(&current, "id", &action)?.to_string();
        let text = |key: &str| current.get(key).and_then(Value::as_str).unwrap_or("");
        let same = text("name") == alias
            && text("description") == desired.description
            && current.get("enabled").and_then(Value::as_bool) == Some(true);
        if same {
            return Ok((Change::Unchanged, id));
        }
        // PUT replaces the domains too: keep the ones Keycloak holds.
        let mut update = organization_body(desired);
        update["id"] = json!(id);
        update["domains"] = current.get("domains").cloned().unwrap_or(json!([]));
        self.write(
            Method::PUT,
            self.url(&["admin", "realms", realm, "organizations", &id]),
            Some(&update),
            &action,
        )
        .await?;
        Ok((Change::Updated, id))
    }

    /// Creates the organization without looking it up first, for a tenant
    /// never provisioned: `None` when it exists already.
    pub async fn create_organization(
        &self,
        realm: &str,
        desired: &OrganizationSettings,
    ) -> Result<Option<(Change, String)>, BackendError> {
        let alias = desired.alias.as_str();
        let action = format!("create organization {alias} in realm {realm}");
        let answer = self
            .call(
                Verb::Write,
                Method::POST,
                self.url(&["admin", "realms", realm, "organizations"]),
                Some(&organization_body(desired)),
                &action,
            )
            .await?;
        match answer.status {
            StatusCode::CONFLICT => Ok(None),
            s if s.is_success() => {
                let id = answer
                    .location
                    .as_deref()
                    .and_then(id_from_location)
                    .ok_or_else(|| unreadable(&action, "no Location header with the new id"))?;
                Ok(Some((Change::Created, id.to_string())))
            }
            _ => Err(refused(&action, &answer)),
        }
    }

    /// Creates the client without looking it up first: `None` when it exists.
    pub async fn create_client(
        &self,
        realm: &str,
        desired: &ClientSettings,
    ) -> Result<Option<Change>, BackendError> {
        let action = format!("create client {} in realm {realm}", desired.client_id);
        let answer = self
            .call(
                Verb::Write,
                Method::POST,
                self.url(&["admin", "realms", realm, "clients"]),
                Some(&new_client(desired)),
                &action,
            )
            .await?;
        match answer.status {
            StatusCode::CONFLICT => Ok(None),
            s if s.is_success() => Ok(Some(Change::Created)),
            _ => Err(refused(&action, &answer)),
        }
    }

    /// Deletes the organization with this alias, and with it its groups.
    pub async fn delete_organization(
        &self,
        realm: &str,
        alias: &str,
    ) -> Result<Change, BackendError> {
        let found = self.organization(realm, alias).await;
        self.delete_found(
            realm,
            "organizations",
            found,
            &format!("delete organization {alias} in realm {realm}"),
        )
        .await
    }

    /// Deletes what a lookup `found` in `collection` of the realm; a realm
    /// that is gone took it along.
    async fn delete_found(
        &self,
        realm: &str,
        collection: &str,
        found: Result<Option<Value>, BackendError>,
        action: &str,
    ) -> Result<Change, BackendError> {
        let found = match found {
            Ok(found) => found,
            Err(BackendError::Refused { status: 404, .. }) => None,
            Err(e) => return Err(e),
        };
        let Some(current) = found else {
            return Ok(Change::Absent);
        };
        let id = str_field(&current, "id", action)?;
        let answer = self
            .call(
                Verb::Write,
                Method::DELETE,
                self.url(&["admin", "realms", realm, collection, id]),
                None,
                action,
            )
            .await?;
        deletion(answer, action)
    }

    /// The client with this clientId (a lookup by its unique key).
    async fn client(&self, realm: &str, client_id: &str) -> Result<Option<Value>, BackendError> {
        let mut url = self.url(&["admin", "realms", realm, "clients"]);
        url.query_pairs_mut().append_pair("clientId", client_id);
        let action = format!("read client {client_id} of realm {realm}");
        self.find_by(url, &action, realm, "clientId", client_id)
            .await
    }

    /// The tenant's client: created, or its managed settings, mappers and
    /// default scopes put back where they differ.
    pub async fn ensure_client(
        &self,
        realm: &str,
        desired: &ClientSettings,
    ) -> Result<Change, BackendError> {
        let client_id = desired.client_id.as_str();
        let Some(current) = self.client(realm, client_id).await? else {
            return self
                .create_client(realm, desired)
                .await?
                .ok_or_else(|| raced(&format!("create client {client_id} in realm {realm}")));
        };
        let action = format!("update client {client_id} of realm {realm}");
        let id = str_field(&current, "id", &action)?.to_string();
        let mut wrote = false;
        if let Some(patch) = client_patch(&current, desired) {
            let mut body = current.clone();
            merge(&mut body, &patch);
            self.write(
                Method::PUT,
                self.url(&["admin", "realms", realm, "clients", &id]),
                Some(&body),
                &action,
            )
            .await?;
            wrote = true;
        }
        let mappers = current
            .get("protocolMappers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for wanted in &desired.mappers {
            let name = wanted
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let existing = mappers
                .iter()
                .find(|m| m.get("name").and_then(Value::as_str) == Some(name));
            let models = [
                "admin",
                "realms",
                realm,
                "clients",
                &id,
                "protocol-mappers",
                "models",
            ];
            match existing {
                None => {
                    self.write(Method::POST, self.url(&models), Some(wanted), &action)
                        .await?;
                    wrote = true;
                }
                Some(existing) if !mapper_matches(existing, wanted) => {
                    let mapper_id = str_field(existing, "id", &action)?;
                    let mut body = wanted.clone();
                    body["id"] = json!(mapper_id);
                    let mut url = self.url(&models);
                    push_segments(&mut url, &[mapper_id]);
                    self.write(Method::PUT, url, Some(&body), &action).await?;
                    wrote = true;
                }
                Some(_) => {}
            }
        }
        let defaults: BTreeSet<&str> = current
            .get("defaultClientScopes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let missing: Vec<&String> = desired
            .default_scopes
            .iter()
            .filter(|s| !defaults.contains(s.as_str()))
            .collect();
        if !missing.is_empty() {
            let scopes = self
                .read(
                    self.url(&["admin", "realms", realm, "client-scopes"]),
                    &action,
                )
                .await?
                .unwrap_or_default();
            for name in missing {
                let scope = scopes
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|s| s.get("name").and_then(Value::as_str) == Some(name.as_str()));
                let Some(scope_id) = scope.and_then(|s| s.get("id")).and_then(Value::as_str) else {
                    return Err(not_found(
                        &action,
                        &format!("client scope {name} does not exist"),
                    ));
                };
                self.write(
                    Method::PUT,
                    self.url(&[
                        "admin",
                        "realms",
                        realm,
                        "clients",
                        &id,
                        "default-client-scopes",
                        scope_id,
                    ]),
                    None,
                    &action,
                )
                .await?;
                wrote = true;
            }
        }
        Ok(if wrote {
            Change::Updated
        } else {
            Change::Unchanged
        })
    }

    pub async fn delete_client(
        &self,
        realm: &str,
        client_id: &str,
    ) -> Result<Change, BackendError> {
        let found = self.client(realm, client_id).await;
        self.delete_found(
            realm,
            "clients",
            found,
            &format!("delete client {client_id} of realm {realm}"),
        )
        .await
    }

    /// In a shared realm: the built-in `organization` client scope also maps
    /// each member's organization groups (the tenant's scopes) into tokens.
    pub async fn ensure_organization_claims(&self, realm: &str) -> Result<Change, BackendError> {
        let action = format!("read client scopes of realm {realm}");
        let scopes = self
            .read(
                self.url(&["admin", "realms", realm, "client-scopes"]),
                &action,
            )
            .await?
            .ok_or_else(|| not_found(&action, &format!("realm {realm} does not exist")))?;
        let scope = scopes
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s.get("name").and_then(Value::as_str) == Some(ORGANIZATION_SCOPE))
            .ok_or_else(|| {
                not_found(
                    &action,
                    "client scope organization does not exist (organizations are off?)",
                )
            })?;
        let has_groups = scope
            .get("protocolMappers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|m| {
                m.get("protocolMapper").and_then(Value::as_str) == Some(ORGANIZATION_GROUPS_MAPPER)
            });
        if has_groups {
            return Ok(Change::Unchanged);
        }
        let id = str_field(scope, "id", &action)?;
        self.write(
            Method::POST,
            self.url(&[
                "admin",
                "realms",
                realm,
                "client-scopes",
                id,
                "protocol-mappers",
                "models",
            ]),
            Some(&json!({
                "name": "organization groups",
                "protocol": PROTOCOL,
                "protocolMapper": ORGANIZATION_GROUPS_MAPPER,
                "config": {
                    "access.token.claim": "true",
                    "id.token.claim": "true",
                    "userinfo.token.claim": "true",
                    "introspection.token.claim": "true",
                },
            })),
            &format!("map organization groups into tokens of realm {realm}"),
        )
        .await?;
        Ok(Change::Updated)
    }

    /// The identity provider: created (for SAML from its metadata), its
    /// managed config and mappers put back where they differ, linked to the
    /// organization when there is one.
    pub async fn ensure_identity_provider(
        &self,
        realm: &str,
        organization: Option<&str>,
        desired: &IdentityProviderSettings,
    ) -> Result<Change, BackendError> {
        let alias = desired.alias.as_str();
        let instances = ["admin", "realms", realm, "identity-provider", "instances"];
        let action = format!("configure identity provider {alias} in realm {realm}");
        let mut url = self.url(&instances);
        push_segments(&mut url, &[alias]);
        let current = self.read(url.clone(), &action).await?;
        let mut wrote = false;
        let stale = |current: &Value| {
            let config = current.get("config");
            desired
                .config
                .iter()
                .any(|(k, v)| config.and_then(|c| c.get(k)).and_then(Value::as_str) != Some(v))
                || current.get("displayName").and_then(Value::as_str) != Some(&desired.display_name)
                || current.get("enabled").and_then(Value::as_bool) != Some(true)
        };
        if current.as_ref().is_none_or(stale) {
            let mut config: Map<String, Value> = match &desired.metadata_url {
                Some(from) => self.import_saml(realm, from).await?,
                None => current
                    .as_ref()
                    .and_then(|c| c.get("config"))
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
            };
            config.extend(desired.config.iter().map(|(k, v)| (k.clone(), json!(v))));
            if let Some(secret) = &desired.secret {
                config.insert("clientSecret".into(), json!(secret));
            }
            let body = json!({
                "alias": alias, "displayName": desired.display_name,
                "providerId": desired.provider, "enabled": true, "trustEmail": true,
                "firstBrokerLoginFlowAlias": "first broker login",
                "config": config,
            });
            match current {
                None => {
                    self.write(Method::POST, self.url(&instances), Some(&body), &action)
                        .await?
                }
                Some(_) => {
                    self.write(Method::PUT, url.clone(), Some(&body), &action)
                        .await?
                }
            };
            wrote = true;
        }
        wrote |= self.ensure_provider_mappers(realm, desired).await?;
        if let Some(id) = organization {
            let link = [
                "admin",
                "realms",
                realm,
                "organizations",
                id,
                "identity-providers",
            ];
            let mut linked = self.url(&link);
            push_segments(&mut linked, &[alias]);
            if self.read(linked, &action).await?.is_none() {
                self.write(Method::POST, self.url(&link), Some(&json!(alias)), &action)
                    .await?;
                wrote = true;
            }
        }
        Ok(if wrote {
            Change::Updated
        } else {
            Change::Unchanged
        })
    }

    /// The config Keycloak reads from a SAML provider's metadata.
    async fn import_saml(
        &self,
        realm: &str,
        from: &str,
    ) -> Result<Map<String, Value>, BackendError> {
        let action = format!("import SAML metadata from {from} into realm {realm}");
        let answer = self
            .write(
                Method::POST,
                self.url(&[
                    "admin",
                    "realms",
                    realm,
                    "identity-provider",
                    "import-config",
                ]),
                Some(&json!({"providerId": "saml", "fromUrl": from})),
                &action,
            )
            .await?;
        serde_json::from_str::<Map<String, Value>>(&answer.body)
            .map_err(|e| unreadable(&action, &e.to_string()))
    }

    /// The provider's `ossature-` mappers: exactly the desired ones.
    async fn ensure_provider_mappers(
        &self,
        realm: &str,
        desired: &IdentityProviderSettings,
    ) -> Result<bool, BackendError> {
        let alias = desired.alias.as_str();
        let segments = [
            "admin",
            "realms",
            realm,
            "identity-provider",
            "instances",
            alias,
            "mappers",
        ];
        let action = format!("configure mappers of identity provider {alias} in realm {realm}");
        let live = self
            .read(self.url(&segments), &action)
            .await?
            .unwrap_or_default();
        let live = live.as_array().cloned().unwrap_or_default();
        let mut wrote = false;
        for wanted in &desired.mappers {
            let name = wanted
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let existing = live
                .iter()
                .find(|m| m.get("name").and_then(Value::as_str) == Some(name));
            let same = existing.is_some_and(|m| {
                m.get("identityProviderMapper") == wanted.get("identityProviderMapper")
                    && wanted
                        .get("config")
                        .and_then(Value::as_object)
                        .into_iter()
                        .flatten()
                        .all(|(k, v)| m.get("config").and_then(|c| c.get(k)) == Some(v))
            });
            if same {
                continue;
            }
            match existing.and_then(|m| m.get("id")).and_then(Value::as_str) {
                Some(id) => {
                    let mut body = wanted.clone();
                    body["id"] = json!(id);
                    let mut url = self.url(&segments);
                    push_segments(&mut url, &[id]);
                    self.write(Method::PUT, url, Some(&body), &action).await?;
                }
                None => {
                    self.write(Method::POST, self.url(&segments), Some(wanted), &action)
                        .await?;
                }
            }
            wrote = true;
        }
        let wanted: BTreeSet<&str> = desired
            .mappers
            .iter()
            .filter_map(|m| m.get("name").and_then(Value::as_str))
            .collect();
        for stale in live.iter().filter(|m| {
            m.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.starts_with("ossature-") && !wanted.contains(n))
        }) {
            let id = str_field(stale, "id", &action)?;
            let mut url = self.url(&segments);
            push_segments(&mut url, &[id]);
            self.call(Verb::Write, Method::DELETE, url, None, &action)
                .await?;
            wrote = true;
        }
        Ok(wrote)
    }

    /// Deletes the identity providers Ossature made that are no longer
    /// wanted: among the organization's (shared realm) or the realm's own.
    pub async fn prune_identity_providers(
        &self,
        realm: &str,
        organization: Option<&str>,
        keep: &[String],
    ) -> Result<Vec<Change>, BackendError> {
        let action = format!("list identity providers in realm {realm}");
        let listed = match organization {
            Some(id) => {
                self.read(
                    self.url(&[
                        "admin",
                        "realms",
                        realm,
                        "organizations",
                        id,
                        "identity-providers",
                    ]),
                    &action,
                )
                .await?
            }
            None => {
                self.read(
                    self.url(&["admin", "realms", realm, "identity-provider", "instances"]),
                    &action,
                )
                .await?
            }
        };
        let mut changes = Vec::new();
        for provider in listed
            .as_ref()
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let alias = provider
                .get("alias")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let ours = provider
                .get("config")
                .and_then(|c| c.get(MANAGED_CONFIG))
                .and_then(Value::as_str)
                == Some("true");
            if ours && !keep.iter().any(|k| k == alias) {
                changes.push(self.delete_identity_provider(realm, alias).await?);
            }
        }
        Ok(changes)
    }

    pub async fn delete_identity_provider(
        &self,
        realm: &str,
        alias: &str,
    ) -> Result<Change, BackendError> {
        let action = format!("delete identity provider {alias} in realm {realm}");
        let mut url = self.url(&["admin", "realms", realm, "identity-provider", "instances"]);
        push_segments(&mut url, &[alias]);
        let answer = self
            .call(Verb::Write, Method::DELETE, url, None, &action)
            .await?;
        deletion(answer, &action)
    }

    /// Where a person's login at the provider comes back (OIDC redirect URI,
    /// SAML assertion consumer), and where the SAML service provider
    /// metadata is published, for the provider's administrators.
    pub fn broker_endpoint(&self, realm: &str, alias: &str) -> String {
        let mut url = self.url(&["realms", realm, "broker", alias, "endpoint"]);
        url.set_query(None);
        url.to_string()
    }

    /// Ensures the `ossature-scopes` client scope exists, is a default scope
    /// for the realm's new clients, and maps full group paths into the
    /// `scopes` claim.
    pub async fn ensure_scope_claim(&self, realm: &str) -> Result<Change, BackendError> {
        let scopes_url = self.url(&["admin", "realms", realm, "client-scopes"]);
        let action = format!("read client scopes of realm {realm}");
        let scopes = self
            .read(scopes_url.clone(), &action)
            .await?
            .ok_or_else(|| not_found(&action, &format!("realm {realm} does not exist")))?;
        let scopes = scopes
            .as_array()
            .ok_or_else(|| unreadable(&action, "expected a list of client scopes"))?;
        let existing = scopes
            .iter()
            .find(|s| s.get("name").and_then(Value::as_str) == Some(SCOPE_NAME));

        let Some(scope) = existing else {
            let action = format!("create client scope {SCOPE_NAME} in realm {realm}");
            let answer = self
                .write(
                    Method::POST,
                    scopes_url,
                    Some(&scope_representation()),
                    &action,
                )
                .await?;
            let id = answer
                .location
                .as_deref()
                .and_then(id_from_location)
                .ok_or_else(|| unreadable(&action, "no Location header with the new id"))?;
            self.make_default_scope(realm, id).await?;
            return Ok(Change::Created);
        };

        let action = format!("update client scope {SCOPE_NAME} in realm {realm}");
        let id = str_field(scope, "id", &action)?;
        let mappers_url = self.url(&[
            "admin",
            "realms",
            realm,
            "client-scopes",
            id,
            "protocol-mappers",
            "models",
        ]);
        let mut wrote = false;
        match find_mapper(scope) {
            None => {
                self.write(
                    Method::POST,
                    mappers_url,
                    Some(&mapper_representation()),
                    &action,
                )
                .await?;
                wrote = true;
            }
            Some(mapper) => {
                if let Some(patch) = mapper_patch(mapper) {
                    let mapper_id = str_field(mapper, "id", &action)?;
                    let mut url = mappers_url;
                    push_segments(&mut url, &[mapper_id]);
                    self.write(Method::PUT, url, Some(&patch), &action).await?;
                    wrote = true;
                }
            }
        }

        let action = format!("read default client scopes of realm {realm}");
        let defaults = self
            .read(
                self.url(&["admin", "realms", realm, "default-default-client-scopes"]),
                &action,
            )
            .await?
            .ok_or_else(|| not_found(&action, &format!("realm {realm} does not exist")))?;
        if !lists_id(&defaults, id) {
            self.make_default_scope(realm, id).await?;
            wrote = true;
        }
        Ok(if wrote {
            Change::Updated
        } else {
            Change::Unchanged
        })
    }

    async fn make_default_scope(&self, realm: &str, id: &str) -> Result<(), BackendError> {
        self.write(
            Method::PUT,
            self.url(&[
                "admin",
                "realms",
                realm,
                "default-default-client-scopes",
                id,
            ]),
            None,
            &format!("make {SCOPE_NAME} a default client scope of realm {realm}"),
        )
        .await
        .map(drop)
    }

    /// Adds a generated Ed25519 key provider unless an active EdDSA key exists.
    async fn ensure_eddsa_key(&self, realm: &str) -> Result<bool, BackendError> {
        let action = format!("read keys of realm {realm}");
        let keys = self
            .read(self.url(&["admin", "realms", realm, "keys"]), &action)
            .await?
            .ok_or_else(|| not_found(&action, &format!("realm {realm} does not exist")))?;
        if has_active_eddsa_key(&keys) {
            return Ok(false);
        }
        // Without parentId the server attaches the component to this realm.
        let component = json!({
            "name": "eddsa-generated",
            "providerId": "eddsa-generated",
            "providerType": KEY_PROVIDER_TYPE,
            "config": { "priority": ["100"], "eddsaEllipticCurveKey": ["Ed25519"] },
        });
        self.write(
            Method::POST,
            self.url(&["admin", "realms", realm, "components"]),
            Some(&component),
            &format!("add an EdDSA key provider to realm {realm}"),
        )
        .await?;
        Ok(true)
    }

    async fn ensure_totp(&self, realm: &str, mfa_required: bool) -> Result<bool, BackendError> {
        let url = self.url(&[
            "admin",
            "realms",
            realm,
            "authentication",
            "required-actions",
            TOTP,
        ]);
        let action = format!("update required action {TOTP} of realm {realm}");
        let current = match self.read(url.clone(), &action).await? {
            Some(current) => current,
            None if !mfa_required => return Ok(false),
            None => {
                // Unregistered (removed by someone): register it, then configure it.
                self.write(
                    Method::POST,
                    self.url(&[
                        "admin",
                        "realms",
                        realm,
                        "authentication",
                        "register-required-action",
                    ]),
                    Some(&json!({ "providerId": TOTP, "name": "Configure OTP" })),
                    &format!("register required action {TOTP} in realm {realm}"),
                )
                .await?;
                json!({ "alias": TOTP, "name": "Configure OTP", "providerId": TOTP, "config": {} })
            }
        };
        let Some(patch) = totp_patch(&current, mfa_required) else {
            return Ok(false);
        };
        self.write(Method::PUT, url, Some(&patch), &action).await?;
        Ok(true)
    }

    async fn group(
        &self,
        home: GroupHome<'_>,
        path: &[String],
    ) -> Result<Option<Value>, BackendError> {
        let mut url = self.url(&home.by_path());
        push_segments(&mut url, path);
        let action = format!("read group {} in {home}", group_path(path));
        let found = self.read(url, &action).await?;
        match (home, found) {
            // An organization answers a lookup by path briefly, without the
            // attributes; the group itself has them.
            (GroupHome::Organization { .. }, Some(brief)) => {
                let id = str_field(&brief, "id", &action)?;
                let mut segments = home.groups();
                segments.push(id);
                self.read(self.url(&segments), &action).await
            }
            (_, found) => Ok(found),
        }
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        push_segments(&mut url, segments);
        url
    }

    /// GET that treats 404 as absence.
    async fn read(&self, url: Url, action: &str) -> Result<Option<Value>, BackendError> {
        let answer = self
            .call(Verb::Read, Method::GET, url, None, action)
            .await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !answer.status.is_success() {
            return Err(refused(action, &answer));
        }
        serde_json::from_str(&answer.body)
            .map(Some)
            .map_err(|e| unreadable(action, &e.to_string()))
    }

    /// A write that must succeed.
    async fn write(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        action: &str,
    ) -> Result<Answer, BackendError> {
        let answer = self.call(Verb::Write, method, url, body, action).await?;
        if answer.status.is_success() {
            Ok(answer)
        } else {
            Err(refused(action, &answer))
        }
    }

    async fn call(
        &self,
        verb: Verb,
        method: Method,
        url: Url,
        body: Option<&Value>,
        action: &str,
    ) -> Result<Answer, BackendError> {
        let token = self.token(action).await?;
        self.calls.record(Backend::Keycloak, verb);
        let mut request = self.http.request(method, url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.text().await.map_err(unreachable)?;
        Ok(Answer {
            status,
            location,
            body,
        })
    }

    /// The cached admin token, fetched again shortly before it expires.
    async fn token(&self, action: &str) -> Result<String, BackendError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(token.value.clone());
        }
        let action = format!("issue an admin token (to {action})");
        self.calls.record(Backend::Keycloak, Verb::Read);
        let fetched_at = Instant::now();
        let response = self
            .http
            .post(self.url(&["realms", "master", "protocol", "openid-connect", "token"]))
            .form(&[
                ("client_id", "admin-cli"),
                ("grant_type", "password"),
                ("username", self.admin_user.as_str()),
                ("password", self.admin_password.as_str()),
            ])
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let body = response.text().await.map_err(unreachable)?;
        let answer = Answer {
            status,
            location: None,
            body,
        };
        if !status.is_success() {
            // Wrong admin credentials: 401 from older releases, 400
            // invalid_grant from newer ones; either way, unauthorized.
            if answer.body.contains("invalid_grant") {
                return Err(BackendError::Refused {
                    backend: Backend::Keycloak,
                    action,
                    status: StatusCode::UNAUTHORIZED.as_u16(),
                    body: truncate(&answer.body),
                });
            }
            return Err(refused(&action, &answer));
        }
        let parsed: Value =
            serde_json::from_str(&answer.body).map_err(|e| unreadable(&action, &e.to_string()))?;
        let value = parsed
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| unreadable(&action, "no access_token"))?
            .to_owned();
        let lifetime = Duration::from_secs(
            parsed
                .get("expires_in")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        );
        let refresh_at = fetched_at + lifetime.saturating_sub(TOKEN_MARGIN.min(lifetime / 2));
        *cached = Some(Token {
            value: value.clone(),
            refresh_at,
        });
        Ok(value)
    }
}

/// The managed realm fields whose current value differs from `desired`, as
/// a partial representation for PUT; `None` when nothing differs.
pub fn realm_patch(current: &Value, desired: &RealmSettings) -> Option<Value> {
    let diff = realm_diff(current, desired);
    (!diff.is_empty()).then_some(Value::Object(diff))
}

fn realm_diff(current: &Value, desired: &RealmSettings) -> Map<String, Value> {
    let mut diff = Map::new();
    let mut flag = |key: &str, want: bool| {
        if current.get(key).and_then(Value::as_bool) != Some(want) {
            diff.insert(key.into(), json!(want));
        }
    };
    flag("enabled", true);
    flag("registrationAllowed", desired.registration_allowed);
    flag("verifyEmail", desired.verify_email);
    flag("bruteForceProtected", true);
    flag("eventsEnabled", true);
    if desired.organizations {
        flag("organizationsEnabled", true);
    }

    let text = |key: &str| current.get(key).and_then(Value::as_str).unwrap_or("");
    if text("displayName") != desired.display_name {
        diff.insert("displayName".into(), json!(desired.display_name));
    }
    if text("defaultSignatureAlgorithm") != SIGNATURE_ALGORITHM {
        diff.insert(
            "defaultSignatureAlgorithm".into(),
            json!(SIGNATURE_ALGORITHM),
        );
    }
    // Keycloak re-serialises the policy, so compare the canonical spelling.
    if normalize_policy(text("passwordPolicy")) != normalize_policy(&desired.password_policy) {
        diff.insert("passwordPolicy".into(), json!(desired.password_policy));
    }
    if current.get("accessTokenLifespan").and_then(Value::as_i64)
        != Some(i64::from(desired.access_token_lifespan_seconds))
    {
        diff.insert(
            "accessTokenLifespan".into(),
            json!(desired.access_token_lifespan_seconds),
        );
    }
    // Login events must be saved; types someone else enabled are kept.
    let mut events: BTreeSet<String> = current
        .get("enabledEventTypes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    if !LOGIN_EVENTS.iter().all(|e| events.contains(*e)) {
        events.extend(LOGIN_EVENTS.iter().map(|e| (*e).to_owned()));
        diff.insert("enabledEventTypes".into(), json!(events));
    }
    diff
}

/// Collapses whitespace, the only difference Keycloak's parser irons out.
fn normalize_policy(policy: &str) -> String {
    policy.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The CONFIGURE_TOTP representation to PUT, or `None` when it already is
/// enabled and default (MFA required) or not default (MFA optional).
pub fn totp_patch(current: &Value, mfa_required: bool) -> Option<Value> {
    let enabled = current.get("enabled").and_then(Value::as_bool) == Some(true);
    let default = current.get("defaultAction").and_then(Value::as_bool) == Some(true);
    let want_enabled = enabled || mfa_required;
    if enabled == want_enabled && default == mfa_required {
        return None;
    }
    let mut rep = current.as_object().cloned().unwrap_or_default();
    rep.insert("enabled".into(), json!(want_enabled));
    rep.insert("defaultAction".into(), json!(mfa_required));
    Some(Value::Object(rep))
}

/// Whether the `GET /keys` answer lists an active EdDSA signing key.
pub fn has_active_eddsa_key(keys: &Value) -> bool {
    keys.get("keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|k| {
            k.get("algorithm").and_then(Value::as_str) == Some(SIGNATURE_ALGORITHM)
                && k.get("status").and_then(Value::as_str) == Some("ACTIVE")
        })
}

/// Attribute maps compared with each value list as a set, since Keycloak
/// does not promise to keep the order of multi-valued attributes.
pub fn group_attributes_equal(current: &Value, desired: &BTreeMap<String, Vec<String>>) -> bool {
    let as_sets = |m: BTreeMap<String, Vec<String>>| -> BTreeMap<String, BTreeSet<String>> {
        m.into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect()
    };
    let current: BTreeMap<String, Vec<String>> = current
        .get("attributes")
        .cloned()
        .and_then(|a| serde_json::from_value(a).ok())
        .unwrap_or_default();
    as_sets(current) == as_sets(desired.clone())
}

fn desired_mapper_config() -> Map<String, Value> {
    [
        ("claim.name", SCOPE_CLAIM),
        ("full.path", "true"),
        ("access.token.claim", "true"),
        ("id.token.claim", "true"),
        ("userinfo.token.claim", "true"),
        ("introspection.token.claim", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), json!(v)))
    .collect()
}

fn mapper_representation() -> Value {
    json!({
        "name": MAPPER_NAME,
        "protocol": PROTOCOL,
        "protocolMapper": MAPPER_TYPE,
        "config": desired_mapper_config(),
    })
}

fn scope_representation() -> Value {
    json!({
        "name": SCOPE_NAME,
        "protocol": PROTOCOL,
        "attributes": {
            "include.in.token.scope": "false",
            "display.on.consent.screen": "false",
        },
        "protocolMappers": [mapper_representation()],
    })
}

fn find_mapper(scope: &Value) -> Option<&Value> {
    scope
        .get("protocolMappers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|m| m.get("name").and_then(Value::as_str) == Some(MAPPER_NAME))
}

/// The mapper representation to PUT, or `None` when its type and managed
/// config keys already match; unmanaged config keys are kept.
pub fn mapper_patch(current: &Value) -> Option<Value> {
    let config = current.get("config").and_then(Value::as_object);
    let config_matches = desired_mapper_config()
        .iter()
        .all(|(k, v)| config.and_then(|c| c.get(k)) == Some(v));
    let type_matches = current.get("protocolMapper").and_then(Value::as_str) == Some(MAPPER_TYPE)
        && current.get("protocol").and_then(Value::as_str) == Some(PROTOCOL);
    if config_matches && type_matches {
        return None;
    }
    let mut rep = current.as_object().cloned().unwrap_or_default();
    let mut merged = config.cloned().unwrap_or_default();
    merged.extend(desired_mapper_config());
    rep.insert("protocol".into(), json!(PROTOCOL));
    rep.insert("protocolMapper".into(), json!(MAPPER_TYPE));
    rep.insert("config".into(), Value::Object(merged));
    Some(Value::Object(rep))
}

/// An organization as Ossature wants it; its name is its alias.
fn organization_body(desired: &OrganizationSettings) -> Value {
    json!({
        "name": desired.alias, "alias": desired.alias, "enabled": true,
        "description": desired.description,
    })
}

/// Created by someone else between our read and our create: the next
/// reconcile finds it.
fn raced(action: &str) -> BackendError {
    BackendError::Refused {
        backend: Backend::Keycloak,
        action: action.into(),
        status: StatusCode::CONFLICT.as_u16(),
        body: "it appeared after it was looked up; it is read again on retry".into(),
    }
}

/// The client fields Ossature manages.
fn client_fields(desired: &ClientSettings) -> Value {
    json!({
        "name": desired.name,
        "enabled": true,
        "publicClient": true,
        "standardFlowEnabled": true,
        "directAccessGrantsEnabled": true,
        "redirectUris": desired.redirect_uris,
        "attributes": {
            "access.token.lifespan": desired.access_token_lifespan_seconds.to_string(),
        },
    })
}

/// The whole representation of a new client.
fn new_client(desired: &ClientSettings) -> Value {
    let mut body = client_fields(desired);
    body["clientId"] = json!(desired.client_id);
    body["protocol"] = json!(PROTOCOL);
    body["protocolMappers"] = json!(desired.mappers);
    body["defaultClientScopes"] = json!(desired.default_scopes);
    body
}

/// The managed client fields that differ, as a partial representation.
pub fn client_patch(current: &Value, desired: &ClientSettings) -> Option<Value> {
    let want = client_fields(desired);
    let mut diff = Map::new();
    for (key, value) in want.as_object().into_iter().flatten() {
        if key == "redirectUris" {
            // A set in Keycloak: its order is not ours.
            let set = |v: Option<&Value>| -> BTreeSet<String> {
                v.and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|u| u.as_str().map(String::from))
                    .collect()
            };
            if set(current.get(key)) != set(Some(value)) {
                diff.insert(key.clone(), value.clone());
            }
        } else if key == "attributes" {
            let differs = value
                .as_object()
                .into_iter()
                .flatten()
                .any(|(k, v)| current.get("attributes").and_then(|a| a.get(k)) != Some(v));
            if differs {
                diff.insert(key.clone(), value.clone());
            }
        } else if current.get(key) != Some(value) {
            diff.insert(key.clone(), value.clone());
        }
    }
    (!diff.is_empty()).then_some(Value::Object(diff))
}

/// Merges `patch` into `target`; objects key by key (attributes others set stay).
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// Whether a live protocol mapper has the wanted type and config.
fn mapper_matches(current: &Value, wanted: &Value) -> bool {
    current.get("protocolMapper") == wanted.get("protocolMapper")
        && wanted
            .get("config")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .all(|(k, v)| current.get("config").and_then(|c| c.get(k)) == Some(v))
}

fn lists_id(list: &Value, id: &str) -> bool {
    list.as_array()
        .into_iter()
        .flatten()
        .any(|s| s.get("id").and_then(Value::as_str) == Some(id))
}

fn id_from_location(location: &str) -> Option<&str> {
    location.rsplit('/').next().filter(|id| !id.is_empty())
}

fn group_path(path: &[String]) -> String {
    path.iter().map(|s| format!("/{s}")).collect()
}

/// Names go into URL path segments and Keycloak's "/a/b" paths, so a '/'
/// inside one would address a different group.
fn check_path(path: &[String], action: &str) -> Result<(), BackendError> {
    if path.is_empty() || path.iter().any(|s| s.is_empty() || s.contains('/')) {
        return Err(BackendError::Refused {
            backend: Backend::Keycloak,
            action: action.into(),
            status: StatusCode::BAD_REQUEST.as_u16(),
            body: format!("invalid group path {path:?}: names must be non-empty and without '/'"),
        });
    }
    Ok(())
}

/// Appends percent-encoded segments; the base was checked to have a path.
fn push_segments<S: AsRef<str>>(url: &mut Url, segments: &[S]) {
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty()
            .extend(segments.iter().map(AsRef::as_ref));
    }
}

fn str_field<'a>(value: &'a Value, key: &str, action: &str) -> Result<&'a str, BackendError> {
    value
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| unreadable(action, &format!("no {key:?} field")))
}

fn deletion(answer: Answer, action: &str) -> Result<Change, BackendError> {
    match answer.status {
        s if s.is_success() => Ok(Change::Deleted),
        StatusCode::NOT_FOUND => Ok(Change::Absent),
        _ => Err(refused(action, &answer)),
    }
}

fn unreachable(source: reqwest::Error) -> BackendError {
    BackendError::Unreachable {
        backend: Backend::Keycloak,
        source,
    }
}

fn refused(action: &str, answer: &Answer) -> BackendError {
    BackendError::Refused {
        backend: Backend::Keycloak,
        action: action.into(),
        status: answer.status.as_u16(),
        body: truncate(&answer.body),
    }
}

fn not_found(action: &str, body: &str) -> BackendError {
    BackendError::Refused {
        backend: Backend::Keycloak,
        action: action.into(),
        status: StatusCode::NOT_FOUND.as_u16(),
        body: body.into(),
    }
}

fn unreadable(action: &str, detail: &str) -> BackendError {
    BackendError::Unreadable {
        backend: Backend::Keycloak,
        action: action.into(),
        detail: detail.into(),
    }
}

/// Keeps error messages, and so Events and conditions, short.
fn truncate(body: &str) -> String {
    match body.char_indices().nth(BODY_LIMIT) {
        Some((end, _)) => format!("{}…", &body[..end]),
        None => body.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RealmSettings {
        RealmSettings {
            organizations: false,
            name: "acme".into(),
            display_name: "Acme".into(),
            registration_allowed: false,
            verify_email: true,
            mfa_required: true,
            password_policy: "length(12) and digits(1)".into(),
            access_token_lifespan_seconds: 300,
        }
    }

    /// The realm as Keycloak returns it once `settings()` is applied.
    fn applied() -> Value {
        json!({
            "id": "0b1",
            "realm": "acme",
            "displayName": "Acme",
            "enabled": true,
            "registrationAllowed": false,
            "verifyEmail": true,
            "bruteForceProtected": true,
            "eventsEnabled": true,
            "enabledEventTypes": ["LOGOUT", "LOGIN_ERROR", "LOGIN"],
            "defaultSignatureAlgorithm": "EdDSA",
            "passwordPolicy": "length(12) and digits(1)",
            "accessTokenLifespan": 300,
            "sslRequired": "external",
        })
    }

    #[test]
    fn an_empty_realm_needs_every_managed_field() {
        let patch = realm_patch(&Value::Null, &settings()).unwrap();
        let keys: BTreeSet<&str> = patch
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from([
                "accessTokenLifespan",
                "bruteForceProtected",
                "defaultSignatureAlgorithm",
                "displayName",
                "enabled",
                "enabledEventTypes",
                "eventsEnabled",
                "passwordPolicy",
                "registrationAllowed",
                "verifyEmail",
            ])
        );
        assert_eq!(
            patch["enabledEventTypes"],
            json!(["LOGIN", "LOGIN_ERROR", "LOGOUT"])
        );
    }

    #[test]
    fn an_applied_realm_needs_nothing() {
        assert_eq!(realm_patch(&applied(), &settings()), None);
    }

    #[test]
    fn only_differing_fields_are_patched() {
        let mut current = applied();
        current["accessTokenLifespan"] = json!(60);
        current["bruteForceProtected"] = json!(false);
        assert_eq!(
            realm_patch(&current, &settings()),
            Some(json!({ "accessTokenLifespan": 300, "bruteForceProtected": true }))
        );
    }

    #[test]
    fn policy_whitespace_is_not_a_difference() {
        let mut desired = settings();
        desired.password_policy = "  length(12)   and digits(1) ".into();
        assert_eq!(realm_patch(&applied(), &desired), None);
        desired.password_policy = String::new();
        assert_eq!(
            realm_patch(&applied(), &desired),
            Some(json!({ "passwordPolicy": "" }))
        );
        let mut unset = applied();
        unset.as_object_mut().unwrap().remove("passwordPolicy");
        assert_eq!(realm_patch(&unset, &desired), None);
    }

    #[test]
    fn extra_event_types_are_kept_and_missing_login_types_added() {
        let mut current = applied();
        current["enabledEventTypes"] = json!(["LOGIN", "LOGIN_ERROR", "LOGOUT", "REGISTER"]);
        assert_eq!(realm_patch(&current, &settings()), None);
        current["enabledEventTypes"] = json!(["REGISTER", "LOGIN"]);
        assert_eq!(
            realm_patch(&current, &settings()),
            Some(json!({ "enabledEventTypes": ["LOGIN", "LOGIN_ERROR", "LOGOUT", "REGISTER"] }))
        );
    }

    #[test]
    fn totp_is_default_only_when_mfa_is_required() {
        let off = json!({ "alias": TOTP, "enabled": true, "defaultAction": false, "priority": 10 });
        assert_eq!(totp_patch(&off, false), None);
        let on = totp_patch(&off, true).unwrap();
        assert_eq!(
            on,
            json!({ "alias": TOTP, "enabled": true, "defaultAction": true, "priority": 10 })
        );
        assert_eq!(totp_patch(&on, true), None);
        assert_eq!(totp_patch(&on, false), Some(off));
        let disabled = json!({ "alias": TOTP, "enabled": false, "defaultAction": false });
        assert_eq!(totp_patch(&disabled, false), None);
        assert_eq!(
            totp_patch(&disabled, true),
            Some(json!({ "alias": TOTP, "enabled": true, "defaultAction": true }))
        );
    }

    #[test]
    fn only_an_active_eddsa_key_counts() {
        let keys = |status: &str, algorithm: &str| {
            json!({ "keys": [
                { "algorithm": "RS256", "status": "ACTIVE" },
                { "algorithm": algorithm, "status": status },
            ]})
        };
        assert!(has_active_eddsa_key(&keys("ACTIVE", "EdDSA")));
        assert!(!has_active_eddsa_key(&keys("PASSIVE", "EdDSA")));
        assert!(!has_active_eddsa_key(&keys("ACTIVE", "ES256")));
        assert!(!has_active_eddsa_key(&json!({})));
    }

    #[test]
    fn group_attributes_compare_values_as_sets() {
        let desired = BTreeMap::from([("scopePath".to_string(), vec!["/a".into(), "/b".into()])]);
        let group = |attributes: Value| json!({ "id": "1", "attributes": attributes });
        assert!(group_attributes_equal(
            &group(json!({ "scopePath": ["/b", "/a"] })),
            &desired
        ));
        assert!(!group_attributes_equal(
            &group(json!({ "scopePath": ["/a"] })),
            &desired
        ));
        assert!(!group_attributes_equal(
            &group(json!({ "scopePath": ["/a", "/b"], "extra": ["x"] })),
            &desired
        ));
        assert!(group_attributes_equal(
            &json!({ "id": "1" }),
            &BTreeMap::new()
        ));
    }

    #[test]
    fn mapper_patch_restores_managed_config_and_keeps_the_rest() {
        let mut current = mapper_representation();
        current["id"] = json!("m1");
        current["config"]["lightweight.claim"] = json!("false");
        assert_eq!(mapper_patch(&current), None);

        current["config"]["full.path"] = json!("false");
        let patch = mapper_patch(&current).unwrap();
        assert_eq!(patch["id"], json!("m1"));
        assert_eq!(patch["config"]["full.path"], json!("true"));
        assert_eq!(patch["config"]["claim.name"], json!(SCOPE_CLAIM));
        assert_eq!(patch["config"]["lightweight.claim"], json!("false"));
    }

    #[test]
    fn helpers() {
        assert_eq!(
            id_from_location("http://kc/admin/realms/r/client-scopes/abc-1"),
            Some("abc-1")
        );
        assert_eq!(id_from_location("http://kc/x/"), None);
        assert_eq!(
            group_path(&["global".into(), "eu".into()]),
            "/global/eu".to_string()
        );
        assert!(check_path(&["a/b".into()], "x").is_err());
        assert!(check_path(&[], "x").is_err());
        assert!(check_path(&["a".into(), "b c".into()], "x").is_ok());
        let long = "é".repeat(BODY_LIMIT + 5);
        assert_eq!(truncate(&long).chars().count(), BODY_LIMIT + 1);
        assert_eq!(truncate("short"), "short");
    }

    #[test]
    fn segments_are_percent_encoded() {
        let mut url = Url::parse("http://kc:8080/auth/").unwrap();
        push_segments(&mut url, &["admin", "group-by-path", "a b", "c?d"]);
        assert_eq!(
            url.as_str(),
            "http://kc:8080/auth/admin/group-by-path/a%20b/c%3Fd"
        );
    }
}
