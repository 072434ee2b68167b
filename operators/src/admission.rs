//! Admission rules that need an operator setting, so cannot sit in a CRD:
//! a ValidatingAdmissionPolicy, written by the operator at start with the
//! root domain in its expressions. A Certificate asking for a name under the
//! root domain that is not its tenant's, or for a URI that is not one of its
//! tenant's workloads, or a Tenant listing such a name as a custom domain,
//! is refused before it is stored. So is a change to a Scope's grants by
//! someone who may update the Scope but not grant in it.

use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use ossature_model::names::FIELD_MANAGER;

pub const CERTIFICATE_NAMES: &str = "ossature-certificate-names";

/// The policy: a Certificate lives in a tenant namespace, and each of its
/// names under `root_domain` is `<tenant>.<root_domain>` or below it.
/// Names outside the root domain (custom domains) are the operator's to
/// check, against what the tenant has proven.
pub fn certificate_names_policy(root_domain: &str) -> Value {
    // A CEL string literal: the root is a DNS name (checked by its flag), so
    // it holds no quote.
    let root = format!("'{root_domain}'");
    policy(
        CERTIFICATE_NAMES,
        "certificates",
        json!([
                {"name": "tenant", "expression":
                    "object.metadata.namespace.startsWith('tn-') ? object.metadata.namespace.substring(3).split('--')[0] : ''"},
                {"name": "own", "expression": format!("variables.tenant + '.' + {root}")},
                {"name": "names", "expression":
                    "has(object.spec.dnsNames) ? object.spec.dnsNames.map(n, n.startsWith('*.') ? n.substring(2) : n) : []"},
                // A workload's SPIFFE ID: the tenant's trust domain, one of its namespaces.
                {"name": "workloads", "expression":
                    "'spiffe://' + variables.own + '/ns/tn-' + variables.tenant"},
                {"name": "foreignUris", "expression":
                    "has(object.spec.uris) ? object.spec.uris.filter(u, !(u.startsWith(variables.workloads + '/sa/') || u.startsWith(variables.workloads + '--'))) : []"},
        ]),
        json!([
                {
                    "expression": "variables.tenant != ''",
                    "message": "a Certificate lives in one of its tenant's namespaces: tn-<tenant> or tn-<tenant>--<environment>",
                    "reason": "Invalid",
                },
                {
                    "expression": format!(
                        "variables.names.all(n, n == variables.own || n.endsWith('.' + variables.own) || !(n == {root} || n.endsWith('.' + {root})))"
                    ),
                    "messageExpression": format!(
                        "'a tenant obtains names under ' + {root} + ' only at ' + variables.own + ' and below it; ' + variables.names.filter(n, !(n == variables.own || n.endsWith('.' + variables.own)) && (n == {root} || n.endsWith('.' + {root}))).join(', ') + ' is not ' + variables.tenant + \"'s\""
                    ),
                    "reason": "Forbidden",
                },
                {
                    "expression": "size(variables.foreignUris) == 0",
                    "messageExpression": "'a tenant names only its own workloads, spiffe://' + variables.own + '/ns/<one of its namespaces>/sa/<service account>; ' + variables.foreignUris.join(', ') + ' is not ' + variables.tenant + \"'s\"",
                    "reason": "Forbidden",
                },
        ]),
    )
}

pub const TENANT_DOMAINS: &str = "ossature-tenant-domains";

/// The policy: a tenant's custom domains lie outside `root_domain`, whose
/// names are every tenant's own (`acme` cannot list `acme-eu.<root>`).
pub fn tenant_domains_policy(root_domain: &str) -> Value {
    let root = format!("'{root_domain}'");
    policy(
        TENANT_DOMAINS,
        "tenants",
        json!([
            {"name": "inside", "expression": format!(
                "has(object.spec.domains) ? object.spec.domains.filter(d, d == {root} || d.endsWith('.' + {root})) : []"
            )},
        ]),
        json!([{
                "expression": "size(variables.inside) == 0",
                "messageExpression": format!(
                    "'custom domains lie outside ' + {root} + ', where each tenant has its own names (this one has ' + object.metadata.name + '.' + {root} + ' and below it): ' + variables.inside.join(', ')"
                ),
                "reason": "Forbidden",
        }]),
    )
}

pub const SCOPE_GRANTS: &str = "ossature-scope-grants";

