//! Keycloak adapter: realms, organizations, clients, nested groups,
//! identity providers and the group-path token claim, through the typed
//! admin client of the `keycloak` crate. Every method reads first and writes
//! only the fields that differ, so an unchanged object costs no writes; every
//! call is counted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::time::{Duration, Instant};

use keycloak::types::{
    ClientRepresentation, ClientScopeRepresentation, ComponentExportRepresentation,
    ComponentRepresentation, GroupRepresentation, IdentityProviderMapperRepresentation,
    IdentityProviderRepresentation, KeysMetadataRepresentation, OrganizationRepresentation,
    ProtocolMapperRepresentation, RealmRepresentation, RequiredActionProviderRepresentation,
};
use keycloak::{
    DefaultResponse, KeycloakAdmin, KeycloakAdminToken, KeycloakError, KeycloakTokenSupplier,
};
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Mutex;

use super::{Backend, BackendError, CALL_TIMEOUT, Calls, Change, Verb};
pub use ossature_model::identity::{
    ClientSettings, GroupHome, IdentityProviderSettings, MANAGED_CONFIG, ORGANIZATION_SCOPE,
    OrganizationSettings, RealmSettings, SCOPE_CLAIM, SCOPE_NAME,
};

/// Name of the group-membership mapper inside [`SCOPE_NAME`].
pub const MAPPER_NAME: &str = "scopes";
const MAPPER_TYPE: &str = "oidc-group-membership-mapper";
const ORGANIZATION_GROUPS_MAPPER: &str = "oidc-organization-group-membership-mapper";
const PROTOCOL: &str = "openid-connect";
const TOTP: &str = "CONFIGURE_TOTP";
const TOTP_NAME: &str = "Configure OTP";
const SIGNATURE_ALGORITHM: &str = "EdDSA";
const KEY_PROVIDER_TYPE: &str = "org.keycloak.keys.KeyProvider";
/// Event types every realm keeps, so logins can be audited.
pub const LOGIN_EVENTS: [&str; 3] = ["LOGIN", "LOGIN_ERROR", "LOGOUT"];
/// Refresh the admin token this long before it expires, so a call never
/// races its expiry.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);
const BODY_LIMIT: usize = 300;
/// Realm attribute, read once at creation and not kept, that has Keycloak
/// make its built-in client scopes although the new realm names one.
const CREATE_DEFAULT_SCOPES: &str = "CreateDefaultClientScopes";

/// Client for one Keycloak server, authenticated as a master-realm admin.
pub struct Keycloak {
    admin: KeycloakAdmin<AdminToken>,
    base: Url,
    calls: Calls,
}

/// The master-realm admin token, cached and fetched again shortly before
/// it expires; the crate asks for it on every call.
struct AdminToken {
    http: reqwest::Client,
    user: String,
    password: String,
    calls: Calls,
    cached: Mutex<Option<Token>>,
}

struct Token {
    value: String,
    refresh_at: Instant,
}

#[async_trait::async_trait]
impl KeycloakTokenSupplier for AdminToken {
    async fn get(&self, url: &str) -> Result<String, KeycloakError> {
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(token.value.clone());
        }
        self.calls.record(Backend::Keycloak, Verb::Read);
        let fetched_at = Instant::now();
        let issued = KeycloakAdminToken::acquire(url, &self.user, &self.password, &self.http)
            .await
            .map_err(token_refused)?;
        let lifetime = Duration::from_secs(issued.expires_in() as u64);
        let value = issued.access_token().to_owned();
        *cached = Some(Token {
            value: value.clone(),
            refresh_at: fetched_at + lifetime.saturating_sub(TOKEN_MARGIN.min(lifetime / 2)),
        });
        Ok(value)
    }
}

