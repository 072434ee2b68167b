//! The tenant's client: its managed settings, protocol mappers and default
//! client scopes.

use std::collections::BTreeSet;

use keycloak::types::{ClientRepresentation, ProtocolMapperRepresentation};

use super::claims::scope_named;
use super::{
    BackendError, Change, ClientSettings, Keycloak, PROTOCOL, changed, gone_with_realm, has_config,
    id_of, not_found, raced, realm_missing, strings, typed,
};

impl Keycloak {
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

    /// The client with this clientId (a lookup by its unique key).
    pub async fn client(
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
        wrote |= self
            .ensure_mappers(realm, id, &current, &desired.mappers, &action)
            .await?;
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

    /// Puts back the client's protocol mappers that are missing or differ;
    /// whether it wrote.
    pub(super) async fn ensure_mappers(
        &self,
        realm: &str,
        id: &str,
        current: &ClientRepresentation,
        desired: &[serde_json::Value],
        action: &str,
    ) -> Result<bool, BackendError> {
        let admin = &self.admin;
        let mut wrote = false;
        let mappers = current.protocol_mappers.as_deref().unwrap_or_default();
        for wanted in typed::<ProtocolMapperRepresentation>(desired, action)? {
            match mappers.iter().find(|m| m.name == wanted.name) {
                None => {
                    let call = admin.realm_clients_with_client_uuid_protocol_mappers_models_post(
                        realm, id, wanted,
                    );
                    self.write(action, call).await?;
                }
                Some(existing)
                    if existing.protocol_mapper != wanted.protocol_mapper
                        || !has_config(
                            existing.config.as_ref(),
                            wanted.config.iter().flatten(),
                        ) =>
                {
                    let mapper_id = id_of(&existing.id, action)?;
                    let body = ProtocolMapperRepresentation {
                        id: Some(mapper_id.to_owned()),
                        ..wanted
                    };
                    let call = admin
                        .realm_clients_with_client_uuid_protocol_mappers_models_with_id_put(
                            realm, id, mapper_id, body,
                        );
                    self.write(action, call).await?;
                }
                Some(_) => continue,
            }
            wrote = true;
        }
        Ok(wrote)
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
pub(super) fn new_client(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::keycloak::fixtures::from;
    use serde_json::json;

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
}