/// The policy: changing a Scope's grants or group mappings takes the right
/// to grant there, as RBAC names it (`update` on `scopes/grants` or
/// `scopes/groupmappings` for that scope, which the Scope controller gives
/// Admins of it and of scopes above it). Without it an Editor, who may
/// update a Scope (to rename it), could grant itself Admin.
pub fn scope_grants_policy() -> Value {
    let check = |subresource: &str| {
        format!(
            "authorizer.group('{}').resource('scopes').subresource('{subresource}').namespace(object.metadata.namespace).name(object.metadata.name).check('update').allowed()",
            ossature_crds::GROUP
        )
    };
    policy(
        SCOPE_GRANTS,
        "scopes",
        json!([
            {"name": "grantsChanged", "expression":
                "request.operation == 'UPDATE' && (has(object.spec.grants) ? object.spec.grants : []) != (has(oldObject.spec.grants) ? oldObject.spec.grants : [])"},
            {"name": "mappingsChanged", "expression":
                "request.operation == 'UPDATE' && (has(object.spec.groupMappings) ? object.spec.groupMappings : []) != (has(oldObject.spec.groupMappings) ? oldObject.spec.groupMappings : [])"},
        ]),
        json!([
            {
                "expression": format!("!variables.grantsChanged || {}", check("grants")),
                "messageExpression": "'changing the grants of scope ' + object.metadata.name + ' takes the right to grant in it (role Admin there or above it, or a role with the grant-manager policy); ask such an Admin'",
                "reason": "Forbidden",
            },
            {
                "expression": format!("!variables.mappingsChanged || {}", check("groupmappings")),
                "messageExpression": "'changing the group mappings of scope ' + object.metadata.name + ' takes the right to map groups in it (role Admin there or above it, or a role with the group-mapping-manager policy); ask such an Admin'",
                "reason": "Forbidden",
            },
        ]),
    )
}

/// A policy on our `resource`, refusing what fails its validations.
fn policy(name: &str, resource: &str, variables: Value, validations: Value) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [ossature_crds::GROUP],
                "apiVersions": [ossature_crds::VERSION],
                "operations": ["CREATE", "UPDATE"],
                "resources": [resource],
            }]},
            "variables": variables,
            "validations": validations,
        },
    })
}

fn binding(policy: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": policy},
        "spec": {"policyName": policy, "validationActions": ["Deny"]},
    })
}

/// Every policy, by name.
pub fn policies(root_domain: &str) -> [(&'static str, Value); 3] {
    [
        (CERTIFICATE_NAMES, certificate_names_policy(root_domain)),
        (TENANT_DOMAINS, tenant_domains_policy(root_domain)),
        (SCOPE_GRANTS, scope_grants_policy()),
    ]
}

/// Where the Helm chart keeps the policies (it creates them, so that the
/// operator's right on them is only get and patch by name), relative to
/// this crate; its template puts the root domain in place of
/// [`CHART_ROOT_DOMAIN`].
pub const CHART_FILE: &str = "../charts/ossature/files/operator-admission-policies.yaml";
pub const CHART_ROOT_DOMAIN: &str = "root-domain.ossature.invalid";

/// Writes the policies and their bindings (server-side apply; unchanged
/// ones cost the apiserver nothing).
pub async fn ensure(client: &kube::Client, root_domain: &str) -> Result<(), kube::Error> {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for (name, policy) in policies(root_domain) {
        Api::<ValidatingAdmissionPolicy>::all(client.clone())
            .patch(name, &params, &Patch::Apply(policy))
            .await?;
        Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
            .patch(name, &params, &Patch::Apply(binding(name)))
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policies and their bindings as the chart keeps them.
    fn chart_policies() -> Result<String, serde_norway::Error> {
        let mut text = String::from(
            "# The operator's admission policies (`admission.rs`), for the chart; a test keeps them so.\n",
        );
        for (name, policy) in policies(CHART_ROOT_DOMAIN) {
            for object in [policy, binding(name)] {
                text.push_str("---\n");
                text.push_str(&serde_norway::to_string(&object)?);
            }
        }
        Ok(text)
    }

    #[test]
    fn the_chart_keeps_the_policies() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(CHART_FILE);
        let wanted = chart_policies().unwrap();
        if std::env::var_os("UPDATE_ADMISSION").is_some() {
            std::fs::write(&path, &wanted).unwrap();
        }
        let kept = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            kept == wanted,
            "{} differs from the policies; write it again: UPDATE_ADMISSION=1 cargo test -p ossature-operator --lib admission",
            path.display()
        );
        // The template replaces the placeholder, which nothing else contains.
        assert_eq!(
            wanted.matches(CHART_ROOT_DOMAIN).count(),
            certificate_names_policy(CHART_ROOT_DOMAIN)
                .to_string()
                .matches(CHART_ROOT_DOMAIN)
                .count()
                + tenant_domains_policy(CHART_ROOT_DOMAIN)
                    .to_string()
                    .matches(CHART_ROOT_DOMAIN)
                    .count()
        );
    }

    #[test]
    fn the_policy_names_the_root_domain() {
        let policy = certificate_names_policy("ossature.test").to_string();
        assert!(policy.contains("'ossature.test'"));
        let policy = tenant_domains_policy("ossature.test").to_string();
        assert!(policy.contains("'ossature.test'"));
    }
}
