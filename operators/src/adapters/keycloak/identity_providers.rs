//! Identity providers (OIDC, or SAML from its metadata), their mappers, and
//! their link to the tenant's organization.

use std::collections::{BTreeSet, HashMap};

use keycloak::types::{IdentityProviderMapperRepresentation, IdentityProviderRepresentation};
use reqwest::Url;
use serde_json::Value;

use super::{
    BackendError, Change, IdentityProviderSettings, Keycloak, MANAGED_CONFIG, changed, has_config,
    id_of, typed,
};

impl Keycloak {
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
}

/// Appends percent-encoded segments; the base was checked to have a path.
fn push_segments<S: AsRef<str>>(url: &mut Url, segments: &[S]) {
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty()
            .extend(segments.iter().map(AsRef::as_ref));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
