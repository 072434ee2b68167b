//! The control plane's own rights in Kubernetes, as data: the rules its
//! ServiceAccount needs and nothing more (no wildcard, no Secrets), the
//! ClusterRole, Role and bindings that grant them (printed by
//! `ossature-control-plane rbac`, rendered alike by the Helm chart), an
//! admission policy that keeps its namespace writes to tenants' namespaces
//! and its own (RBAC cannot name them in advance), and a check at start that
//! names any right it lacks.
//!
//! Every Kubernetes call the control plane makes, and the rule that allows it:
//! - watches (list, watch) of Tenants, Scopes, TenantRoles, Environments,
//!   Certificates, Topics, ServiceIdentities and Workloads, cluster-wide:
//!   tenants' namespaces are not known in advance;
//! - commands write them by server-side apply (patch, and create when the
//!   object is new; a dry run needs the same) and delete them (not
//!   Certificates); they read (get) Tenants, Scopes, Environments,
//!   ServiceIdentities (before a rotation) and tenants' Namespaces;
//! - changing a Scope's grants or group mappings takes `update` on
//!   `scopes/grants` or `scopes/groupmappings`, which the operator's
//!   admission policy asks of whoever changes them;
//! - a tenant's Namespace is applied at onboarding, the control plane's own
//!   made at start unless it is there (get, create);
//! - idempotency keys are ConfigMaps in its own namespace only: create
//!   (the claim), get, patch (the answer), delete (release, take-over and
//!   the sweeper), list by label (the sweeper and invocationStatus), watch
//!   (a key in flight on another replica, for a second);
//! - SelfSubjectAccessReviews, to name at start any of these it lacks.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client, Resource};
use ossature_crds::{
    Certificate, Environment, Scope, ServiceIdentity, Tenant, TenantRole, Topic, Workload,
};

/// Watched, applied (a patch; a create when new) and deleted, never read
/// but from the watch.
const APPLIED: &[&str] = &["list", "watch", "create", "patch", "delete"];
/// Watched, read before a change, applied (a patch; a create when new) and deleted.
const MANAGED: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];

/// A rule granting `verbs` on the objects of `K`.
fn rule<K: Resource<DynamicType = ()>>(verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![K::group(&()).into_owned()]),
        resources: Some(vec![K::plural(&()).into_owned()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    }
}

/// A rule granting `verbs` on `subresources` of the objects of `K`.
fn rule_on<K: Resource<DynamicType = ()>>(subresources: &[&str], verbs: &[&str]) -> PolicyRule {
    let mut rule = rule::<K>(verbs);
    let plural = K::plural(&());
    rule.resources = Some(
        subresources
            .iter()
            .map(|sub| format!("{plural}/{sub}"))
            .collect(),
    );
    rule
}

/// What the control plane needs in every namespace and of cluster-scoped
/// objects. A kind more is one line here.
pub fn cluster_rules() -> Vec<PolicyRule> {
    vec![
        rule::<Tenant>(MANAGED),
        rule::<Scope>(MANAGED),
        // Asked by the operator's admission policy of whoever changes a
        // Scope's grants or group mappings (no such subresource is served):
        // the control plane's own decision stands behind each change.
        rule_on::<Scope>(&["grants", "groupmappings"], &["update"]),
        rule::<TenantRole>(APPLIED),
        rule::<Environment>(MANAGED),
        rule::<Certificate>(&["list", "watch", "create", "patch"]),
        rule::<Topic>(APPLIED),
        // Read before its credentials are rotated.
        rule::<ServiceIdentity>(MANAGED),
        rule::<Workload>(APPLIED),
        // Tenants' namespaces are applied at onboarding; never listed or deleted.
        rule::<Namespace>(&["get", "create", "patch"]),
        // Only what the caller itself may do is answered: it names missing rights.
        PolicyRule {
            api_groups: Some(vec!["authorization.k8s.io".into()]),
            resources: Some(vec!["selfsubjectaccessreviews".into()]),
            verbs: vec!["create".into()],
            ..Default::default()
        },
    ]
}

/// What the control plane needs in its own namespace (`--state-namespace`):
/// its idempotency keys.
pub fn namespace_rules() -> Vec<PolicyRule> {
    vec![rule::<ConfigMap>(&[
        "get", "list", "watch", "create", "patch", "delete",
    ])]
}

/// Where the rules are kept as YAML for what is not Rust (the Helm chart),
/// relative to the crate; a test fails when it differs from the rules.
pub const RULES_FILE: &str = "rbac-rules.yaml";