/// Wrong admin credentials are 401 from older releases, 400 invalid_grant
/// from newer ones: either way, unauthorized.
fn token_refused(error: KeycloakError) -> KeycloakError {
    match error {
        KeycloakError::HttpFailure { status, body, text } => KeycloakError::HttpFailure {
            status: if text.contains("invalid_grant") {
                StatusCode::UNAUTHORIZED.as_u16()
            } else {
                status
            },
            body,
            text: format!("issuing an admin token: {text}"),
        },
        other => other,
    }
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
        let token = AdminToken {
            http: http.clone(),
            user: admin_user.into(),
            password: admin_password.into(),
            calls: calls.clone(),
            cached: Mutex::new(None),
        };
        // The crate appends "/admin/..." to the URL as text.
        let admin = KeycloakAdmin::new(base.as_str().trim_end_matches('/'), token, http);
        Ok(Self { admin, base, calls })
    }

    /// Creates the realm or updates only the managed fields that differ.
    pub async fn ensure_realm(&self, desired: &RealmSettings) -> Result<Change, BackendError> {
        let name = desired.name.as_str();
        let action = format!("read realm {name}");
        let Some(current) = self.read(&action, self.admin.realm_get(name)).await? else {
            return self
                .create_realm(desired, None)
                .await?
                .ok_or_else(|| raced(&format!("create realm {name}")));
        };
        // The key comes before the algorithm switch so signing never lacks a key.
        let mut wrote = self.ensure_eddsa_key(name).await?;
        if let Some(patch) = realm_patch(&current, desired) {
            let action = format!("update realm {name}");
            self.write(&action, self.admin.realm_put(name, patch))
                .await?;
            wrote = true;
        }
        wrote |= self.ensure_totp(name, desired.mfa_required).await?;
        Ok(changed(wrote))
    }

    /// Creates the realm whole in one call, without looking it up first:
    /// settings, keys, required actions, for a tenant's own realm the scope
    /// claim, and `client` if given. `None` when the realm exists already.
    pub async fn create_realm(
        &self,
        desired: &RealmSettings,
        client: Option<&ClientSettings>,
    ) -> Result<Option<Change>, BackendError> {
        let action = format!("create realm {}", desired.name);
        let mut realm = new_realm(desired);
        if let Some(client) = client {
            realm.clients = Some(vec![new_client(client, &action)?]);
        }
        let created = self.create(&action, self.admin.post(realm)).await?;
        Ok(created.map(|_| Change::Created))
    }

    pub async fn delete_realm(&self, name: &str) -> Result<Change, BackendError> {
        let action = format!("delete realm {name}");
        self.delete(&action, self.admin.realm_delete(name)).await
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
        let (parent, name) = path.split_at(path.len() - 1);
        let wanted = GroupRepresentation {
            name: Some(name[0].clone()),
            attributes: Some(attributes.clone().into_iter().collect()),
            ..Default::default()
        };
        if let Some(current) = self.group(home, path).await? {
            if group_attributes_equal(&current, attributes) {
                return Ok(Change::Unchanged);
            }
            let action = format!("update group {shown} in {home}");
            let id = id_of(&current.id, &action)?;
            self.put_group(home, id, wanted, &action).await?;
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
        let parent_id = if parent.is_empty() {
            None
        } else {
            let Some(parent_group) = self.group(home, parent).await? else {
                return Err(not_found(
                    &action,
                    &format!("parent group {} does not exist", group_path(parent)),
                ));
            };
            Some(id_of(&parent_group.id, &action)?.to_owned())
        };
        let parent_id = parent_id.as_deref();
        let Some(existing) = existing else {
            self.post_group(home, parent_id, wanted.clone(), &action)
                .await?;
            // An organization drops the attributes of a new child group:
            // they are written once it exists.
            if let GroupHome::Organization { .. } = home
                && !attributes.is_empty()
                && let Some(created) = self.group(home, path).await?
                && !group_attributes_equal(&created, attributes)
            {
                let id = id_of(&created.id, &action)?;
                self.put_group(home, id, wanted, &action).await?;
            }
            return Ok(Change::Created);
        };
        // With the id of an existing group, Keycloak moves it under the
        // parent; it keeps the group's attributes, so they are written after.
        let id = id_of(&existing.id, &action)?;
        let moved = GroupRepresentation {
            id: Some(id.to_owned()),
            name: wanted.name.clone(),
            ..Default::default()
        };
        self.post_group(home, parent_id, moved, &action).await?;
        if !group_attributes_equal(&existing, attributes) {
            let action = format!("update group {shown} in {home}");
            self.put_group(home, id, wanted, &action).await?;
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
        let id = id_of(&current.id, &action)?;
        let admin = &self.admin;
        match home {
            GroupHome::Realm(realm) => {
                self.delete(&action, admin.realm_groups_with_group_id_delete(realm, id))
                    .await
            }
            GroupHome::Organization { realm, id: org } => {
                let call = admin
                    .realm_organizations_with_org_id_groups_with_group_id_delete(realm, org, id);
                self.delete(&action, call).await
            }
        }
    }

    /// The group at `path`, with its attributes.
    async fn group(
        &self,
        home: GroupHome<'_>,
        path: &[String],
    ) -> Result<Option<GroupRepresentation>, BackendError> {
        let action = format!("read group {} in {home}", group_path(path));
        // One path parameter: the crate encodes the '/'s, Keycloak decodes them.
        let joined = path.join("/");
        let admin = &self.admin;
        match home {
            GroupHome::Realm(realm) => {
                let call = admin.realm_group_by_path_with_path_get(realm, &joined);
                self.read(&action, call).await
            }
            // An organization answers a lookup by path briefly, without the
            // attributes; the group itself has them.
            GroupHome::Organization { realm, id } => {
                let call = admin
                    .realm_organizations_with_org_id_groups_group_by_path_with_path_get(
                        realm, id, &joined, None,
                    );
                let Some(brief) = self.read(&action, call).await? else {
                    return Ok(None);
                };
                let group = id_of(&brief.id, &action)?;
                let call = admin.realm_organizations_with_org_id_groups_with_group_id_get(
                    realm, id, group, None,
                );
                self.read(&action, call).await
            }
        }
    }

    /// Creates (or, given an existing id, moves) a group under `parent`, or
    /// at the top of `home`.
    async fn post_group(
        &self,
        home: GroupHome<'_>,
        parent: Option<&str>,
        group: GroupRepresentation,
        action: &str,
    ) -> Result<(), BackendError> {
        let admin = &self.admin;
        match (home, parent) {
            (GroupHome::Realm(realm), None) => {
                self.write(action, admin.realm_groups_post(realm, group))
                    .await
            }
            (GroupHome::Realm(realm), Some(parent)) => {
                let call = admin.realm_groups_with_group_id_children_post(realm, parent, group);
                self.write(action, call).await
            }
            (GroupHome::Organization { realm, id }, None) => {
                let call = admin.realm_organizations_with_org_id_groups_post(realm, id, group);
                self.write(action, call).await
            }
            (GroupHome::Organization { realm, id }, Some(parent)) => {
                let call = admin
                    .realm_organizations_with_org_id_groups_with_group_id_children_post(
                        realm, id, parent, group,
                    );
                self.write(action, call).await
            }
        }
        .map(drop)
    }

    async fn put_group(
        &self,
        home: GroupHome<'_>,
        id: &str,
        group: GroupRepresentation,
        action: &str,
    ) -> Result<(), BackendError> {
        let admin = &self.admin;
        match home {
            GroupHome::Realm(realm) => {
                let call = admin.realm_groups_with_group_id_put(realm, id, group);
                self.write(action, call).await
            }
            GroupHome::Organization { realm, id: org } => {
                let call = admin.realm_organizations_with_org_id_groups_with_group_id_put(
                    realm, org, id, group,
                );
                self.write(action, call).await
            }
        }
        .map(drop)
    }

    /// Whether the realm exists (one read; the cost does not grow with realms).
    pub async fn realm_exists(&self, name: &str) -> Result<bool, BackendError> {
        let action = format!("read realm {name}");
        Ok(self
            .read(&action, self.admin.realm_get(name))
            .await?
            .is_some())
    }

    /// The organization with this alias, found through the alias index.
    pub async fn organization(
        &self,
        realm: &str,
        alias: &str,
    ) -> Result<Option<OrganizationRepresentation>, BackendError> {
        let action = format!("find organization {alias} in realm {realm}");
        let call = self.admin.realm_organizations_get(
            realm,
            Some(false),
            Some(true),
            None,
            None,
            Some(format!("alias:{alias}")),
            None,
        );
        let found = self.read(&action, call).await?;
        let found = found.ok_or_else(|| realm_missing(&action, realm))?;
        Ok(found
            .into_iter()
            .find(|o| o.alias.as_deref() == Some(alias)))
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
        let id = id_of(&current.id, &action)?.to_owned();
        let text = |field: &Option<String>| field.as_deref().unwrap_or_default().to_owned();
        let same = text(&current.name) == alias
            && text(&current.description) == desired.description
            && current.enabled == Some(true);
        if same {
            return Ok((Change::Unchanged, id));
        }
        // PUT replaces the domains too: keep the ones Keycloak holds.
        let update = OrganizationRepresentation {
            id: Some(id.clone()),
            domains: Some(current.domains.unwrap_or_default()),
            ..organization_body(desired)
        };
        let call = self
            .admin
            .realm_organizations_with_org_id_put(realm, &id, update);
        self.write(&action, call).await?;
        Ok((Change::Updated, id))
    }

    /// Creates the organization without looking it up first, for a tenant
    /// never provisioned: `None` when it exists already.
    pub async fn create_organization(
        &self,
        realm: &str,
        desired: &OrganizationSettings,
    ) -> Result<Option<(Change, String)>, BackendError> {
        let action = format!("create organization {} in realm {realm}", desired.alias);
        let call = self
            .admin
            .realm_organizations_post(realm, organization_body(desired));
        let Some(created) = self.create(&action, call).await? else {
            return Ok(None);
        };
        Ok(Some((Change::Created, new_id(&created, &action)?)))
    }

    /// Creates the client without looking it up first: `None` when it exists.
    pub async fn create_client(
        &self,
        realm: &str,
        desired: &ClientSettings,
    ) -> Result<Option<Change>, BackendError> {
        let action = format!("create client {} in realm {realm}", desired.client_id);
        let call = self
            .admin
            .realm_clients_post(realm, new_client(desired, &action)?);
        let created = self.create(&action, call).await?;
        Ok(created.map(|_| Change::Created))
    }

    /// Deletes the organization with this alias, and with it its groups.
    pub async fn delete_organization(
        &self,
        realm: &str,
        alias: &str,
    ) -> Result<Change, BackendError> {
        let action = format!("delete organization {alias} in realm {realm}");
        let found = self.organization(realm, alias).await;
        let Some(id) = gone_with_realm(found)?.and_then(|o| o.id) else {
            return Ok(Change::Absent);
        };
        let call = self
            .admin
            .realm_organizations_with_org_id_delete(realm, &id);
        self.delete(&action, call).await
    }

    /// The client with this clientId (a lookup by its unique key).
    async fn client(
        &self,
        realm: &str,
        client_id: &str,
    ) -> Result<Option<ClientRepresentation>, BackendError> {
        let action = format!("read client {client_id} of realm {realm}");
        let call = self.admin.realm_clients_get(
            realm,
            Some(client_id.to_owned()),
            None,
            None,
            None,
            None,
            None,
        );
        let found = self.read(&action, call).await?;
        let found = found.ok_or_else(|| realm_missing(&action, realm))?;
        Ok(found
            .into_iter()
            .find(|c| c.client_id.as_deref() == Some(client_id)))
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
        let id = id_of(&current.id, &action)?;
        let admin = &self.admin;
        let mut wrote = false;
        if let Some(update) = client_patch(&current, desired) {
            self.write(
                &action,
                admin.realm_clients_with_client_uuid_put(realm, id, update),
            )
            .await?;
            wrote = true;
        }
        let mappers = current.protocol_mappers.as_deref().unwrap_or_default();
        for wanted in typed::<ProtocolMapperRepresentation>(&desired.mappers, &action)? {
            match mappers.iter().find(|m| m.name == wanted.name) {
                None => {
                    let call = admin.realm_clients_with_client_uuid_protocol_mappers_models_post(
                        realm, id, wanted,
                    );
                    self.write(&action, call).await?;
                }
                Some(existing)
                    if existing.protocol_mapper != wanted.protocol_mapper
                        || !has_config(
                            existing.config.as_ref(),
                            wanted.config.iter().flatten(),
                        ) =>
                {
                    let mapper_id = id_of(&existing.id, &action)?;
                    let body = ProtocolMapperRepresentation {
                        id: Some(mapper_id.to_owned()),
                        ..wanted
                    };
                    let call = admin
                        .realm_clients_with_client_uuid_protocol_mappers_models_with_id_put(
                            realm, id, mapper_id, body,
                        );
                    self.write(&action, call).await?;
                }
                Some(_) => continue,
            }
            wrote = true;
        }
        let defaults: BTreeSet<&str> = current
            .default_client_scopes
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        let missing: Vec<&String> = desired
            .default_scopes
            .iter()
            .filter(|s| !defaults.contains(s.as_str()))
            .collect();
        if !missing.is_empty() {
            let scopes = self.client_scopes(realm, &action).await?;
            for name in missing {
                let Some(scope_id) = scope_named(&scopes, name).and_then(|s| s.id.as_deref())
                else {
                    return Err(not_found(
                        &action,
                        &format!("client scope {name} does not exist"),
                    ));
                };
                let call = admin
                    .realm_clients_with_client_uuid_default_client_scopes_with_client_scope_id_put(
                        realm, id, scope_id,
                    );
                self.write(&action, call).await?;
                wrote = true;
            }
        }
        Ok(changed(wrote))
    }

    pub async fn delete_client(
        &self,
        realm: &str,
        client_id: &str,
    ) -> Result<Change, BackendError> {
        let action = format!("delete client {client_id} of realm {realm}");
        let found = self.client(realm, client_id).await;
        let Some(id) = gone_with_realm(found)?.and_then(|c| c.id) else {
            return Ok(Change::Absent);
        };
        let call = self.admin.realm_clients_with_client_uuid_delete(realm, &id);
        self.delete(&action, call).await
    }

    /// The realm's client scopes; a missing realm is an error.
    async fn client_scopes(
        &self,
        realm: &str,
        action: &str,
    ) -> Result<Vec<ClientScopeRepresentation>, BackendError> {
        let found = self
            .read(action, self.admin.realm_client_scopes_get(realm))
            .await?;
        found.ok_or_else(|| realm_missing(action, realm))
    }

    /// In a shared realm: the built-in `organization` client scope also maps
    /// each member's organization groups (the tenant's scopes) into tokens.
    pub async fn ensure_organization_claims(&self, realm: &str) -> Result<Change, BackendError> {
        let action = format!("read client scopes of realm {realm}");
        let scopes = self.client_scopes(realm, &action).await?;
        let scope = scope_named(&scopes, ORGANIZATION_SCOPE).ok_or_else(|| {
            not_found(
                &action,
                "client scope organization does not exist (organizations are off?)",
            )
        })?;
        let has_groups = scope
            .protocol_mappers
            .iter()
            .flatten()
            .any(|m| m.protocol_mapper.as_deref() == Some(ORGANIZATION_GROUPS_MAPPER));
        if has_groups {
            return Ok(Change::Unchanged);
        }
        let id = id_of(&scope.id, &action)?;
        let mapper = ProtocolMapperRepresentation {
            name: Some("organization groups".into()),
            protocol: Some(PROTOCOL.into()),
            protocol_mapper: Some(ORGANIZATION_GROUPS_MAPPER.into()),
            config: Some(strings(&[
                ("access.token.claim", "true"),
                ("id.token.claim", "true"),
                ("userinfo.token.claim", "true"),
                ("introspection.token.claim", "true"),
            ])),
            ..Default::default()
        };
        let action = format!("map organization groups into tokens of realm {realm}");
        let call = self
            .admin
            .realm_client_scopes_with_client_scope_id_protocol_mappers_models_post(
                realm, id, mapper,
            );
        self.write(&action, call).await?;
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
        let action = format!("configure identity provider {alias} in realm {realm}");
        let admin = &self.admin;
        let call = admin.realm_identity_provider_instances_with_alias_get(realm, alias);
        let current = self.read(&action, call).await?;
        let mut wrote = false;
        let stale = |current: &IdentityProviderRepresentation| {
            !has_config(current.config.as_ref(), &desired.config)
                || current.display_name.as_deref() != Some(desired.display_name.as_str())
                || current.enabled != Some(true)
        };
        if current.as_ref().is_none_or(stale) {
            let mut config = match &desired.metadata_url {
                Some(from) => self.import_saml(realm, from).await?,
                None => current
                    .as_ref()
                    .and_then(|c| c.config.clone())
                    .unwrap_or_default(),
            };
            config.extend(desired.config.clone());
            if let Some(secret) = &desired.secret {
                config.insert("clientSecret".into(), secret.clone());
            }
            let body = IdentityProviderRepresentation {
                alias: Some(alias.into()),
                display_name: Some(desired.display_name.clone()),
                provider_id: Some(desired.provider.into()),
                enabled: Some(true),
                trust_email: Some(true),
                first_broker_login_flow_alias: Some("first broker login".into()),
                config: Some(config),
                ..Default::default()
            };
            match current {
                None => {
                    let call = admin.realm_identity_provider_instances_post(realm, body);
                    self.write(&action, call).await?
                }
                Some(_) => {
                    let call =
                        admin.realm_identity_provider_instances_with_alias_put(realm, alias, body);
                    self.write(&action, call).await?
                }
            };
            wrote = true;
        }
        wrote |= self.ensure_provider_mappers(realm, desired).await?;
        if let Some(id) = organization {
            let call = admin.realm_organizations_with_org_id_identity_providers_with_alias_get(
                realm, id, alias,
            );
            if self.read(&action, call).await?.is_none() {
                let call = admin.realm_organizations_with_org_id_identity_providers_post(
                    realm,
                    id,
                    alias.into(),
                );
                self.write(&action, call).await?;
                wrote = true;
            }
        }
        Ok(changed(wrote))
    }

    /// The config Keycloak reads from a SAML provider's metadata.
    async fn import_saml(
        &self,
        realm: &str,
        from: &str,
    ) -> Result<HashMap<String, String>, BackendError> {
        let action = format!("import SAML metadata from {from} into realm {realm}");
        let body = HashMap::from([
            ("providerId".to_owned(), Value::from("saml")),
            ("fromUrl".to_owned(), Value::from(from)),
        ]);
        let call = self
            .admin
            .realm_identity_provider_import_config_post(realm, body);
        self.write(&action, call).await
    }

    /// The provider's `ossature-` mappers: exactly the desired ones.
    async fn ensure_provider_mappers(
        &self,
        realm: &str,
        desired: &IdentityProviderSettings,
    ) -> Result<bool, BackendError> {
        let alias = desired.alias.as_str();
        let action = format!("configure mappers of identity provider {alias} in realm {realm}");
        let admin = &self.admin;
        let call = admin.realm_identity_provider_instances_with_alias_mappers_get(realm, alias);
        let live = self.read(&action, call).await?.unwrap_or_default();
        let wanted = typed::<IdentityProviderMapperRepresentation>(&desired.mappers, &action)?;
        let names: BTreeSet<String> = wanted.iter().filter_map(|m| m.name.clone()).collect();
        let mut wrote = false;
        for wanted in wanted {
            let existing = live.iter().find(|m| m.name == wanted.name);
            let same = existing.is_some_and(|m| {
                m.identity_provider_mapper == wanted.identity_provider_mapper
                    && has_config(m.config.as_ref(), wanted.config.iter().flatten())
            });
            if same {
                continue;
            }
            match existing.and_then(|m| m.id.clone()) {
                Some(id) => {
                    let body = IdentityProviderMapperRepresentation {
                        id: Some(id.clone()),
                        ..wanted
                    };
                    let call = admin
                        .realm_identity_provider_instances_with_alias_mappers_with_id_put(
                            realm, alias, &id, body,
                        );
                    self.write(&action, call).await?;
                }
                None => {
                    let call = admin.realm_identity_provider_instances_with_alias_mappers_post(
                        realm, alias, wanted,
                    );
                    self.write(&action, call).await?;
                }
            }
            wrote = true;
        }
        for stale in live.iter().filter(|m| {
            m.name
                .as_deref()
                .is_some_and(|n| n.starts_with("ossature-") && !names.contains(n))
        }) {
            let id = id_of(&stale.id, &action)?;
            let call = admin.realm_identity_provider_instances_with_alias_mappers_with_id_delete(
                realm, alias, id,
            );
            self.delete(&action, call).await?;
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
        let admin = &self.admin;
        let listed = match organization {
            Some(id) => {
                let call = admin.realm_organizations_with_org_id_identity_providers_get(realm, id);
                self.read(&action, call).await?
            }
            None => {
                let call = admin.realm_identity_provider_instances_get(
                    realm, None, None, None, None, None, None, None,
                );
                self.read(&action, call).await?
            }
        };
        let mut changes = Vec::new();
        for provider in listed.iter().flatten() {
            let alias = provider.alias.as_deref().unwrap_or_default();
            let ours = provider
                .config
                .as_ref()
                .and_then(|c| c.get(MANAGED_CONFIG))
                .is_some_and(|v| v == "true");
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
        let call = self
            .admin
            .realm_identity_provider_instances_with_alias_delete(realm, alias);
        self.delete(&action, call).await
    }

    /// Where a person's login at the provider comes back (OIDC redirect URI,
    /// SAML assertion consumer), and where the SAML service provider
    /// metadata is published, for the provider's administrators.
    pub fn broker_endpoint(&self, realm: &str, alias: &str) -> String {
        let mut url = self.base.clone();
        push_segments(&mut url, &["realms", realm, "broker", alias, "endpoint"]);
        url.set_query(None);
        url.to_string()
    }

    /// Ensures the `ossature-scopes` client scope exists, is a default scope
    /// for the realm's new clients, and maps full group paths into the
    /// `scopes` claim.
    pub async fn ensure_scope_claim(&self, realm: &str) -> Result<Change, BackendError> {
        let action = format!("read client scopes of realm {realm}");
        let scopes = self.client_scopes(realm, &action).await?;
        let admin = &self.admin;
        let Some(scope) = scope_named(&scopes, SCOPE_NAME) else {
            let action = format!("create client scope {SCOPE_NAME} in realm {realm}");
            let call = admin.realm_client_scopes_post(realm, scope_representation());
            let id = new_id(&self.write(&action, call).await?, &action)?;
            self.make_default_scope(realm, &id).await?;
            return Ok(Change::Created);
        };

        let action = format!("update client scope {SCOPE_NAME} in realm {realm}");
        let id = id_of(&scope.id, &action)?;
        let mut wrote = false;
        match find_mapper(scope) {
            None => {
                let call = admin
                    .realm_client_scopes_with_client_scope_id_protocol_mappers_models_post(
                        realm,
                        id,
                        mapper_representation(),
                    );
                self.write(&action, call).await?;
                wrote = true;
            }
            Some(mapper) => {
                if let Some(patch) = mapper_patch(mapper) {
                    let mapper_id = id_of(&mapper.id, &action)?;
                    let call = admin
                        .realm_client_scopes_with_client_scope_id_protocol_mappers_models_with_id_put(
                            realm, id, mapper_id, patch,
                        );
                    self.write(&action, call).await?;
                    wrote = true;
                }
            }
        }

        let action = format!("read default client scopes of realm {realm}");
        let call = admin.realm_default_default_client_scopes_get(realm);
        let defaults = self.read(&action, call).await?;
        let defaults = defaults.ok_or_else(|| realm_missing(&action, realm))?;
        if !defaults.iter().any(|s| s.id.as_deref() == Some(id)) {
            self.make_default_scope(realm, id).await?;
            wrote = true;
        }
        Ok(changed(wrote))
    }

    async fn make_default_scope(&self, realm: &str, id: &str) -> Result<(), BackendError> {
        let action = format!("make {SCOPE_NAME} a default client scope of realm {realm}");
        let call = self
            .admin
            .realm_default_default_client_scopes_with_client_scope_id_put(realm, id);
        self.write(&action, call).await.map(drop)
    }

    /// Adds a generated Ed25519 key provider unless an active EdDSA key exists.
    async fn ensure_eddsa_key(&self, realm: &str) -> Result<bool, BackendError> {
        let action = format!("read keys of realm {realm}");
        let keys = self.read(&action, self.admin.realm_keys_get(realm)).await?;
        let keys = keys.ok_or_else(|| realm_missing(&action, realm))?;
        if has_active_eddsa_key(&keys) {
            return Ok(false);
        }
        let eddsa = eddsa_key_provider();
        // Without parentId the server attaches the component to this realm.
        let component = ComponentRepresentation {
            name: eddsa.name,
            provider_id: eddsa.provider_id,
            provider_type: Some(KEY_PROVIDER_TYPE.into()),
            config: eddsa.config,
            ..Default::default()
        };
        let action = format!("add an EdDSA key provider to realm {realm}");
        self.write(&action, self.admin.realm_components_post(realm, component))
            .await?;
        Ok(true)
    }

    async fn ensure_totp(&self, realm: &str, mfa_required: bool) -> Result<bool, BackendError> {
        let action = format!("update required action {TOTP} of realm {realm}");
        let admin = &self.admin;
        let call = admin.realm_authentication_required_actions_with_alias_get(realm, TOTP);
        let current = match self.read(&action, call).await? {
            Some(current) => current,
            None if !mfa_required => return Ok(false),
            None => {
                // Unregistered (removed by someone): register it, then configure it.
                let registered = RequiredActionProviderRepresentation {
                    provider_id: Some(TOTP.into()),
                    name: Some(TOTP_NAME.into()),
                    ..Default::default()
                };
                let register = format!("register required action {TOTP} in realm {realm}");
                let call =
                    admin.realm_authentication_register_required_action_post(realm, registered);
                self.write(&register, call).await?;
                RequiredActionProviderRepresentation {
                    alias: Some(TOTP.into()),
                    name: Some(TOTP_NAME.into()),
                    provider_id: Some(TOTP.into()),
                    config: Some(HashMap::new()),
                    ..Default::default()
                }
            }
        };
        let Some(patch) = totp_patch(&current, mfa_required) else {
            return Ok(false);
        };
        let call = admin.realm_authentication_required_actions_with_alias_put(realm, TOTP, patch);
        self.write(&action, call).await?;
        Ok(true)
    }

    /// One counted call; its failure names `action`.
    async fn call<T>(
        &self,
        verb: Verb,
        action: &str,
        call: impl Future<Output = Result<T, KeycloakError>>,
    ) -> Result<T, BackendError> {
        self.calls.record(Backend::Keycloak, verb);
        call.await.map_err(|e| backend_error(action, e))
    }

    /// A read that treats 404 as absence.
    async fn read<T>(
        &self,
        action: &str,
        call: impl Future<Output = Result<T, KeycloakError>>,
    ) -> Result<Option<T>, BackendError> {
        absent_as_none(self.call(Verb::Read, action, call).await)
    }

    /// A write that must succeed.
    async fn write<T>(
        &self,
        action: &str,
        call: impl Future<Output = Result<T, KeycloakError>>,
    ) -> Result<T, BackendError> {
        self.call(Verb::Write, action, call).await
    }

    /// A create: `None` when the object exists already (409).
    async fn create(
        &self,
        action: &str,
        call: impl Future<Output = Result<DefaultResponse, KeycloakError>>,
    ) -> Result<Option<DefaultResponse>, BackendError> {
        match self.write(action, call).await {
            Ok(created) => Ok(Some(created)),
            Err(BackendError::Refused { status: 409, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A delete: `Absent` when there was nothing to delete (404).
    async fn delete(
        &self,
        action: &str,
        call: impl Future<Output = Result<DefaultResponse, KeycloakError>>,
    ) -> Result<Change, BackendError> {
        Ok(match absent_as_none(self.write(action, call).await)? {
            Some(_) => Change::Deleted,
            None => Change::Absent,
        })
    }
}

/// Required actions as Keycloak 26.7 registers them in a new realm (alias,
/// name, enabled, priority). A realm created with any required action gets
/// only those, so the list is given whole; a test compares it with a realm
/// Keycloak made itself.
const REQUIRED_ACTIONS: [(&str, &str, bool, i32); 14] = [
    ("TERMS_AND_CONDITIONS", "Terms and Conditions", false, 20),
    ("UPDATE_PROFILE", "Update Profile", true, 40),
    ("VERIFY_EMAIL", "Verify Email", true, 50),
    (TOTP, TOTP_NAME, true, 54),
    ("UPDATE_PASSWORD", "Update Password", true, 57),
    ("delete_account", "Delete Account", false, 60),
    ("UPDATE_EMAIL", "Update Email", false, 70),
    ("webauthn-register", "Webauthn Register", true, 80),
    (
        "webauthn-register-passwordless",
        "Webauthn Register Passwordless",
        true,
        90,
    ),
    ("VERIFY_PROFILE", "Verify Profile", true, 100),
    ("delete_credential", "Delete Credential", true, 110),
    ("idp_link", "Linking Identity Provider", true, 120),
    (
        "CONFIGURE_RECOVERY_AUTHN_CODES",
        "Recovery Authentication Codes",
        true,
        130,
    ),
    ("update_user_locale", "Update User Locale", true, 1000),
];

/// Key providers (name, provider, extra config) Keycloak generates for a new
/// realm, which it skips when the realm is created with any key provider.
const DEFAULT_KEY_PROVIDERS: [(&str, &str, Option<ConfigEntry>); 4] = [
    ("rsa-generated", "rsa-generated", None),
    (
        "rsa-enc-generated",
        "rsa-enc-generated",
        Some(("algorithm", "RSA-OAEP")),
    ),
    (
        "hmac-generated-hs512",
        "hmac-generated",
        Some(("algorithm", "HS512")),
    ),
    ("aes-generated", "aes-generated", None),
];

/// One extra config key and value of a key provider.
type ConfigEntry = (&'static str, &'static str);

fn eddsa_key_provider() -> ComponentExportRepresentation {
    key_provider(
        "eddsa-generated",
        "eddsa-generated",
        Some(("eddsaEllipticCurveKey", "Ed25519")),
    )
}

fn key_provider(
    name: &str,
    provider: &str,
    extra: Option<ConfigEntry>,
) -> ComponentExportRepresentation {
    let config = [("priority", "100")]
        .into_iter()
        .chain(extra)
        .map(|(k, v)| (k.to_owned(), vec![v.to_owned()]))
        .collect();
    ComponentExportRepresentation {
        name: Some(name.into()),
        provider_id: Some(provider.into()),
        config: Some(config),
        ..Default::default()
    }
}

/// The whole representation of a new realm: what `ensure_realm` and, for a
/// tenant's own realm, `ensure_scope_claim` would otherwise write one by one.
fn new_realm(desired: &RealmSettings) -> RealmRepresentation {
    let mut realm = realm_patch(&RealmRepresentation::default(), desired).unwrap_or_default();
    realm.realm = Some(desired.name.clone());
    let keys = DEFAULT_KEY_PROVIDERS
        .iter()
        .map(|(name, provider, extra)| key_provider(name, provider, *extra))
        .chain([eddsa_key_provider()])
        .collect();
    realm.components = Some(HashMap::from([(KEY_PROVIDER_TYPE.to_owned(), keys)]));
    realm.required_actions = Some(
        REQUIRED_ACTIONS
            .iter()
            .map(
                |(alias, name, enabled, priority)| RequiredActionProviderRepresentation {
                    alias: Some((*alias).into()),
                    name: Some((*name).into()),
                    provider_id: Some((*alias).into()),
                    enabled: Some(*enabled),
                    default_action: Some(*alias == TOTP && desired.mfa_required),
                    priority: Some(*priority),
                    config: Some(HashMap::new()),
                },
            )
            .collect(),
    );
    // A shared realm maps organization groups instead of the scope claim.
    if !desired.organizations {
        realm.attributes = Some(strings(&[(CREATE_DEFAULT_SCOPES, "true")]));
        realm.client_scopes = Some(vec![scope_representation()]);
        realm.default_default_client_scopes = Some(vec![SCOPE_NAME.into()]);
    }
    realm
}

/// `want`, when `current` differs from it.
fn differing<T: PartialEq>(current: Option<&T>, want: T) -> Option<T> {
    (current != Some(&want)).then_some(want)
}

/// The managed realm fields whose current value differs from `desired`, as
/// a partial representation for PUT; `None` when nothing differs.
pub fn realm_patch(
    current: &RealmRepresentation,
    desired: &RealmSettings,
) -> Option<RealmRepresentation> {
    let text = |field: &Option<String>| field.as_deref().unwrap_or_default().to_owned();
    let differing_text =
        |field: &Option<String>, want: &str| (text(field) != want).then(|| want.to_owned());
    // Login events must be saved; types someone else enabled are kept.
    let mut events: BTreeSet<String> = current
        .enabled_event_types
        .iter()
        .flatten()
        .cloned()
        .collect();
    let events_missing = !LOGIN_EVENTS.iter().all(|e| events.contains(*e));
    events.extend(LOGIN_EVENTS.map(String::from));
    let patch = RealmRepresentation {
        enabled: differing(current.enabled.as_ref(), true),
        registration_allowed: differing(
            current.registration_allowed.as_ref(),
            desired.registration_allowed,
        ),
        verify_email: differing(current.verify_email.as_ref(), desired.verify_email),
        brute_force_protected: differing(current.brute_force_protected.as_ref(), true),
        events_enabled: differing(current.events_enabled.as_ref(), true),
        organizations_enabled: desired
            .organizations
            .then(|| differing(current.organizations_enabled.as_ref(), true))
            .flatten(),
        display_name: differing_text(&current.display_name, &desired.display_name),
        default_signature_algorithm: differing_text(
            &current.default_signature_algorithm,
            SIGNATURE_ALGORITHM,
        ),
        // Keycloak re-serialises the policy, so compare the canonical spelling.
        password_policy: (normalize_policy(&text(&current.password_policy))
            != normalize_policy(&desired.password_policy))
        .then(|| desired.password_policy.clone()),
        access_token_lifespan: differing(
            current.access_token_lifespan.as_ref(),
            desired.access_token_lifespan_seconds,
        ),
        enabled_event_types: events_missing.then(|| events.into_iter().collect()),
        ..Default::default()
    };
    (patch != RealmRepresentation::default()).then_some(patch)
}

/// Collapses whitespace, the only difference Keycloak's parser irons out.
fn normalize_policy(policy: &str) -> String {
    policy.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The CONFIGURE_TOTP representation to PUT, or `None` when it already is
/// enabled and default (MFA required) or not default (MFA optional).
pub fn totp_patch(
    current: &RequiredActionProviderRepresentation,
    mfa_required: bool,
) -> Option<RequiredActionProviderRepresentation> {
    let enabled = current.enabled == Some(true);
    let default = current.default_action == Some(true);
    let want_enabled = enabled || mfa_required;
    if enabled == want_enabled && default == mfa_required {
        return None;
    }
    Some(RequiredActionProviderRepresentation {
        enabled: Some(want_enabled),
        default_action: Some(mfa_required),
        ..current.clone()
    })
}

/// Whether the realm's keys include an active EdDSA signing key.
pub fn has_active_eddsa_key(keys: &KeysMetadataRepresentation) -> bool {
    keys.keys.iter().flatten().any(|k| {
        k.algorithm.as_deref() == Some(SIGNATURE_ALGORITHM) && k.status.as_deref() == Some("ACTIVE")
    })
}

/// Attribute maps compared with each value list as a set, since Keycloak
/// does not promise to keep the order of multi-valued attributes.
pub fn group_attributes_equal(
    current: &GroupRepresentation,
    desired: &BTreeMap<String, Vec<String>>,
) -> bool {
    let as_sets = |m: &mut dyn Iterator<Item = (&String, &Vec<String>)>| {
        m.map(|(k, v)| (k.clone(), v.iter().cloned().collect::<BTreeSet<_>>()))
            .collect::<BTreeMap<_, _>>()
    };
    as_sets(&mut current.attributes.iter().flatten()) == as_sets(&mut desired.iter())
}

/// Owned string pairs, for configs and attributes.
fn strings(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Whether `current` holds every wanted key with the wanted value.
fn has_config<'a>(
    current: Option<&HashMap<String, String>>,
    wanted: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> bool {
    wanted
        .into_iter()
        .all(|(k, v)| current.and_then(|c| c.get(k)) == Some(v))
}

fn desired_mapper_config() -> HashMap<String, String> {
    strings(&[
        ("claim.name", SCOPE_CLAIM),
        ("full.path", "true"),
        ("access.token.claim", "true"),
        ("id.token.claim", "true"),
        ("userinfo.token.claim", "true"),
        ("introspection.token.claim", "true"),
    ])
}

fn mapper_representation() -> ProtocolMapperRepresentation {
    ProtocolMapperRepresentation {
        name: Some(MAPPER_NAME.into()),
        protocol: Some(PROTOCOL.into()),
        protocol_mapper: Some(MAPPER_TYPE.into()),
        config: Some(desired_mapper_config()),
        ..Default::default()
    }
}

fn scope_representation() -> ClientScopeRepresentation {
    ClientScopeRepresentation {
        name: Some(SCOPE_NAME.into()),
        protocol: Some(PROTOCOL.into()),
        attributes: Some(strings(&[
            ("include.in.token.scope", "false"),
            ("display.on.consent.screen", "false"),
        ])),
        protocol_mappers: Some(vec![mapper_representation()]),
        ..Default::default()
    }
}

fn scope_named<'a>(
    scopes: &'a [ClientScopeRepresentation],
    name: &str,
) -> Option<&'a ClientScopeRepresentation> {
    scopes.iter().find(|s| s.name.as_deref() == Some(name))
}

fn find_mapper(scope: &ClientScopeRepresentation) -> Option<&ProtocolMapperRepresentation> {
    scope
        .protocol_mappers
        .iter()
        .flatten()
        .find(|m| m.name.as_deref() == Some(MAPPER_NAME))
}

/// The mapper representation to PUT, or `None` when its type and managed
/// config keys already match; unmanaged config keys are kept.
pub fn mapper_patch(
    current: &ProtocolMapperRepresentation,
) -> Option<ProtocolMapperRepresentation> {
    let wanted = desired_mapper_config();
    let type_matches = current.protocol_mapper.as_deref() == Some(MAPPER_TYPE)
        && current.protocol.as_deref() == Some(PROTOCOL);
    if type_matches && has_config(current.config.as_ref(), &wanted) {
        return None;
    }
    let mut config = current.config.clone().unwrap_or_default();
    config.extend(wanted);
    Some(ProtocolMapperRepresentation {
        protocol: Some(PROTOCOL.into()),
        protocol_mapper: Some(MAPPER_TYPE.into()),
        config: Some(config),
        ..current.clone()
    })
}

/// An organization as Ossature wants it; its name is its alias.
fn organization_body(desired: &OrganizationSettings) -> OrganizationRepresentation {
    OrganizationRepresentation {
        name: Some(desired.alias.clone()),
        alias: Some(desired.alias.clone()),
        enabled: Some(true),
        description: Some(desired.description.clone()),
        ..Default::default()
    }
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

/// A client with the fields Ossature manages (only those).
fn client_fields(desired: &ClientSettings) -> ClientRepresentation {
    ClientRepresentation {
        name: Some(desired.name.clone()),
        enabled: Some(true),
        public_client: Some(true),
        standard_flow_enabled: Some(true),
        direct_access_grants_enabled: Some(true),
        redirect_uris: Some(desired.redirect_uris.clone()),
        attributes: Some(strings(&[(
            "access.token.lifespan",
            &desired.access_token_lifespan_seconds.to_string(),
        )])),
        ..Default::default()
    }
}

/// The whole representation of a new client.
fn new_client(
    desired: &ClientSettings,
    action: &str,
) -> Result<ClientRepresentation, BackendError> {
    Ok(ClientRepresentation {
        client_id: Some(desired.client_id.clone()),
        protocol: Some(PROTOCOL.into()),
        protocol_mappers: Some(typed(&desired.mappers, action)?),
        default_client_scopes: Some(desired.default_scopes.clone()),
        ..client_fields(desired)
    })
}

/// The client to PUT: `current` with the managed fields put back, or `None`
/// when they match. Other fields and attributes are kept.
pub fn client_patch(
    current: &ClientRepresentation,
    desired: &ClientSettings,
) -> Option<ClientRepresentation> {
    let want = client_fields(desired);
    // A set in Keycloak: its order is not ours.
    let uris = |c: &ClientRepresentation| -> BTreeSet<String> {
        c.redirect_uris.iter().flatten().cloned().collect()
    };
    let same = current.name == want.name
        && current.enabled == want.enabled
        && current.public_client == want.public_client
        && current.standard_flow_enabled == want.standard_flow_enabled
        && current.direct_access_grants_enabled == want.direct_access_grants_enabled
        && uris(current) == uris(&want)
        && has_config(
            current.attributes.as_ref(),
            want.attributes.iter().flatten(),
        );
    if same {
        return None;
    }
    let mut attributes = current.attributes.clone().unwrap_or_default();
    attributes.extend(want.attributes.clone().unwrap_or_default());
    Some(ClientRepresentation {
        attributes: Some(attributes),
        name: want.name,
        enabled: want.enabled,
        public_client: want.public_client,
        standard_flow_enabled: want.standard_flow_enabled,
        direct_access_grants_enabled: want.direct_access_grants_enabled,
        redirect_uris: want.redirect_uris,
        ..current.clone()
    })
}

/// Desired mappers, given as JSON by the caller, as the crate's type.
fn typed<T: DeserializeOwned>(values: &[Value], action: &str) -> Result<Vec<T>, BackendError> {
    values
        .iter()
        .map(|v| serde_json::from_value(v.clone()).map_err(|e| unreadable(action, &e.to_string())))
        .collect()
}

fn changed(wrote: bool) -> Change {
    if wrote {
        Change::Updated
    } else {
        Change::Unchanged
    }
}

/// The id Keycloak gave a new object, from its Location header.
fn new_id(created: &DefaultResponse, action: &str) -> Result<String, BackendError> {
    created
        .to_id()
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| unreadable(action, "no Location header with the new id"))
}

fn id_of<'a>(id: &'a Option<String>, action: &str) -> Result<&'a str, BackendError> {
    id.as_deref()
        .ok_or_else(|| unreadable(action, "no \"id\" field"))
}

fn group_path(path: &[String]) -> String {
    path.iter().map(|s| format!("/{s}")).collect()
}

/// Names go into Keycloak's "/a/b" paths, so a '/' inside one would address
/// a different group.
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

fn absent_as_none<T>(result: Result<T, BackendError>) -> Result<Option<T>, BackendError> {
    match result {
        Ok(found) => Ok(Some(found)),
        Err(BackendError::Refused { status: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What a lookup found; a realm that is gone took it along.
fn gone_with_realm<T>(found: Result<Option<T>, BackendError>) -> Result<Option<T>, BackendError> {
    absent_as_none(found).map(Option::flatten)
}

/// The crate's error as ours: the status (404 absent, 409 conflict, 5xx
/// failing) and a short body.
fn backend_error(action: &str, error: KeycloakError) -> BackendError {
    match error {
        KeycloakError::ReqwestFailure(e) if e.is_decode() => unreadable(action, &e.to_string()),
        KeycloakError::ReqwestFailure(source) => unreachable(source),
        KeycloakError::HttpFailure { status, text, .. } => BackendError::Refused {
            backend: Backend::Keycloak,
            action: action.into(),
            status,
            body: truncate(&text),
        },
    }
}

fn unreachable(source: reqwest::Error) -> BackendError {
    BackendError::Unreachable {
        backend: Backend::Keycloak,
        source,
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

fn realm_missing(action: &str, realm: &str) -> BackendError {
    not_found(action, &format!("realm {realm} does not exist"))
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
    use serde_json::json;

    /// A representation written as Keycloak's JSON.
    fn from<T: DeserializeOwned>(value: Value) -> T {
        serde_json::from_value(value).unwrap()
    }

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
    fn applied() -> RealmRepresentation {
        from(json!({
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
        }))
    }

    #[test]
    fn an_empty_realm_needs_every_managed_field() {
        let patch = realm_patch(&RealmRepresentation::default(), &settings()).unwrap();
        let patch = serde_json::to_value(patch).unwrap();
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
        current.access_token_lifespan = Some(60);
        current.brute_force_protected = Some(false);
        assert_eq!(
            realm_patch(&current, &settings()),
            Some(from(
                json!({ "accessTokenLifespan": 300, "bruteForceProtected": true })
            ))
        );
        let mut shared = settings();
        shared.organizations = true;
        assert_eq!(
            realm_patch(&applied(), &shared),
            Some(from(json!({ "organizationsEnabled": true })))
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
            Some(from(json!({ "passwordPolicy": "" })))
        );
        let mut unset = applied();
        unset.password_policy = None;
        assert_eq!(realm_patch(&unset, &desired), None);
    }

    #[test]
    fn extra_event_types_are_kept_and_missing_login_types_added() {
        let mut current = applied();
        current.enabled_event_types =
            Some(from(json!(["LOGIN", "LOGIN_ERROR", "LOGOUT", "REGISTER"])));
        assert_eq!(realm_patch(&current, &settings()), None);
        current.enabled_event_types = Some(from(json!(["REGISTER", "LOGIN"])));
        assert_eq!(
            realm_patch(&current, &settings()),
            Some(from(
                json!({ "enabledEventTypes": ["LOGIN", "LOGIN_ERROR", "LOGOUT", "REGISTER"] })
            ))
        );
    }

    #[test]
    fn a_new_realm_is_whole() {
        let realm = new_realm(&settings());
        assert_eq!(realm.realm.as_deref(), Some("acme"));
        assert_eq!(realm.default_signature_algorithm.as_deref(), Some("EdDSA"));
        let keys = &realm.components.as_ref().unwrap()[KEY_PROVIDER_TYPE];
        let providers: BTreeSet<&str> = keys
            .iter()
            .filter_map(|k| k.provider_id.as_deref())
            .collect();
        assert_eq!(
            providers,
            BTreeSet::from([
                "aes-generated",
                "eddsa-generated",
                "hmac-generated",
                "rsa-enc-generated",
                "rsa-generated",
            ])
        );
        let defaults = |realm: &RealmRepresentation| -> Vec<String> {
            let actions = realm.required_actions.as_ref().unwrap();
            actions
                .iter()
                .filter(|a| a.default_action == Some(true))
                .filter_map(|a| a.alias.clone())
                .collect()
        };
        assert_eq!(defaults(&realm), [TOTP]);
        // Its own scope claim, and Keycloak's built-in scopes besides.
        assert_eq!(
            realm.client_scopes.as_ref().unwrap()[0],
            scope_representation()
        );
        assert_eq!(
            realm.default_default_client_scopes,
            Some(vec![SCOPE_NAME.into()])
        );
        assert_eq!(
            realm.attributes.as_ref().unwrap()[CREATE_DEFAULT_SCOPES],
            "true"
        );

        let mut shared = settings();
        shared.organizations = true;
        shared.mfa_required = false;
        let realm = new_realm(&shared);
        assert!(defaults(&realm).is_empty());
        assert_eq!(realm.organizations_enabled, Some(true));
        assert_eq!(realm.client_scopes, None, "Keycloak's scopes only");
        assert_eq!(realm.attributes, None);
    }

    #[test]
    fn totp_is_default_only_when_mfa_is_required() {
        let action = |value: Value| -> RequiredActionProviderRepresentation { from(value) };
        let off = action(
            json!({ "alias": TOTP, "enabled": true, "defaultAction": false, "priority": 10 }),
        );
        assert_eq!(totp_patch(&off, false), None);
        let on = totp_patch(&off, true).unwrap();
        assert_eq!(
            on,
            action(
                json!({ "alias": TOTP, "enabled": true, "defaultAction": true, "priority": 10 })
            )
        );
        assert_eq!(totp_patch(&on, true), None);
        assert_eq!(totp_patch(&on, false), Some(off));
        let disabled = action(json!({ "alias": TOTP, "enabled": false, "defaultAction": false }));
        assert_eq!(totp_patch(&disabled, false), None);
        assert_eq!(
            totp_patch(&disabled, true),
            Some(action(
                json!({ "alias": TOTP, "enabled": true, "defaultAction": true })
            ))
        );
    }

    #[test]
    fn only_an_active_eddsa_key_counts() {
        let keys = |status: &str, algorithm: &str| {
            from(json!({ "keys": [
                { "algorithm": "RS256", "status": "ACTIVE", "use": "SIG" },
                { "algorithm": algorithm, "status": status },
            ]}))
        };
        assert!(has_active_eddsa_key(&keys("ACTIVE", "EdDSA")));
        assert!(!has_active_eddsa_key(&keys("PASSIVE", "EdDSA")));
        assert!(!has_active_eddsa_key(&keys("ACTIVE", "ES256")));
        assert!(!has_active_eddsa_key(&from(json!({}))));
    }

    #[test]
    fn group_attributes_compare_values_as_sets() {
        let desired = BTreeMap::from([("scopePath".to_string(), vec!["/a".into(), "/b".into()])]);
        let group = |attributes: Value| from(json!({ "id": "1", "attributes": attributes }));
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
            &from(json!({ "id": "1" })),
            &BTreeMap::new()
        ));
    }

    #[test]
    fn mapper_patch_restores_managed_config_and_keeps_the_rest() {
        let mut current = mapper_representation();
        current.id = Some("m1".into());
        let config = current.config.as_mut().unwrap();
        config.insert("lightweight.claim".into(), "false".into());
        assert_eq!(mapper_patch(&current), None);

        let config = current.config.as_mut().unwrap();
        config.insert("full.path".into(), "false".into());
        let patch = mapper_patch(&current).unwrap();
        let config = patch.config.as_ref().unwrap();
        assert_eq!(patch.id.as_deref(), Some("m1"));
        assert_eq!(config["full.path"], "true");
        assert_eq!(config["claim.name"], SCOPE_CLAIM);
        assert_eq!(config["lightweight.claim"], "false");

        current.protocol_mapper = Some("oidc-usermodel-attribute-mapper".into());
        let patch = mapper_patch(&current).unwrap();
        assert_eq!(patch.protocol_mapper.as_deref(), Some(MAPPER_TYPE));
    }

    fn client() -> ClientSettings {
        ClientSettings {
            client_id: "acme".into(),
            name: "Acme".into(),
            access_token_lifespan_seconds: 300,
            mappers: vec![],
            default_scopes: vec![],
            redirect_uris: vec!["https://a/*".into(), "https://b/*".into()],
        }
    }

    #[test]
    fn client_patch_puts_back_managed_fields_only() {
        let current: ClientRepresentation = from(json!({
            "id": "c1", "clientId": "acme", "name": "Acme", "enabled": true,
            "publicClient": true, "standardFlowEnabled": true,
            "directAccessGrantsEnabled": true, "redirectUris": ["https://b/*", "https://a/*"],
            "attributes": { "access.token.lifespan": "300", "pkce.code.challenge.method": "S256" },
            "rootUrl": "https://acme",
        }));
        assert_eq!(
            client_patch(&current, &client()),
            None,
            "order of URIs is not ours"
        );
        let mut longer = client();
        longer.access_token_lifespan_seconds = 900;
        let patch = client_patch(&current, &longer).unwrap();
        let attributes = patch.attributes.as_ref().unwrap();
        assert_eq!(attributes["access.token.lifespan"], "900");
        assert_eq!(attributes["pkce.code.challenge.method"], "S256");
        assert_eq!(patch.root_url.as_deref(), Some("https://acme"));
        assert_eq!(patch.id.as_deref(), Some("c1"));
        let disabled = ClientRepresentation {
            enabled: Some(false),
            ..current
        };
        assert_eq!(
            client_patch(&disabled, &client()).unwrap().enabled,
            Some(true)
        );
    }

    #[test]
    fn desired_mappers_are_checked_when_typed() {
        let good = vec![json!({ "name": "a", "protocolMapper": "m", "config": { "k": "v" } })];
        let mappers: Vec<ProtocolMapperRepresentation> = typed(&good, "x").unwrap();
        assert_eq!(mappers[0].config.as_ref().unwrap()["k"], "v");
        let bad = vec![json!({ "name": "a", "config": { "k": true } })];
        let err = typed::<ProtocolMapperRepresentation>(&bad, "x").unwrap_err();
        assert_eq!(err.category(), "BackendUnreadable");
    }

    #[test]
    fn http_failures_keep_their_status_and_a_short_body() {
        let failure = |status| KeycloakError::HttpFailure {
            status,
            body: None,
            text: "x".repeat(BODY_LIMIT * 2),
        };
        let err = backend_error("read realm acme", failure(404));
        assert!(absent_as_none::<()>(Err(err)).unwrap().is_none());
        match backend_error("create realm acme", failure(409)) {
            BackendError::Refused {
                status,
                body,
                action,
                ..
            } => {
                assert_eq!((status, action.as_str()), (409, "create realm acme"));
                assert_eq!(body.chars().count(), BODY_LIMIT + 1);
            }
            other => panic!("expected Refused, got {other:?}"),
        }
        assert_eq!(
            backend_error("x", failure(503)).category(),
            "BackendFailing"
        );
        let wrong_password = token_refused(KeycloakError::HttpFailure {
            status: 400,
            body: None,
            text: r#"{"error":"invalid_grant"}"#.into(),
        });
        assert_eq!(
            backend_error("x", wrong_password).category(),
            "BackendUnauthorized"
        );
    }

    #[test]
    fn helpers() {
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
        assert!(
            gone_with_realm::<()>(Err(not_found("x", "realm r does not exist")))
                .unwrap()
                .is_none()
        );
        assert!(gone_with_realm::<()>(Err(raced("x"))).is_err());
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
