//! What a Tenant's own reconcile makes, and what each Scope's makes.

use std::collections::BTreeMap;

use kube::ResourceExt;
use ossature_crds::{DomainState, Isolation, Scope};
use serde_json::{Value, json};

use super::{Backend, Key, Kind, Object, Owned, Settings, kubernetes, object};
use crate::certificates::{self, LEAF_ROLE, SERVICE_ROLE, issuer_name, record_path};
use crate::conditions::{
    CERTIFICATE_AUTHORITY_READY, CERTIFICATE_READY, DOMAINS_READY, EDGE_READY, GROUP_READY,
    MESSAGING_READY, NAMESPACE_READY, RBAC_READY, REALM_READY, SECRETS_READY,
};
use crate::identity::{self, IdentityProviderSettings, SCOPE_NAME, SECRET_HASH_CONFIG};
use crate::messaging::allowed_clusters;
use crate::names::TenantNames;
use crate::objects::{NamespaceObjects, namespace_objects};
use crate::scopes::{ScopeTree, path_string, rbac_objects, standard_scope_rules};
use crate::secrets::tenant_policy_of;
use crate::services::spiffe_uri_sans;

pub(super) fn objects(owned: &Owned, settings: &Settings) -> Vec<Object> {
    let owner = Key::of(Kind::Tenant, owned.tenant);
    let names = &owned.names;
    let spec = &owned.tenant.spec;
    let mut all = namespace(
        namespace_objects(&names.namespace, &names.tenant, None, &spec.quotas),
        &owner,
    );
    all.extend(keycloak(owned, &owner));
    let clusters = allowed_clusters(&spec.residency, &settings.platform.residency);
    all.push(object(
        pulsar_tenant(names),
        None,
        &owner,
        MESSAGING_READY,
        json!({"allowedClusters": clusters}),
    ));
    all.extend(openbao(names, &owner));
    all.extend(authority(owned, settings, &owner));
    if settings.edge {
        all.extend(edge(owned, settings, &owner));
    }
    all
}

/// A tenant's or an environment's namespace and what is in it.
pub(super) fn namespace(objects: NamespaceObjects, owner: &Key) -> Vec<Object> {
    let namespace = kubernetes(
        Kind::Namespace,
        &objects.namespace,
        None,
        owner,
        NAMESPACE_READY,
    );
    let within = Some(&namespace.key);
    let mut all = vec![
        kubernetes(
            Kind::ResourceQuota,
            &objects.quota,
            within,
            owner,
            NAMESPACE_READY,
        ),
        kubernetes(
            Kind::LimitRange,
            &objects.limits,
            within,
            owner,
            NAMESPACE_READY,
        ),
    ];
    for policy in &objects.policies {
        all.push(kubernetes(
            Kind::NetworkPolicy,
            policy,
            within,
            owner,
            NAMESPACE_READY,
        ));
    }
    all.insert(0, namespace);
    all
}

pub(super) fn pulsar_tenant(names: &TenantNames) -> Key {
    Key::new(Backend::Pulsar, Kind::PulsarTenant, &names.pulsar_tenant)
}

/// Where the tenant's people live: `(realm, organization alias)`.
pub(super) fn identity_home(owned: &Owned) -> (String, Option<String>) {
    let spec = &owned.tenant.spec;
    let realm = identity::realm_of(&owned.names, spec, owned.isolation);
    let organization = match owned.isolation {
        Isolation::Realm => None,
        Isolation::Organization => Some(identity::organization_settings(&owned.names, spec).alias),
    };
    (realm, organization)
}