/// Both sets of rules as one YAML document (`clusterRules`,
/// `namespaceRules`), the form a chart renders them from.
pub fn rules_yaml() -> Result<String, serde_norway::Error> {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Rules {
        cluster_rules: Vec<PolicyRule>,
        namespace_rules: Vec<PolicyRule>,
    }
    let rules = serde_norway::to_string(&Rules {
        cluster_rules: cluster_rules(),
        namespace_rules: namespace_rules(),
    })?;
    Ok(format!(
        "# The control plane's rules: `ossature-control-plane rbac --rules` writes this file.\n{rules}"
    ))
}

/// Where the Helm chart keeps, relative to this crate, a copy of the rules
/// file and the namespace policy of a grantee named by [`CHART_GRANTEE`]'s
/// placeholders, which its templates replace with the release's names.
pub const CHART_RULES_FILE: &str = "../charts/ossature/files/control-plane-rbac-rules.yaml";
pub const CHART_POLICY_FILE: &str = "../charts/ossature/files/control-plane-namespace-policy.yaml";

/// The grantee whose names the chart's templates replace: the ClusterRole's
/// name, the release's namespace, the ServiceAccount. No one is a prefix of
/// another, and none occurs in the policy by itself.
pub const CHART_GRANTEE: [&str; 3] = [
    "ossature-granted-role",
    "ossature-grantee-namespace",
    "ossature-grantee-account",
];

/// The namespace policy and its binding as the chart keeps them (names as
/// placeholders).
pub fn chart_namespace_policy() -> Result<String, serde_norway::Error> {
    let [name, namespace, service_account] = CHART_GRANTEE.map(String::from);
    let grants = Grantee {
        service_account,
        namespace,
        name,
    }
    .grants();
    Ok(format!(
        "# What `ossature-control-plane rbac` prints of its namespace policy, for the chart; a test keeps it so.\n{}---\n{}",
        serde_norway::to_string(&grants.namespace_policy)?,
        serde_norway::to_string(&grants.namespace_policy_binding)?
    ))
}

/// Who is granted the rules, and what the granting objects are called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grantee {
    /// The control plane's ServiceAccount.
    pub service_account: String,
    /// Its namespace, which is also the control plane's `--state-namespace`.
    pub namespace: String,
    /// Name of the ClusterRole, the Role and their bindings.
    pub name: String,
}

/// The objects that grant the rules, and the admission policy that limits
/// what RBAC cannot.
#[derive(Debug, Clone)]
pub struct Grants {
    pub cluster_role: ClusterRole,
    pub cluster_role_binding: ClusterRoleBinding,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub namespace_policy: ValidatingAdmissionPolicy,
    pub namespace_policy_binding: ValidatingAdmissionPolicyBinding,
}

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".into(),
            "ossature-control-plane".into(),
        ),
        ("app.kubernetes.io/part-of".into(), "ossature".into()),
    ])
}

