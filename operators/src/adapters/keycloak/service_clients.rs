//! Service clients: confidential clients for client credentials, and the
//! realm's client policy under which their secrets rotate with the previous
//! one still valid for a while (Keycloak's `secret-rotation` executor).

use keycloak::types::{
    ClientPoliciesRepresentation, ClientPolicyRepresentation, ClientProfileRepresentation,
    ClientProfilesRepresentation, ClientRepresentation,
};
use ossature_model::services::{
    ROTATION_POLICY, ROTATION_PROFILE, ServiceClient, rotation_policy, rotation_profile,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{BackendError, Change, Keycloak, PROTOCOL, id_of, raced, realm_missing, typed};
use crate::adapters::Backend;

/// A service client as Keycloak has it after `ensure_service_client`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveServiceClient {
    /// Keycloak's id of the client (not its clientId).
    pub id: String,
    pub change: Change,
}

impl Keycloak {
    /// The realm's client profile and policy for service clients: added,
    /// or put back where they differ; the realm's other profiles and
    /// policies are kept.
    pub async fn ensure_secret_rotation(&self, realm: &str) -> Result<Change, BackendError> {
        let action = format!("set the secret rotation policy of realm {realm}");
        let admin = &self.admin;
        let mut wrote = false;

        let profiles = self
            .read(
                &action,
                admin.realm_client_policies_profiles_get(realm, Some(false)),
            )
            .await?
            .ok_or_else(|| realm_missing(&action, realm))?;
        let wanted: ClientProfileRepresentation = one(rotation_profile(), &action)?;
        let mut list = profiles.profiles.clone().unwrap_or_default();
        if upsert(&mut list, wanted, |p| {
            p.name.as_deref() == Some(ROTATION_PROFILE)
        }) {
            let body = ClientProfilesRepresentation {
                profiles: Some(list),
                global_profiles: None,
            };
            let call = admin.realm_client_policies_profiles_put(realm, body);
            self.write(&action, call).await?;
            wrote = true;
        }

        let policies = self
            .read(
                &action,
                admin.realm_client_policies_policies_get(realm, Some(false)),
            )
            .await?
            .ok_or_else(|| realm_missing(&action, realm))?;
        let wanted: ClientPolicyRepresentation = one(rotation_policy(), &action)?;
        let mut list = policies.policies.clone().unwrap_or_default();
        if upsert(&mut list, wanted, |p| {
            p.name.as_deref() == Some(ROTATION_POLICY)
        }) {
            let body = ClientPoliciesRepresentation {
                policies: Some(list),
                global_policies: None,
            };
            let call = admin.realm_client_policies_policies_put(realm, body);
            self.write(&action, call).await?;
            wrote = true;
        }
        Ok(if wrote {
            Change::Updated
        } else {
            Change::Unchanged
        })
    }

    /// The service's client: created, or its managed fields, attributes
    /// and mappers put back where they differ. Keycloak's own attributes
    /// (the rotated secret and its expiry among them) are kept.
    pub async fn ensure_service_client(
        &self,
        realm: &str,
        desired: &ServiceClient,
    ) -> Result<LiveServiceClient, BackendError> {
        let client_id = desired.client_id.as_str();
        let action = format!("ensure service client {client_id} in realm {realm}");
        let admin = &self.admin;
        let Some(current) = self.client(realm, client_id).await? else {
            let body = ClientRepresentation {
                client_id: Some(client_id.to_owned()),
                protocol: Some(PROTOCOL.into()),
                protocol_mappers: Some(typed(&desired.mappers, &action)?),
                ..service_fields(desired)
            };
            self.create(&action, admin.realm_clients_post(realm, body))
                .await?
                .ok_or_else(|| raced(&action))?;
            let created = self
                .client(realm, client_id)
                .await?
                .ok_or_else(|| raced(&action))?;
            return Ok(LiveServiceClient {
                id: id_of(&created.id, &action)?.to_owned(),
                change: Change::Created,
            });
        };
        let id = id_of(&current.id, &action)?.to_owned();
        let mut wrote = false;
        if let Some(update) = service_client_patch(&current, desired) {
            let call = admin.realm_clients_with_client_uuid_put(realm, &id, update);
            self.write(&action, call).await?;
            wrote = true;
        }
        wrote |= self
            .ensure_mappers(realm, &id, &current, &desired.mappers, &action)
            .await?;
        Ok(LiveServiceClient {
            id,
            change: if wrote {
                Change::Updated
            } else {
                Change::Unchanged
            },
        })
    }

    /// The client's current secret.
    pub async fn client_secret(&self, realm: &str, id: &str) -> Result<String, BackendError> {
        let action = format!("read the secret of client {id} in realm {realm}");
        let call = self
            .admin
            .realm_clients_with_client_uuid_client_secret_get(realm, id);
        let credential = self
            .read(&action, call)
            .await?
            .ok_or_else(|| raced(&action))?;
        credential
            .value
            .ok_or_else(|| Backend::Keycloak.unreadable(&action, "the answer holds no secret"))
    }

    /// A new secret; under the rotation policy the previous one stays valid
    /// for a while.
    pub async fn rotate_client_secret(
        &self,
        realm: &str,
        id: &str,
    ) -> Result<String, BackendError> {
        let action = format!("rotate the secret of client {id} in realm {realm}");
        let call = self
            .admin
            .realm_clients_with_client_uuid_client_secret_post(realm, id);
        let credential = self.write(&action, call).await?;
        credential
            .value
            .ok_or_else(|| Backend::Keycloak.unreadable(&action, "the answer holds no secret"))
    }