/// Its realm (or organization in the shared realm), client, scope claim
/// and identity providers.
fn keycloak(owned: &Owned, owner: &Key) -> Vec<Object> {
    let (names, spec) = (&owned.names, &owned.tenant.spec);
    let client = identity::client_settings(names, spec, owned.isolation);
    let (realm, _) = identity_home(owned);
    let (home, fields) = match owned.isolation {
        Isolation::Realm => (
            Key::new(Backend::Keycloak, Kind::Realm, &realm),
            to_json(&identity::realm_settings(names, spec)),
        ),
        Isolation::Organization => {
            let settings = identity::organization_settings(names, spec);
            let name = format!("{realm}/{}", settings.alias);
            (
                Key::new(Backend::Keycloak, Kind::Organization, name),
                to_json(&settings),
            )
        }
    };
    let mut all = vec![object(home.clone(), None, owner, REALM_READY, fields)];
    if owned.isolation == Isolation::Realm {
        // Its own realm carries the scope paths in a client scope of its own.
        let name = format!("{realm}/{SCOPE_NAME}");
        all.push(object(
            Key::new(Backend::Keycloak, Kind::ClientScope, name),
            Some(&home),
            owner,
            REALM_READY,
            json!({"claim": identity::SCOPE_CLAIM}),
        ));
    }
    all.push(object(
        Key::new(
            Backend::Keycloak,
            Kind::Client,
            format!("{realm}/{}", client.client_id),
        ),
        Some(&home),
        owner,
        REALM_READY,
        to_json(&client),
    ));
    let paths = scope_paths(owned);
    for provider in &spec.identity.identity_providers {
        // The client secret is not known here: its hash is left out.
        let settings = identity::identity_provider_settings(
            &names.tenant,
            owned.isolation,
            provider,
            None,
            &paths,
        );
        all.push(object(
            Key::new(
                Backend::Keycloak,
                Kind::IdentityProvider,
                format!("{realm}/{}", settings.alias),
            ),
            Some(&home),
            owner,
            REALM_READY,
            provider_fields(&settings),
        ));
    }
    all
}

fn provider_fields(settings: &IdentityProviderSettings) -> Value {
    let mut config = settings.config.clone();
    config.remove(SECRET_HASH_CONFIG);
    json!({
        "displayName": settings.display_name,
        "provider": settings.provider,
        "config": config,
        "metadataUrl": settings.metadata_url,
        "mappers": settings.mappers,
    })
}

/// The scope tree of the tenant's Scopes.
pub(super) fn scope_tree(owned: &Owned) -> ScopeTree {
    ScopeTree::new(
        owned
            .scopes
            .iter()
            .map(|s| (s.name_any(), s.spec.parent.clone())),
    )
}

/// The path of each Scope with a place in the tree.
fn scope_paths(owned: &Owned) -> BTreeMap<String, String> {
    let tree = scope_tree(owned);
    owned
        .scopes
        .iter()
        .filter_map(|s| Some((s.name_any(), path_string(&tree.path(&s.name_any()).ok()?))))
        .collect()
}

/// Its KV mount, transit mount and key, and the policy granting them.
fn openbao(names: &TenantNames, owner: &Key) -> Vec<Object> {
    let kv = Key::new(Backend::OpenBao, Kind::KvMount, &names.kv_mount);
    let transit = Key::new(Backend::OpenBao, Kind::TransitMount, &names.transit_mount);
    vec![
        object(
            kv.clone(),
            None,
            owner,
            SECRETS_READY,
            json!({"type": "kv", "version": 2, "description": names.kv_description()}),
        ),
        object(
            transit.clone(),
            None,
            owner,
            SECRETS_READY,
            json!({"type": "transit"}),
        ),
        object(
            Key::new(
                Backend::OpenBao,
                Kind::TransitKey,
                format!("{}/{}", names.transit_mount, names.transit_key),
            ),
            Some(&transit),
            owner,
            SECRETS_READY,
            json!({}),
        ),
        object(
            Key::new(Backend::OpenBao, Kind::Policy, &names.policy),
            None,
            owner,
            SECRETS_READY,
            json!({"policy": tenant_policy_of(names)}),
        ),
    ]
}

/// Its CA: the PKI mount, each trusted generation's issuer, and the roles
/// leaves are signed with (`service` once a certificate names a URI).
fn authority(owned: &Owned, settings: &Settings, owner: &Key) -> Vec<Object> {
    let names = &owned.names;
    let mount = Key::new(Backend::OpenBao, Kind::PkiMount, &names.pki_mount);
    let host = names.host(&settings.platform.root_domain);
    let wanted = owned.tenant.spec.certificate_authority.generation;
    let mut generations: Vec<i64> = owned
        .tenant
        .status
        .as_ref()
        .and_then(|s| s.certificate_authority.as_ref())
        .map(|ca| ca.generations.iter().map(|g| g.generation).collect())
        .unwrap_or_default();
    if !generations.contains(&wanted) {
        generations.push(wanted);
    }
    generations.sort();
    let common_name = certificates::authority::common_name(&names.tenant);
    let mut all = vec![object(
        mount.clone(),
        None,
        owner,
        CERTIFICATE_AUTHORITY_READY,
        json!({"type": "pki", "commonName": common_name}),
    )];
    for generation in generations {
        all.push(object(
            Key::new(
                Backend::OpenBao,
                Kind::PkiIssuer,
                format!("{}/{}", names.pki_mount, issuer_name(generation)),
            ),
            Some(&mount),
            owner,
            CERTIFICATE_AUTHORITY_READY,
            json!({"domains": [host], "default": generation == wanted}),
        ));
    }
    let role = |name: &str, uris: Vec<String>| {
        object(
            Key::new(
                Backend::OpenBao,
                Kind::PkiRole,
                format!("{}/{name}", names.pki_mount),
            ),
            Some(&mount),
            owner,
            CERTIFICATE_AUTHORITY_READY,
            json!({"domains": [host], "uriSans": uris}),
        )
    };
    all.push(role(LEAF_ROLE, Vec::new()));
    if names_uris(owned) {
        let uris = spiffe_uri_sans(&names.tenant, &settings.platform.root_domain);
        all.push(role(SERVICE_ROLE, uris));
    }
    all
}

