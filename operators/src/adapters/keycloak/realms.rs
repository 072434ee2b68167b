//! Realms: their managed settings, the EdDSA signing key and the TOTP
//! required action, and the whole representation of a new realm.

use std::collections::{BTreeSet, HashMap};

use keycloak::types::{
    ComponentExportRepresentation, ComponentRepresentation, KeysMetadataRepresentation,
    RealmRepresentation, RequiredActionProviderRepresentation,
};

use super::claims::scope_representation;
use super::clients::new_client;
use super::{
    BackendError, Change, ClientSettings, Keycloak, RealmSettings, SCOPE_NAME, changed, raced,
    realm_missing, strings,
};

const TOTP: &str = "CONFIGURE_TOTP";
const TOTP_NAME: &str = "Configure OTP";
const SIGNATURE_ALGORITHM: &str = "EdDSA";
const KEY_PROVIDER_TYPE: &str = "org.keycloak.keys.KeyProvider";
/// Event types every realm keeps, so logins can be audited.
pub const LOGIN_EVENTS: [&str; 3] = ["LOGIN", "LOGIN_ERROR", "LOGOUT"];

/// Realm attribute, read once at creation and not kept, that has Keycloak
/// make its built-in client scopes although the new realm names one.
const CREATE_DEFAULT_SCOPES: &str = "CreateDefaultClientScopes";

impl Keycloak {
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

    /// Whether the realm exists (one read; the cost does not grow with realms).
    pub async fn realm_exists(&self, name: &str) -> Result<bool, BackendError> {
        let action = format!("read realm {name}");
        Ok(self
            .read(&action, self.admin.realm_get(name))
            .await?
            .is_some())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::keycloak::fixtures::{from, settings};
    use serde_json::{Value, json};

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
}