    /// The previous secret, still valid after a rotation, if any.
    pub async fn rotated_client_secret(
        &self,
        realm: &str,
        id: &str,
    ) -> Result<Option<String>, BackendError> {
        let action = format!("read the rotated secret of client {id} in realm {realm}");
        let call = self
            .admin
            .realm_clients_with_client_uuid_client_secret_rotated_get(realm, id);
        Ok(self.read(&action, call).await?.and_then(|c| c.value))
    }
}

/// One typed representation from the model's JSON.
fn one<T: DeserializeOwned>(value: serde_json::Value, action: &str) -> Result<T, BackendError> {
    typed::<T>(&[value], action)?
        .pop()
        .ok_or_else(|| raced(action))
}

/// Puts `wanted` in `list` in place of the entry `is_ours` finds, or at its
/// end; whether the list changed.
fn upsert<T: Serialize + Clone>(
    list: &mut Vec<T>,
    wanted: T,
    is_ours: impl Fn(&T) -> bool,
) -> bool {
    let json = |t: &T| serde_json::to_value(t).ok();
    match list.iter_mut().find(|p| is_ours(p)) {
        Some(found) if json(found) == json(&wanted) => false,
        Some(found) => {
            *found = wanted;
            true
        }
        None => {
            list.push(wanted);
            true
        }
    }
}

/// The fields of a service client the operator owns.
fn service_fields(desired: &ServiceClient) -> ClientRepresentation {
    ClientRepresentation {
        name: Some(desired.name.clone()),
        enabled: Some(true),
        public_client: Some(false),
        client_authenticator_type: Some("client-secret".into()),
        service_accounts_enabled: Some(true),
        standard_flow_enabled: Some(false),
        implicit_flow_enabled: Some(false),
        direct_access_grants_enabled: Some(false),
        full_scope_allowed: Some(false),
        attributes: Some(desired.attributes.clone().into_iter().collect()),
        ..Default::default()
    }
}

/// The client to PUT, or `None` when the owned fields match.
fn service_client_patch(
    current: &ClientRepresentation,
    desired: &ServiceClient,
) -> Option<ClientRepresentation> {
    let want = service_fields(desired);
    let attributes = current.attributes.clone().unwrap_or_default();
    let same = current.name == want.name
        && current.enabled == want.enabled
        && current.public_client == want.public_client
        && current.client_authenticator_type == want.client_authenticator_type
        && current.service_accounts_enabled == want.service_accounts_enabled
        && current.standard_flow_enabled == want.standard_flow_enabled
        && current.implicit_flow_enabled == want.implicit_flow_enabled
        && current.direct_access_grants_enabled == want.direct_access_grants_enabled
        && current.full_scope_allowed == want.full_scope_allowed
        && desired
            .attributes
            .iter()
            .all(|(k, v)| attributes.get(k) == Some(v));
    if same {
        return None;
    }
    let mut merged = attributes;
    merged.extend(desired.attributes.clone());
    Some(ClientRepresentation {
        attributes: Some(merged),
        ..ClientRepresentation {
            id: current.id.clone(),
            client_id: current.client_id.clone(),
            protocol: current.protocol.clone(),
            ..want
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::keycloak::fixtures::from;
    use ossature_crds::Isolation;
    use ossature_model::services::{ServiceNames, service_client};
    use serde_json::json;

    #[test]
    fn a_patch_keeps_keycloaks_rotation_records() {
        let names = ServiceNames::new("tn-acme--prod", "orders").unwrap();
        let desired = service_client(&names, Isolation::Realm);
        let mut attributes: serde_json::Map<String, serde_json::Value> = desired
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        attributes.insert("client.secret.rotated".into(), json!("old"));
        let current: ClientRepresentation = from(json!({
            "id": "c1", "clientId": "acme.prod.orders", "name": desired.name,
            "enabled": true, "publicClient": false, "clientAuthenticatorType": "client-secret",
            "serviceAccountsEnabled": true, "standardFlowEnabled": false,
            "implicitFlowEnabled": false, "directAccessGrantsEnabled": false,
            "fullScopeAllowed": false, "attributes": attributes,
        }));
        assert_eq!(service_client_patch(&current, &desired), None);
        let opened = ClientRepresentation {
            direct_access_grants_enabled: Some(true),
            ..current.clone()
        };
        let patch = service_client_patch(&opened, &desired).unwrap();
        assert_eq!(patch.direct_access_grants_enabled, Some(false));
        assert_eq!(patch.id.as_deref(), Some("c1"));
        assert_eq!(
            patch.attributes.as_ref().unwrap()["client.secret.rotated"],
            "old"
        );
    }

    #[test]
    fn upsert_replaces_only_what_differs() {
        let mut list = vec![json!({"name": "theirs"}), json!({"name": "ours", "v": 1})];
        let ours = |v: &serde_json::Value| v["name"] == "ours";
        assert!(!upsert(&mut list, json!({"name": "ours", "v": 1}), ours));
        assert!(upsert(&mut list, json!({"name": "ours", "v": 2}), ours));
        assert_eq!(list[0], json!({"name": "theirs"}));
        assert_eq!(list[1]["v"], 2);
        let mut empty = Vec::new();
        assert!(upsert(&mut empty, json!({"name": "ours"}), ours));
        assert_eq!(empty.len(), 1);
    }
}