/// Whether one of the tenant's certificates names a URI: each
/// ServiceIdentity's does, and so may one of its own.
fn names_uris(owned: &Owned) -> bool {
    !owned.identities.is_empty() || owned.certificates.iter().any(|c| !c.spec.uris.is_empty())
}

/// Its host at the edge: the host's Certificate and where its key is
/// kept, the route, and each custom domain.
fn edge(owned: &Owned, settings: &Settings, owner: &Key) -> Vec<Object> {
    let names = &owned.names;
    let status = owned.tenant.status.as_ref();
    let held: Vec<String> = status
        .map(|s| s.verified_domains().map(String::from).collect())
        .unwrap_or_default();
    let host = names.host(&settings.platform.root_domain);
    let issuer = settings.platform.host_issuer.as_deref();
    let certificate = certificates::host::certificate(owned.tenant, names, &host, &held, issuer);
    let mut all = vec![kubernetes(
        Kind::Certificate,
        &certificate,
        None,
        owner,
        CERTIFICATE_READY,
    )];
    all.extend(super::environments::certificate_record(
        names,
        &certificate,
        CERTIFICATE_READY,
    ));
    let edge = &owned.tenant.spec.edge;
    let route = json!({
        "clientAuth": edge.client_auth.as_ref().map(|c| json!({"mode": c.mode, "caBundle": c.ca_bundle.is_some()})),
        "allowedSourceRanges": edge.allowed_source_ranges,
    });
    all.push(object(
        Key::new(Backend::Edge, Kind::Host, &host),
        None,
        owner,
        EDGE_READY,
        route,
    ));
    for domain in &owned.tenant.spec.domains {
        let state = status
            .and_then(|s| s.domains.iter().find(|d| &d.name == domain))
            .map(|d| d.state);
        all.push(object(
            Key::new(Backend::Edge, Kind::Domain, domain),
            None,
            owner,
            DOMAINS_READY,
            json!({"record": crate::domains::record_name(domain), "served": state == Some(DomainState::Verified)}),
        ));
    }
    all
}

/// A Scope's group and the Roles and RoleBindings of its grants.
pub(super) fn scope(owned: &Owned, scope: &Scope) -> Vec<Object> {
    let owner = Key::of(Kind::Scope, scope);
    let name = scope.name_any();
    let tree = scope_tree(owned);
    // Out of the tree (a missing parent, a cycle): the Scope is Stalled.
    let Ok(path) = tree.path(&name) else {
        return Vec::new();
    };
    let path = path_string(&path);
    let (realm, organization) = identity_home(owned);
    let home = match &organization {
        Some(alias) => format!("{realm}/{alias}"),
        None => realm,
    };
    let mut all = vec![object(
        Key::new(Backend::Keycloak, Kind::Group, format!("{home}{path}")),
        None,
        &owner,
        GROUP_READY,
        json!({"path": path, "attributes": {"scopePath": [path]}}),
    )];
    let rules_of = |role: &str| {
        owned
            .role_rules
            .get(role)
            .cloned()
            .or_else(|| standard_scope_rules(role))
            .ok_or_else(|| format!("role {role} is unknown"))
    };
    let (objects, _) = rbac_objects(
        &owned.names.namespace,
        scope,
        &tree.subtree(&name),
        &rules_of,
    );
    for (role, binding) in objects {
        all.push(kubernetes(Kind::Role, &role, None, &owner, RBAC_READY));
        all.push(kubernetes(
            Kind::RoleBinding,
            &binding,
            None,
            &owner,
            RBAC_READY,
        ));
    }
    all
}

/// Where a certificate's record is kept, in the tenant's KV mount.
pub(super) fn record_key(names: &TenantNames, namespace: &str, name: &str) -> Key {
    Key::new(
        Backend::OpenBao,
        Kind::KvSecret,
        format!("{}/{}", names.kv_mount, record_path(namespace, name)),
    )
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}