impl Grantee {
    fn meta(&self, namespace: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(self.name.clone()),
            namespace: namespace.map(String::from),
            labels: Some(labels()),
            ..Default::default()
        }
    }

    fn subjects(&self) -> Option<Vec<Subject>> {
        Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: self.service_account.clone(),
            namespace: Some(self.namespace.clone()),
            ..Default::default()
        }])
    }

    /// The ServiceAccount's user name, as the apiserver sees it.
    pub fn user(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }

    /// The policy that keeps the control plane's namespace writes, which RBAC
    /// can only grant on every namespace, to tenants' namespaces
    /// (`tn-<tenant>`, labelled for that tenant) and its own, and to its own
    /// label and annotations on them: it cannot relabel another namespace
    /// (for example to lift its pod security).
    fn namespace_policy(&self) -> (ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding) {
        let name = format!("{}-namespaces", self.name);
        let tenant_label = ossature_model::names::TENANT_LABEL;
        let prefix = ossature_model::tenant_namespace("");
        let annotations = crate::context::ANNOTATION_PREFIX;
        // Keys of `new` that differ from `old`, and keys of `old` gone from `new`.
        let changed = |new: &str, old: &str| {
            format!(
                "variables.{new}.filter(k, !(k in variables.{old}) || variables.{old}[k] != variables.{new}[k]) + variables.{old}.filter(k, !(k in variables.{new}))"
            )
        };
        let policy = serde_json::json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name, "labels": labels()},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": [""], "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"], "resources": ["namespaces"],
                }]},
                "matchConditions": [{
                    "name": "control-plane",
                    "expression": format!("request.userInfo.username == '{}'", self.user()),
                }],
                "variables": [
                    {"name": "labels", "expression": "has(object.metadata.labels) ? object.metadata.labels : {}"},
                    {"name": "oldLabels", "expression": "request.operation == 'UPDATE' && has(oldObject.metadata.labels) ? oldObject.metadata.labels : {}"},
                    {"name": "annotations", "expression": "has(object.metadata.annotations) ? object.metadata.annotations : {}"},
                    {"name": "oldAnnotations", "expression": "request.operation == 'UPDATE' && has(oldObject.metadata.annotations) ? oldObject.metadata.annotations : {}"},
                    {"name": "tenant", "expression": format!("'{tenant_label}' in variables.labels ? variables.labels['{tenant_label}'] : ''")},
                ],
                "validations": [
                    {
                        "expression": format!("object.metadata.name == '{own}' || (variables.tenant != '' && object.metadata.name == '{prefix}' + variables.tenant)", own = self.namespace),
                        "messageExpression": format!("'the control plane writes only its own namespace ({own}) and the namespaces of tenants ({prefix}<tenant>, labelled {tenant_label}=<tenant>), not ' + object.metadata.name", own = self.namespace),
                        "reason": "Forbidden",
                    },
                    {
                        // On creation the apiserver adds kubernetes.io/metadata.name.
                        "expression": format!("({}).all(k, k == '{tenant_label}' || (request.operation == 'CREATE' && k == 'kubernetes.io/metadata.name'))", changed("labels", "oldLabels")),
                        "message": format!("the control plane sets no label of a namespace but {tenant_label}"),
                        "reason": "Forbidden",
                    },
                    {
                        "expression": format!("({}).all(k, k.startsWith('{annotations}'))", changed("annotations", "oldAnnotations")),
                        "message": format!("the control plane sets no annotation of a namespace but its own ({annotations}...)"),
                        "reason": "Forbidden",
                    },
                ],
            },
        });
        let binding = serde_json::json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name, "labels": labels()},
            "spec": {"policyName": name, "validationActions": ["Deny"]},
        });
        (
            serde_json::from_value(policy)
                .expect("the namespace policy is a ValidatingAdmissionPolicy"),
            serde_json::from_value(binding)
                .expect("its binding is a ValidatingAdmissionPolicyBinding"),
        )
    }

    /// The ClusterRole and Role of the rules, each bound to the ServiceAccount,
    /// and the policy on its namespace writes.
    pub fn grants(&self) -> Grants {
        let (namespace_policy, namespace_policy_binding) = self.namespace_policy();
        let role_ref = |kind: &str| RoleRef {
            api_group: Some(RBAC_GROUP.into()),
            kind: kind.into(),
            name: self.name.clone(),
        };
        Grants {
            cluster_role: ClusterRole {
                metadata: self.meta(None),
                rules: Some(cluster_rules()),
                ..Default::default()
            },
            cluster_role_binding: ClusterRoleBinding {
                metadata: self.meta(None),
                role_ref: role_ref("ClusterRole"),
                subjects: self.subjects(),
            },
            role: Role {
                metadata: self.meta(Some(&self.namespace)),
                rules: Some(namespace_rules()),
            },
            role_binding: RoleBinding {
                metadata: self.meta(Some(&self.namespace)),
                role_ref: role_ref("Role"),
                subjects: self.subjects(),
            },
            namespace_policy,
            namespace_policy_binding,
        }
    }
}

impl Grants {
    /// The objects as one YAML stream, for `kubectl apply -f -`.
    pub fn to_yaml(&self) -> Result<String, serde_norway::Error> {
        let documents = [
            serde_norway::to_string(&self.cluster_role)?,
            serde_norway::to_string(&self.cluster_role_binding)?,
            serde_norway::to_string(&self.role)?,
            serde_norway::to_string(&self.role_binding)?,
            serde_norway::to_string(&self.namespace_policy)?,
            serde_norway::to_string(&self.namespace_policy_binding)?,
        ];
        Ok(documents
            .iter()
            .map(|d| format!("---\n{d}"))
            .collect::<String>())
    }
}

/// The flags of `rbac`.
#[derive(clap::Args, Debug, Clone)]
pub struct RbacArgs {
    /// The ServiceAccount the control plane runs as.
    #[arg(long, default_value = "ossature-control-plane", value_parser = parse_name)]
    pub service_account: String,
    /// The ServiceAccount's namespace, where the control plane keeps its
    /// idempotency keys (its --state-namespace).
    #[arg(long, env = "OSSATURE_CP_STATE_NAMESPACE", default_value = "ossature-system", value_parser = parse_name)]
    pub namespace: String,
    /// Name of the ClusterRole, the Role and their bindings (the admission
    /// policy's is this and `-namespaces`). Default: the ServiceAccount's name.
    #[arg(long, value_parser = parse_name)]
    pub name: Option<String>,
    /// Print only the rules (`clusterRules` and `namespaceRules`), as the
    /// Helm chart renders them, instead of the objects.
    #[arg(long)]
    pub rules: bool,
}

