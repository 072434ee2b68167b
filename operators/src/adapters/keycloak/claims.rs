//! Claims in tokens: the `ossature-scopes` client scope mapping full group
//! paths into the scope claim (own realm), or organization groups mapped by
//! the built-in `organization` scope (shared realm).

use std::collections::HashMap;

use keycloak::types::{ClientScopeRepresentation, ProtocolMapperRepresentation};

use super::{
    BackendError, Change, Keycloak, ORGANIZATION_SCOPE, PROTOCOL, SCOPE_CLAIM, SCOPE_NAME, changed,
    has_config, id_of, new_id, not_found, realm_missing, strings,
};

/// Name of the group-membership mapper inside [`SCOPE_NAME`].
pub const MAPPER_NAME: &str = "scopes";
const MAPPER_TYPE: &str = "oidc-group-membership-mapper";
const ORGANIZATION_GROUPS_MAPPER: &str = "oidc-organization-group-membership-mapper";

impl Keycloak {
    /// The realm's client scopes; a missing realm is an error.
    pub(super) async fn client_scopes(
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

pub(super) fn scope_representation() -> ClientScopeRepresentation {
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

pub(super) fn scope_named<'a>(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
