//! Organizations, which hold a tenant's groups in a shared realm.

use keycloak::types::OrganizationRepresentation;

use super::{
    BackendError, Change, Keycloak, OrganizationSettings, gone_with_realm, id_of, new_id, raced,
    realm_missing,
};

impl Keycloak {
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
