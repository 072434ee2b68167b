//! Conditions as kstatus reads them: one per backend, rolled up into `Ready`.
//! Reasons are stable CamelCase constants; transition times move only when a
//! condition's status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

pub const READY: &str = "Ready";
pub const STALLED: &str = "Stalled";
pub const NAMESPACE_READY: &str = "NamespaceReady";
pub const REALM_READY: &str = "RealmReady";
pub const MESSAGING_READY: &str = "MessagingReady";
pub const SECRETS_READY: &str = "SecretsReady";
/// The tenant's own CA, in OpenBao.
pub const CERTIFICATE_AUTHORITY_READY: &str = "CertificateAuthorityReady";
/// A Certificate's key and certificate (and Secret, when asked for).
pub const CERTIFICATE_READY: &str = "CertificateReady";
/// A tenant's host served at the edge.
pub const EDGE_READY: &str = "EdgeReady";
/// A tenant's custom domains proven by DNS and held.
pub const DOMAINS_READY: &str = "DomainsReady";
/// An AcmeIssuer's account at its CA.
pub const ACCOUNT_READY: &str = "AccountReady";
/// A scope's group in Keycloak.
pub const GROUP_READY: &str = "GroupReady";
/// A scope's Roles and RoleBindings.
pub const RBAC_READY: &str = "RbacReady";
/// A TenantRole's policies and permissions, checked against the catalog.
pub const PERMISSIONS_READY: &str = "PermissionsReady";
/// A Topic's registered schema.
pub const SCHEMA_READY: &str = "SchemaReady";
/// A Topic's grants are those every ServiceIdentity declares.
pub const GRANTS_READY: &str = "GrantsReady";
/// A Workload's Deployment, with its available replicas.
pub const DEPLOYMENT_READY: &str = "DeploymentReady";
/// A Workload's ScaledObject or HPA.
pub const SCALING_READY: &str = "ScalingReady";
/// A Certificate with a new certificate on the way.
pub const ISSUING: &str = "Issuing";

/// Reasons, stable across releases: tooling may match on them.
pub mod reasons {
    pub const PROVISIONED: &str = "Provisioned";
    pub const PROGRESSING: &str = "Progressing";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const UNKNOWN_RESIDENCY: &str = "UnknownResidency";
    pub const DELETING: &str = "Deleting";
    /// A namespace the object needs exists and belongs to something else.
    pub const NAMESPACE_NOT_OWNED: &str = "NamespaceNotOwned";
    /// The tenant has not provisioned the backend this step builds on yet.
    pub const WAITING_FOR_TENANT: &str = "WaitingForTenant";
    pub const NOT_IN_TENANT_NAMESPACE: &str = "NotInTenantNamespace";
    pub const TENANT_NOT_FOUND: &str = "TenantNotFound";
    pub const REALM_CAPACITY_REACHED: &str = "RealmCapacityReached";
    pub const ISOLATION_IMMUTABLE: &str = "IsolationImmutable";
    pub const WAITING_FOR_SHARED_REALM: &str = "WaitingForSharedRealm";
    /// A Secret the spec refers to is missing, unlabelled or lacks the key.
    pub const SECRET_NOT_USABLE: &str = "SecretNotUsable";
    /// A certificate asks for a name its tenant does not own.
    pub const NAME_NOT_OWNED: &str = "NameNotOwned";
    /// A custom domain's TXT record is not there (yet).
    pub const DOMAIN_NOT_VERIFIED: &str = "DomainNotVerified";
    /// Another tenant holds a custom domain (or one above or below it).
    pub const DOMAIN_CLAIMED: &str = "DomainClaimed";
    /// The tenant CA signs only names under the tenant's own host.
    pub const NAME_OUTSIDE_TENANT_CA: &str = "NameOutsideTenantCA";
    /// The edge waits for the host's certificate.
    pub const WAITING_FOR_CERTIFICATE: &str = "WaitingForCertificate";
    /// The AcmeIssuer a certificate names is missing or not Ready.
    pub const WAITING_FOR_ISSUER: &str = "WaitingForIssuer";
    /// The issuer's rate limits hold a certificate back until a set time.
    pub const RATE_LIMITED: &str = "RateLimited";
    /// The issuer's challenge cannot validate a name (a wildcard over HTTP-01).
    pub const CHALLENGE_UNSUPPORTED: &str = "ChallengeUnsupported";
    /// The broker refused a new schema as incompatible; the live one stays.
    pub const SCHEMA_INCOMPATIBLE: &str = "SchemaIncompatible";
    /// A schema definition that does not parse as an Avro record.
    pub const INVALID_SCHEMA: &str = "InvalidSchema";
    /// A Topic waits for its Environment's Pulsar namespace.
    pub const WAITING_FOR_ENVIRONMENT: &str = "WaitingForEnvironment";
    /// A Topic's deletion waits for its clients and backlog.
    pub const DELETION_BLOCKED: &str = "DeletionBlocked";
    pub const INVALID_ROLE: &str = "InvalidRole";
    pub const ROLE_NOT_FOUND: &str = "RoleNotFound";
    /// Topics, ServiceIdentities and Workloads live in environment namespaces.
    pub const NOT_IN_ENVIRONMENT_NAMESPACE: &str = "NotInEnvironmentNamespace";
    /// A Workload names a ServiceIdentity that does not exist (yet).
    pub const SERVICE_IDENTITY_NOT_FOUND: &str = "ServiceIdentityNotFound";
    /// A grant or subscription names a Topic that does not exist (yet).
    pub const TOPIC_NOT_FOUND: &str = "TopicNotFound";
    /// A ServiceIdentity's owner is not a Scope of its tenant.
    pub const SCOPE_NOT_FOUND: &str = "ScopeNotFound";
    /// A Topic asks for more partitions than its tenant's quota allows.
    pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
    /// A Workload waits for its ServiceIdentity's ServiceAccount and Secret.
    pub const WAITING_FOR_SERVICE_IDENTITY: &str = "WaitingForServiceIdentity";
    /// A Workload's subscription waits for its Topic to be Ready.
    pub const WAITING_FOR_TOPIC: &str = "WaitingForTopic";
}

