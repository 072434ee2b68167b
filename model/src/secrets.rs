//! A tenant's secrets in OpenBao: the policy that grants exactly its paths.

/// The policy granting exactly a tenant's KV v2 secrets and encrypt/decrypt
/// with its transit key; mount configuration and key management stay with
/// the operator. Paths come from DNS-label tenant names, so need no quoting.
pub fn tenant_policy(kv_path: &str, transit_path: &str, key: &str) -> String {
    let kv = kv_path.trim_matches('/');
    let transit = transit_path.trim_matches('/');
    format!(
        r#"# Managed by ossature-operator; edits are overwritten.
path "{kv}/data/*" {{
  capabilities = ["create", "read", "update", "patch", "delete"]
}}
path "{kv}/metadata/*" {{
  capabilities = ["read", "list", "update", "patch", "delete"]
}}
path "{kv}/subkeys/*" {{
  capabilities = ["read"]
}}
path "{kv}/delete/*" {{
  capabilities = ["update"]
}}
path "{kv}/undelete/*" {{
  capabilities = ["update"]
}}
path "{kv}/destroy/*" {{
  capabilities = ["update"]
}}
path "{transit}/encrypt/{key}" {{
  capabilities = ["update"]
}}
path "{transit}/decrypt/{key}" {{
  capabilities = ["update"]
}}
"#
    )
}

/// The paths a policy names, in order.
#[cfg(test)]
pub(crate) fn policy_paths(hcl: &str) -> Vec<&str> {
    hcl.lines()
        .filter_map(|l| l.strip_prefix("path \"")?.split('"').next())
        .collect()
}

/// The policy of a tenant, from its names.
pub fn tenant_policy_of(names: &crate::names::TenantNames) -> String {
    tenant_policy(&names.kv_mount, &names.transit_mount, &names.transit_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_policy_grants_only_the_tenant_paths() {
        let hcl = tenant_policy("tenants/acme/kv", "/tenants/acme/transit/", "acme");
        let paths = policy_paths(&hcl);
        assert_eq!(
            paths,
            [
                "tenants/acme/kv/data/*",
                "tenants/acme/kv/metadata/*",
                "tenants/acme/kv/subkeys/*",
                "tenants/acme/kv/delete/*",
                "tenants/acme/kv/undelete/*",
                "tenants/acme/kv/destroy/*",
                "tenants/acme/transit/encrypt/acme",
                "tenants/acme/transit/decrypt/acme",
            ]
        );
        assert!(!hcl.contains("sudo"));
        assert_eq!(hcl.matches("capabilities").count(), paths.len());
        // Pure: the same inputs give byte-identical text, so ensure_policy stays idempotent.
        assert_eq!(
            hcl,
            tenant_policy("tenants/acme/kv", "tenants/acme/transit", "acme")
        );
    }
}