impl RbacArgs {
    /// What `rbac` prints.
    pub fn yaml(&self) -> Result<String, serde_norway::Error> {
        if self.rules {
            rules_yaml()
        } else {
            self.grantee().grants().to_yaml()
        }
    }

    pub fn grantee(&self) -> Grantee {
        Grantee {
            service_account: self.service_account.clone(),
            namespace: self.namespace.clone(),
            name: self
                .name
                .clone()
                .unwrap_or_else(|| self.service_account.clone()),
        }
    }
}

fn parse_name(value: &str) -> Result<String, String> {
    crate::api::validate::dns_label(value, 63).map(|()| value.to_string())
}

/// Every (namespace, group, resource, verb) the rules grant: `None` for
/// cluster-wide.
fn rights(namespace: &str) -> Vec<(Option<String>, String, String, String)> {
    let expand = |rules: Vec<PolicyRule>, namespace: Option<&str>| {
        rules
            .into_iter()
            .flat_map(|rule| {
                let groups = rule.api_groups.unwrap_or_default();
                let resources = rule.resources.unwrap_or_default();
                let mut rights = Vec::new();
                for group in &groups {
                    for resource in &resources {
                        for verb in &rule.verbs {
                            rights.push((
                                namespace.map(String::from),
                                group.clone(),
                                resource.clone(),
                                verb.clone(),
                            ));
                        }
                    }
                }
                rights
            })
            .collect::<Vec<_>>()
    };
    let mut all = expand(cluster_rules(), None);
    all.extend(expand(namespace_rules(), Some(namespace)));
    all
}

