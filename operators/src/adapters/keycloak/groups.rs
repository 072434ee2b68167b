//! Nested groups, in a realm or in an organization: the tenant's scopes.

use std::collections::{BTreeMap, BTreeSet};

use keycloak::types::GroupRepresentation;
use reqwest::StatusCode;

use super::{Backend, BackendError, Change, GroupHome, Keycloak, id_of, not_found};

impl Keycloak {
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
    pub async fn group(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::keycloak::fixtures::from;
    use serde_json::{Value, json};

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
    fn group_paths_are_checked() {
        assert_eq!(
            group_path(&["global".into(), "eu".into()]),
            "/global/eu".to_string()
        );
        assert!(check_path(&["a/b".into()], "x").is_err());
        assert!(check_path(&[], "x").is_err());
        assert!(check_path(&["a".into(), "b c".into()], "x").is_ok());
    }
}
