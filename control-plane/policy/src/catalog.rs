//! The resources the control plane lets callers act on, and the actions each
//! offers: the vocabulary of every permission, published as data so a front
//! end can list it.

use serde::Serialize;

/// Where a resource lives, which decides the scopes whose grants count.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Level {
    /// One per tenant (its settings, its roles, its audit): only grants at
    /// the tenant's root apply, whatever scope a request names.
    Tenant,
    /// Placed in a scope: grants in that scope and every scope above it
    /// apply. Asked without a scope, only grants at the root apply.
    Scope,
}

/// An action a resource offers.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    pub name: &'static str,
    pub description: &'static str,
    /// Only platform operators may do it; no role can carry it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub platform_only: bool,
}

/// A kind of thing callers act on.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    pub name: &'static str,
    pub description: &'static str,
    pub level: Level,
    pub actions: &'static [Action],
}

impl Resource {
    pub fn action(&self, name: &str) -> Option<&'static Action> {
        self.actions.iter().find(|a| a.name == name)
    }
}

const fn action(name: &'static str, description: &'static str) -> Action {
    Action {
        name,
        description,
        platform_only: false,
    }
}

const fn platform_action(name: &'static str, description: &'static str) -> Action {
    Action {
        name,
        description,
        platform_only: true,
    }
}

/// Reads, creates, updates and deletes: what most resources offer.
macro_rules! crud {
    ($what:literal) => {
        &[
            action("read", concat!("see ", $what, " and their status")),
            action("create", concat!("create ", $what)),
            action("update", concat!("change ", $what)),
            action("delete", concat!("delete ", $what)),
        ]
    };
}

/// Every resource, in the order a front end shows them.
pub const RESOURCES: &[Resource] = &[
    Resource {
        name: "tenant",
        description: "The tenant itself: its status and its tree of everything it owns",
        level: Level::Tenant,
        actions: &[
            action("read", "see the tenant's status and tree"),
            platform_action("list", "list every tenant of the platform"),
            platform_action("create", "onboard a tenant"),
            platform_action("delete", "offboard a tenant"),
        ],
    },
    Resource {
        name: "tenantSettings",
        description: "The tenant's identity, edge, custom domains and quotas",
        level: Level::Tenant,
        actions: &[
            action("read", "see the tenant's settings"),
            action(
                "updateIdentity",
                "change identity settings (login, MFA, identity providers)",
            ),
            action(
                "updateEdge",
                "change the edge (mutual TLS, allowed source ranges)",
            ),
            action("updateDomains", "add or remove custom domains"),
            action("updateQuotas", "change quotas"),
        ],
    },
    Resource {
        name: "scope",
        description: "A node of the tenant's organisation tree; a request names the parent scope to create one under it",
        level: Level::Scope,
        actions: &[
            action("read", "see scopes and their status"),
            action("create", "add a scope below this one"),
            action("update", "rename a scope"),
            action(
                "move",
                "move a scope to another parent (needed in both places)",
            ),
            action("delete", "remove a scope"),
        ],
    },
    Resource {
        name: "grant",
        description: "A role given to users, groups or service accounts in a scope",
        level: Level::Scope,
        actions: &[
            action("read", "see who holds which role"),
            action("create", "grant a role in this scope"),
            action("delete", "revoke a role in this scope"),
        ],
    },
    Resource {
        name: "groupMapping",
        description: "A group of the tenant's identity provider mapped to a role in a scope",
        level: Level::Scope,
        actions: &[
            action("read", "see how identity provider groups map to roles"),
            action("create", "map a group to a role in this scope"),
            action("delete", "remove a mapping"),
        ],
    },
    Resource {
        name: "role",
        description: "The tenant's own roles and policies",
        level: Level::Tenant,
        actions: crud!("the tenant's roles and policies"),
    },
    Resource {
        name: "environment",
        description: "A namespace per tenant environment, with its quota and messaging namespace",
        level: Level::Scope,
        actions: crud!("environments"),
    },
    Resource {
        name: "certificate",
        description: "Certificates from the tenant's CA or an ACME issuer",
        level: Level::Scope,
        actions: &[
            action("read", "see certificates and their status"),
            action("create", "request a certificate"),
            action("renew", "renew a certificate before its time"),
            action("delete", "remove a certificate"),
        ],
    },
    Resource {
        name: "topic",
        description: "Messaging topics and their schemas",
        level: Level::Scope,
        actions: crud!("topics"),
    },
    Resource {
        name: "serviceIdentity",
        description: "A service of the product: its credentials, certificate and topic grants",
        level: Level::Scope,
        actions: &[
            action("read", "see services and their status"),
            action("create", "register a service"),
            action("update", "change a service"),
            action("delete", "remove a service"),
            action("rotateCredentials", "rotate a service's credentials now"),
        ],
    },
    Resource {
        name: "workload",
        description: "A product service run by the platform",
        level: Level::Scope,
        actions: crud!("workloads"),
    },
    Resource {
        name: "audit",
        description: "The tenant's audit records",
        level: Level::Tenant,
        actions: &[action("read", "read the audit records of the tenant")],
    },
    Resource {
        name: "invocation",
        description: "Invocations of the API and their toggles",
        level: Level::Tenant,
        actions: &[
            action("read", "see the status of an invocation by its id"),
            action(
                "raiseLogLevel",
                "ask for more detailed logs of one invocation",
            ),
        ],
    },
];

pub fn resource(name: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.name == name)
}

/// Resource names, for messages.
pub fn resource_names() -> String {
    RESOURCES
        .iter()
        .map(|r| r.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Action names of a resource, for messages.
pub fn action_names(resource: &Resource) -> String {
    resource
        .actions
        .iter()
        .map(|a| a.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn names_are_unique_and_each_resource_can_be_read() {
        let names: BTreeSet<_> = RESOURCES.iter().map(|r| r.name).collect();
        assert_eq!(names.len(), RESOURCES.len());
        for resource in RESOURCES {
            let actions: BTreeSet<_> = resource.actions.iter().map(|a| a.name).collect();
            assert_eq!(actions.len(), resource.actions.len(), "{}", resource.name);
            assert!(resource.action("read").is_some(), "{}", resource.name);
        }
    }

    #[test]
    fn the_catalog_is_published_as_camel_case_data() {
        let json = serde_json::to_value(resource("tenant").unwrap()).unwrap();
        assert_eq!(json["level"], "tenant");
        assert_eq!(json["actions"][1]["name"], "list");
        assert_eq!(json["actions"][1]["platformOnly"], true);
        assert!(json["actions"][0].get("platformOnly").is_none());
        let settings = serde_json::to_value(resource("tenantSettings").unwrap()).unwrap();
        assert_eq!(settings["actions"][1]["name"], "updateIdentity");
    }
}