/// One backend's outcome in this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub condition: &'static str,
    pub ok: bool,
    pub reason: String,
    pub message: String,
}

impl Outcome {
    pub fn ready(condition: &'static str, message: impl Into<String>) -> Self {
        Self {
            condition,
            ok: true,
            reason: reasons::PROVISIONED.into(),
            message: message.into(),
        }
    }
    pub fn failed(condition: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            condition,
            ok: false,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Sets a condition, keeping its transition time unless the status flips.
pub fn set(conditions: &mut Vec<Condition>, new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            let time = if existing.status == new.status {
                existing.last_transition_time.clone()
            } else {
                new.last_transition_time.clone()
            };
            *existing = Condition {
                last_transition_time: time,
                ..new
            };
        }
        None => conditions.push(new),
    }
}

pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time: Time(Timestamp::now()),
    }
}

/// The conditions after this reconcile: one per outcome, `Ready` naming the
/// first backend that blocks, and `Stalled` when only a spec change can help.
pub fn roll_up(
    previous: &[Condition],
    outcomes: &[Outcome],
    stalled: Option<&Outcome>,
    generation: Option<i64>,
) -> Vec<Condition> {
    let mut conditions = previous.to_vec();
    for o in outcomes {
        set(
            &mut conditions,
            condition(o.condition, o.ok, &o.reason, &o.message, generation),
        );
    }
    let ready = match (stalled, outcomes.iter().find(|o| !o.ok)) {
        (Some(s), _) => condition(READY, false, &s.reason, &s.message, generation),
        (None, Some(blocking)) => condition(
            READY,
            false,
            &format!("{}NotReady", blocking.condition.trim_end_matches("Ready")),
            &blocking.message,
            generation,
        ),
        (None, None) => condition(
            READY,
            true,
            reasons::PROVISIONED,
            "every backend is provisioned",
            generation,
        ),
    };
    set(&mut conditions, ready);
    match stalled {
        Some(s) => set(
            &mut conditions,
            condition(STALLED, true, &s.reason, &s.message, generation),
        ),
        None => conditions.retain(|c| c.type_ != STALLED),
    }
    conditions
}

/// Ready for the current generation: a write now can only be drift.
pub fn settled(conditions: &[Condition], generation: Option<i64>) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == "True" && c.observed_generation == generation)
}

/// Whether condition `type_` is True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Whether a status says Stalled: only a change to the object (or a
/// related one) can help it.
pub fn is_stalled<S: ossature_crds::Conditioned>(status: Option<&S>) -> bool {
    status.is_some_and(|s| is_true(s.conditions(), STALLED))
}

/// Whether an object's status is Ready for the object's current generation
/// (a condition of an older spec says nothing of this one).
pub fn ready_for(
    conditions: &[Condition],
    status_generation: Option<i64>,
    generation: Option<i64>,
) -> bool {
    status_generation == generation && is_true(conditions, READY)
}

/// Equal apart from transition times: no status write is needed.
pub fn same(a: &[Condition], b: &[Condition]) -> bool {
    let strip = |c: &Condition| {
        (
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.message.clone(),
            c.observed_generation,
        )
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| strip(x) == strip(y))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_names_the_first_blocking_backend() {
        let outcomes = vec![
            Outcome::ready(NAMESPACE_READY, "ok"),
            Outcome::failed(
                REALM_READY,
                "BackendUnreachable",
                "Keycloak could not be reached",
            ),
            Outcome::failed(MESSAGING_READY, "BackendRefused", "no"),
        ];
        let conditions = roll_up(&[], &outcomes, None, Some(3));
        let ready = conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, "RealmNotReady");
        assert_eq!(ready.message, "Keycloak could not be reached");
        assert_eq!(ready.observed_generation, Some(3));
        assert!(conditions.iter().all(|c| c.type_ != STALLED));
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let first = roll_up(&[], &[Outcome::ready(NAMESPACE_READY, "ok")], None, Some(1));
        let mut old = first.clone();
        for c in &mut old {
            c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        }
        let again = roll_up(
            &old,
            &[Outcome::ready(NAMESPACE_READY, "ok")],
            None,
            Some(1),
        );
        assert!(
            again
                .iter()
                .all(|c| c.last_transition_time.0 == Timestamp::UNIX_EPOCH)
        );
        assert!(same(&again, &first));
        let flipped = roll_up(
            &old,
            &[Outcome::failed(NAMESPACE_READY, "BackendRefused", "x")],
            None,
            Some(1),
        );
        assert!(
            flipped
                .iter()
                .all(|c| c.last_transition_time.0 != Timestamp::UNIX_EPOCH)
        );
        assert!(!same(&flipped, &first));
    }

    #[test]
    fn stalled_wins_and_clears() {
        let stalled = Outcome::failed(
            STALLED,
            reasons::UNKNOWN_RESIDENCY,
            "no cluster for region mars",
        );
        let conditions = roll_up(&[], &[], Some(&stalled), Some(1));
        let ready = conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(ready.reason, reasons::UNKNOWN_RESIDENCY);
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == STALLED && c.status == "True")
        );
        let healed = roll_up(
            &conditions,
            &[Outcome::ready(NAMESPACE_READY, "ok")],
            None,
            Some(2),
        );
        assert!(healed.iter().all(|c| c.type_ != STALLED));
    }
}