/// The rights of the rules that the client's identity lacks, in words
/// (`patch tenants.ossature.dev cluster-wide`), asked of the apiserver.
pub async fn missing_rights(client: &Client, namespace: &str) -> Result<Vec<String>, kube::Error> {
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let asks = rights(namespace)
        .into_iter()
        .map(|(ns, group, resource, verb)| {
            let reviews = reviews.clone();
            async move {
                let (plural, subresource) = match resource.split_once('/') {
                    Some((plural, sub)) => (plural.to_string(), Some(sub.to_string())),
                    None => (resource.clone(), None),
                };
                let review = SelfSubjectAccessReview {
                    spec: SelfSubjectAccessReviewSpec {
                        resource_attributes: Some(ResourceAttributes {
                            namespace: ns.clone(),
                            group: Some(group.clone()),
                            resource: Some(plural),
                            subresource,
                            verb: Some(verb.clone()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                let answer = reviews.create(&PostParams::default(), &review).await?;
                let allowed = answer.status.is_some_and(|s| s.allowed);
                let qualified = if group.is_empty() {
                    resource
                } else {
                    format!("{resource}.{group}")
                };
                let place = match ns {
                    Some(ns) => format!("in namespace {ns}"),
                    None => "cluster-wide".into(),
                };
                Ok((!allowed).then(|| format!("{verb} {qualified} {place}")))
            }
        });
    let answers: Vec<Result<Option<String>, kube::Error>> = futures::future::join_all(asks).await;
    answers.into_iter().filter_map(Result::transpose).collect()
}

/// Fails, naming them, when the client's identity lacks any of the rights;
/// an apiserver that cannot be asked is only warned of.
pub async fn require_rights(client: &Client, namespace: &str) -> anyhow::Result<()> {
    match missing_rights(client, namespace).await {
        Ok(missing) if missing.is_empty() => Ok(()),
        Ok(missing) => anyhow::bail!(
            "the control plane's identity lacks rights it needs: {}; grant its ServiceAccount what `ossature-control-plane rbac --service-account <name> --namespace {namespace}` prints",
            missing.join(", ")
        ),
        Err(e) => {
            tracing::warn!("asking the apiserver which rights the control plane holds failed: {e}");
            Ok(())
        }
    }
}

/// Whether the apiserver refused a call because the control plane's own
/// identity lacks the right (RBAC), rather than for the object (quota,
/// admission).
pub fn refused_by_rbac(status: &kube::core::Status) -> bool {
    status.code == 403 && status.message.contains("is forbidden: User \"")
}

/// What to say when the control plane's identity lacks a right.
pub fn lacking(doing: &str, status: &kube::core::Status) -> String {
    format!(
        "{doing}: {}; the control plane's ServiceAccount lacks this right: grant it what `ossature-control-plane rbac` prints",
        status.message
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_read_is_watched_and_every_write_can_create() {
        for rule in cluster_rules() {
            let verbs = &rule.verbs;
            let has = |v: &str| verbs.iter().any(|x| x == v);
            // Server-side apply of a new object is a create as well as a patch.
            assert!(!has("patch") || has("create"), "{rule:?}");
            if has("watch") {
                assert!(has("list"), "{rule:?}");
            }
        }
        let kinds: Vec<String> = cluster_rules()
            .iter()
            .flat_map(|r| r.resources.clone().unwrap_or_default())
            .collect();
        for kind in [
            "tenants",
            "scopes",
            "tenantroles",
            "environments",
            "certificates",
            "topics",
            "serviceidentities",
            "workloads",
        ] {
            assert!(kinds.iter().any(|k| k == kind), "{kind} missing");
        }
    }

    #[test]
    fn the_grants_bind_the_service_account_in_its_namespace() {
        let grantee = RbacArgs {
            service_account: "cp".into(),
            namespace: "platform".into(),
            name: None,
            rules: false,
        }
        .grantee();
        let grants = grantee.grants();
        assert_eq!(grants.cluster_role.metadata.name.as_deref(), Some("cp"));
        assert_eq!(grants.role.metadata.namespace.as_deref(), Some("platform"));
        assert_eq!(grants.role_binding.role_ref.kind, "Role");
        assert_eq!(grants.cluster_role_binding.role_ref.kind, "ClusterRole");
        let subject = &grants.role_binding.subjects.as_ref().unwrap()[0];
        assert_eq!(
            (subject.name.as_str(), subject.namespace.as_deref()),
            ("cp", Some("platform"))
        );
        let yaml = grants.to_yaml().unwrap();
        let kinds: Vec<String> = yaml
            .split("---\n")
            .filter(|d| !d.is_empty())
            .map(|d| {
                let value: serde_json::Value = serde_norway::from_str(d).unwrap();
                format!("{} {}", value["apiVersion"], value["kind"])
            })
            .collect();
        assert_eq!(
            kinds,
            [
                r#""rbac.authorization.k8s.io/v1" "ClusterRole""#,
                r#""rbac.authorization.k8s.io/v1" "ClusterRoleBinding""#,
                r#""rbac.authorization.k8s.io/v1" "Role""#,
                r#""rbac.authorization.k8s.io/v1" "RoleBinding""#,
                r#""admissionregistration.k8s.io/v1" "ValidatingAdmissionPolicy""#,
                r#""admissionregistration.k8s.io/v1" "ValidatingAdmissionPolicyBinding""#,
            ]
        );
    }

    #[test]
    fn the_rules_file_is_the_rules() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let files = [
            (RULES_FILE, rules_yaml().unwrap()),
            (CHART_RULES_FILE, rules_yaml().unwrap()),
            (CHART_POLICY_FILE, chart_namespace_policy().unwrap()),
        ];
        for (file, wanted) in files {
            let path = dir.join(file);
            if std::env::var_os("UPDATE_RBAC").is_some() {
                std::fs::write(&path, &wanted).unwrap();
            }
            let kept = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                kept == wanted,
                "{} differs from the rules; write it again: UPDATE_RBAC=1 cargo test -p ossature-control-plane --lib rbac",
                path.display()
            );
        }
        let policy = chart_namespace_policy().unwrap();
        for (i, token) in CHART_GRANTEE.iter().enumerate() {
            assert!(policy.contains(token), "{token} is in the policy");
            for (j, other) in CHART_GRANTEE.iter().enumerate() {
                assert!(
                    i == j || !other.contains(token),
                    "{token} is part of {other}"
                );
            }
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(parse_name("ossature-control-plane").is_ok());
        assert!(parse_name("Ossature").is_err());
        assert!(parse_name("a*").is_err());
    }

    #[test]
    fn only_refusals_of_the_identity_are_told_apart() {
        let status = |message: &str| kube::core::Status {
            code: 403,
            message: message.into(),
            ..Default::default()
        };
        assert!(refused_by_rbac(&status(
            r#"tenants.ossature.dev "a" is forbidden: User "system:serviceaccount:x:cp" cannot patch resource "tenants" in API group "ossature.dev" at the cluster scope"#
        )));
        assert!(!refused_by_rbac(&status(
            r#"scopes.ossature.dev "a" is forbidden: exceeded quota: q, requested: count/scopes.ossature.dev=1"#
        )));
        assert!(!refused_by_rbac(&status(
            r#"admission webhook "x" denied the request"#
        )));
    }
}
