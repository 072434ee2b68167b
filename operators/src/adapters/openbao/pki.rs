//! A tenant's own certificate authority: a PKI mount holding one root
//! issuer per generation (`gen-1`, `gen-2`, ...), each generated inside
//! OpenBao (its private key never leaves it) and name-constrained to the
//! tenant's domains, and a role `leaf` that signs CSRs for those names only.
//!
//! An issuer's name constraints are fixed in its certificate: when the
//! tenant's domains change, `ensure_tenant_ca` creates the next generation
//! with the new constraints and makes it the default; the previous one stays
//! in the trust bundle until `retire_issuer` removes it.

use std::collections::BTreeSet;

use rustify::enums::RequestMethod;
use serde_json::{Value, json};
use vaultrs::api::pki::requests::SetRoleRequest;
use vaultrs::api::pki::responses::ReadRoleResponse;
use vaultrs::pki;

use super::{BackendError, CONFLICT, Change, OpenBao, Raw, Verb, conflict};
use crate::adapters::Backend;
use crate::adapters::http::absent_as_none;

/// The roles leaves are signed with, named by the model: `leaf`, and
/// `service` for leaves that name workloads by URI (SPIFFE IDs), with the
/// leaf role's names plus the tenant's URIs and no common name required.
pub use ossature_model::certificates::{LEAF_ROLE, SERVICE_ROLE};
use ossature_model::certificates::{issuer_generation, issuer_name};
/// Ceiling of the mount and lifetime of each CA generation: ten years.
const CA_TTL: &str = "87600h";
const CA_TTL_SECS: u64 = 87_600 * 3600;
/// Longest lifetime of a leaf: 90 days.
const LEAF_MAX_TTL: &str = "2160h";
const LEAF_MAX_TTL_SECS: u64 = 2160 * 3600;

/// A tenant's CA: where it is mounted and which names it may certify.
#[derive(Debug, Clone)]
pub struct TenantCa<'a> {
    pub mount: &'a str,
    /// Subject common name of each generation; it names the tenant.
    pub common_name: &'a str,
    /// `<tenant>.<root-domain>` and the tenant's custom domains: the CA's
    /// permitted DNS names, and the names its role signs (with subdomains).
    pub domains: &'a [String],
}

/// One CA generation of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuer {
    pub id: String,
    /// `gen-<generation>`.
    pub name: String,
    pub generation: u32,
    pub is_default: bool,
    /// The self-signed CA certificate, PEM.
    pub certificate: String,
}

/// What to sign: a CSR whose key Ossature generated, for names of the tenant.
#[derive(Debug, Clone)]
pub struct SignRequest<'a> {
    /// The generation to sign with, by name (`gen-2`) or id.
    pub issuer: &'a str,
    pub csr: &'a str,
    /// Empty for a certificate with URIs only.
    pub common_name: &'a str,
    /// Further DNS names; the common name is included by OpenBao itself.
    pub alt_names: &'a [String],
    /// URI SANs: signed with [`SERVICE_ROLE`], which must allow them.
    pub uri_sans: &'a [String],
    /// Lifetime, e.g. `"720h"`; at most the role's 90 days.
    pub ttl: &'a str,
}

#[derive(Debug, Clone)]
pub struct SignedCertificate {
    pub certificate: String,
    pub issuing_ca: String,
    /// The issuer's chain up to its root (for a root issuer: itself).
    pub ca_chain: Vec<String>,
    pub serial: String,
    /// Expiry, seconds since the Unix epoch.
    pub not_after: u64,
    /// The issuer it was signed with, as the request named it.
    pub issuer: String,
}

/// An issuer as the mount lists it.
struct Listed {
    id: String,
    name: String,
    generation: u32,
    is_default: bool,
    key_id: String,
}

impl OpenBao {
    /// The tenant's PKI mount, a default CA generation constrained to exactly
    /// `ca.domains`, and the leaf role for those names. Reads the mount, its
    /// issuers, the default issuer and the role; writes only what differs.
    /// Once checked, only the issuers and the role are read while the same
    /// issuer stays the default (a mount tuned by hand then goes unseen).
    pub async fn ensure_tenant_ca(&self, ca: &TenantCa<'_>) -> Result<Change, BackendError> {
        let domains = domain_set(ca.domains);
        // Steady state: the default issuer this adapter last checked (its
        // constraints, the mount under it) is still the default. One list
        // shows that; the mount and the issuer are not read again.
        if let Some(id) = self.checked_default(ca.mount, &domains) {
            let issuers = self.list_issuers(ca.mount).await?;
            if issuers.iter().any(|i| i.is_default && i.id == id) {
                return self
                    .ensure_leaf_role(ca.mount, &domains, Change::Unchanged)
                    .await;
            }
        }
        let action = format!("mount PKI at {}", ca.mount);
        let mut change = Change::Unchanged;
        match self.mount(ca.mount, &action).await? {
            None => {
                self.enable(ca.mount, &pki_mount(ca.common_name), &action)
                    .await?;
                // A fresh mount's first issuer becomes its default by itself.
                let issuer = self.generate(ca, 1).await?;
                self.write_role(ca.mount, LEAF_ROLE, &domains, &[]).await?;
                self.check_default(ca.mount, &issuer.id, domains);
                return Ok(Change::Created);
            }
            Some(entry) if entry.mount_type != "pki" => return Err(conflict(action, &entry)),
            Some(entry) if entry.config.max_lease_ttl != CA_TTL_SECS => {
                let body = json!({"max_lease_ttl": CA_TTL});
                self.tune(ca.mount, body, &format!("tune mount {}", ca.mount))
                    .await?;
                change = Change::Updated;
            }
            Some(_) => {}
        }

        let issuers = self.list_issuers(ca.mount).await?;
        let current = match issuers.iter().find(|i| i.is_default) {
            Some(default) => Some(self.read_issuer(ca.mount, default).await?),
            None => None,
        };
        let constrained = match &current {
            Some(issuer) => permitted_domains(&issuer.certificate)
                .map_err(|detail| Backend::OpenBao.unreadable(&action, detail))?,
            None => BTreeSet::new(),
        };
        let default = match current {
            Some(issuer) if constrained == domains => issuer.id,
            _ => {
                let next = next_generation(&issuers);
                let issuer = self.generate(ca, next).await?;
                self.make_default(ca.mount, &issuer.id).await?;
                change = if issuers.is_empty() {
                    Change::Created
                } else {
                    Change::Updated
                };
                issuer.id
            }
        };
        let change = self.ensure_leaf_role(ca.mount, &domains, change).await?;
        self.check_default(ca.mount, &default, domains);
        Ok(change)
    }

    /// The default issuer of `mount` last checked for `domains`, if any.
    fn checked_default(&self, mount: &str, domains: &BTreeSet<String>) -> Option<String> {
        let checked = self.checked_cas.lock().expect("never poisoned");
        checked
            .get(mount)
            .filter(|(_, names)| names == domains)
            .map(|(id, _)| id.clone())
    }

    fn check_default(&self, mount: &str, id: &str, domains: BTreeSet<String>) {
        self.checked_cas
            .lock()
            .expect("never poisoned")
            .insert(mount.to_string(), (id.to_string(), domains));
    }

    /// The leaf role signing exactly `domains` (and below them).
    async fn ensure_leaf_role(
        &self,
        mount: &str,
        domains: &BTreeSet<String>,
        change: Change,
    ) -> Result<Change, BackendError> {
        let role = self.read_role(mount, LEAF_ROLE).await?;
        if role.as_ref().is_some_and(|r| role_matches(r, domains)) {
            return Ok(change);
        }
        self.write_role(mount, LEAF_ROLE, domains, &[]).await?;
        Ok(match change {
            Change::Unchanged => Change::Updated,
            other => other,
        })
    }

    /// The service role: the leaf role's names, and URIs matching
    /// `uri_sans` (globs); written only when it differs.
    pub async fn ensure_service_role(
        &self,
        mount: &str,
        uri_sans: &[String],
    ) -> Result<Change, BackendError> {
        let Some(leaf) = self.read_role(mount, LEAF_ROLE).await? else {
            return Err(Backend::OpenBao.refused(
                &format!("write role {SERVICE_ROLE} of {mount}"),
                404,
                "the leaf role is not there yet: the tenant's CA is not ready",
            ));
        };
        let domains = domain_set(&leaf.allowed_domains);
        let wanted: BTreeSet<&str> = uri_sans.iter().map(String::as_str).collect();
        let role = self.read_role(mount, SERVICE_ROLE).await?;
        let matches = role.as_ref().is_some_and(|r| {
            role_matches(r, &domains)
                && !r.require_cn
                && r.allowed_uri_sans
                    .iter()
                    .map(String::as_str)
                    .collect::<BTreeSet<_>>()
                    == wanted
        });
        if matches {
            return Ok(Change::Unchanged);
        }
        self.write_role(mount, SERVICE_ROLE, &domains, uri_sans)
            .await?;
        Ok(if role.is_some() {
            Change::Updated
        } else {
            Change::Created
        })
    }

    /// Generation n+1: a new root issuer in the same mount with the given
    /// domains, not yet the default, so both are trusted before it signs.
    pub async fn rotate_ca(&self, ca: &TenantCa<'_>) -> Result<Issuer, BackendError> {
        let issuers = self.list_issuers(ca.mount).await?;
        self.generate(ca, next_generation(&issuers)).await
    }

    /// Every live generation, oldest first: the tenant's trust bundle.
    pub async fn ca_bundle(&self, mount: &str) -> Result<Vec<Issuer>, BackendError> {
        let mut bundle = Vec::new();
        for listed in self.list_issuers(mount).await? {
            bundle.push(self.read_issuer(mount, &listed).await?);
        }
        Ok(bundle)
    }

    /// Makes `issuer` (name or id) the mount's default.
    pub async fn set_default_issuer(
        &self,
        mount: &str,
        issuer: &str,
    ) -> Result<Change, BackendError> {
        let issuers = self.list_issuers(mount).await?;
        let Some(target) = issuers.iter().find(|i| i.id == issuer || i.name == issuer) else {
            let action = format!("make {issuer} the default issuer of {mount}");
            let body = format!("{mount} has no issuer {issuer}");
            return Err(Backend::OpenBao.refused(&action, 404, &body));
        };
        if target.is_default {
            return Ok(Change::Unchanged);
        }
        self.make_default(mount, &target.id).await?;
        Ok(Change::Updated)
    }

    /// Deletes generation `issuer` (name or id) and its key. The default
    /// issuer is refused: leaves would have nothing to be signed with.
    pub async fn retire_issuer(&self, mount: &str, issuer: &str) -> Result<Change, BackendError> {
        let action = format!("retire issuer {issuer} of {mount}");
        let issuers = self.list_issuers(mount).await?;
        let Some(target) = issuers.iter().find(|i| i.id == issuer || i.name == issuer) else {
            return Ok(Change::Absent);
        };
        if target.is_default {
            let body = format!("{issuer} is the default issuer; make another the default first");
            return Err(Backend::OpenBao.refused(&action, CONFLICT, &body));
        }
        let delete = pki::issuer::delete(&self.client, mount, &target.id);
        self.call(Verb::Write, &action, delete).await?;
        // The key would stay behind, unused, without this.
        let delete = pki::key::delete(&self.client, mount, &target.key_id);
        self.call(Verb::Write, &action, delete).await?;
        Ok(Change::Deleted)
    }

    /// Signs a CSR with the leaf role and the chosen generation.
    pub async fn sign(
        &self,
        mount: &str,
        request: &SignRequest<'_>,
    ) -> Result<SignedCertificate, BackendError> {
        let action = format!(
            "sign {} with {} of {mount}",
            request.common_name, request.issuer
        );
        // vaultrs's SignCertificateRequest only knows `<mount>/sign/<role>`,
        // which signs with the role's issuer; choosing the generation per
        // call needs `<mount>/issuer/<ref>/sign/<role>`, which it lacks.
        let role = if request.uri_sans.is_empty() {
            LEAF_ROLE
        } else {
            SERVICE_ROLE
        };
        let mut body = json!({
            "csr": request.csr,
            "alt_names": request.alt_names.join(","),
            "ttl": request.ttl,
            "format": "pem",
        });
        if !request.common_name.is_empty() {
            body["common_name"] = json!(request.common_name);
        }
        if !request.uri_sans.is_empty() {
            body["uri_sans"] = json!(request.uri_sans.join(","));
        }
        let sign = Raw::new(
            RequestMethod::POST,
            format!("{mount}/issuer/{}/sign/{role}", request.issuer),
            body,
        );
        let signed: Value = self.raw(Verb::Write, &action, sign).await?;
        let text = |field: &str| {
            signed[field].as_str().map(str::to_string).ok_or_else(|| {
                Backend::OpenBao.unreadable(&action, format!("the answer has no {field}"))
            })
        };
        Ok(SignedCertificate {
            certificate: text("certificate")?,
            issuing_ca: text("issuing_ca")?,
            ca_chain: signed["ca_chain"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect(),
            serial: text("serial_number")?,
            not_after: signed["expiration"].as_u64().ok_or_else(|| {
                Backend::OpenBao.unreadable(&action, "the answer has no expiration")
            })?,
            issuer: request.issuer.to_string(),
        })
    }

    /// Unmounts the tenant's PKI: every generation, key and issued record.
    pub async fn delete_tenant_ca(&self, mount: &str) -> Result<Change, BackendError> {
        self.delete_mount(mount).await
    }

    /// A new root issuer `gen-<generation>` with an EC P-256 key made inside OpenBao.
    async fn generate(&self, ca: &TenantCa<'_>, generation: u32) -> Result<Issuer, BackendError> {
        let name = issuer_name(generation.into());
        let action = format!("generate CA {name} in {}", ca.mount);
        // vaultrs's GenerateRootRequest has no `issuer_name` nor `key_name`:
        // naming the generation in the same call keeps an unnamed issuer
        // from ever existing (a later rename could fail half-way).
        let generate = Raw::new(
            RequestMethod::POST,
            format!("{}/issuers/generate/root/internal", ca.mount),
            json!({
                "common_name": format!("{} {name}", ca.common_name),
                "issuer_name": name,
                "key_name": name,
                "key_type": "ec",
                "key_bits": 256,
                "ttl": CA_TTL,
                "permitted_dns_domains": domain_set(ca.domains).into_iter().collect::<Vec<_>>(),
                "exclude_cn_from_sans": true,
            }),
        );
        let made: Value = self.raw(Verb::Write, &action, generate).await?;
        let (Some(id), Some(certificate)) =
            (made["issuer_id"].as_str(), made["certificate"].as_str())
        else {
            return Err(Backend::OpenBao.unreadable(&action, "the answer names no issuer"));
        };
        Ok(Issuer {
            id: id.to_string(),
            name,
            generation,
            is_default: false,
            certificate: pem(certificate),
        })
    }

    async fn make_default(&self, mount: &str, id: &str) -> Result<(), BackendError> {
        let action = format!("make {id} the default issuer of {mount}");
        let set = pki::issuer::set_default(&self.client, mount, id);
        self.call(Verb::Write, &action, set).await.map(drop)
    }

    /// The mount's issuers named as generations, oldest first.
    async fn list_issuers(&self, mount: &str) -> Result<Vec<Listed>, BackendError> {
        let action = format!("list issuers of {mount}");
        let list = pki::issuer::list(&self.client, mount);
        // A mount without issuers answers the LIST with 404.
        let Some(listed) = absent_as_none(self.call(Verb::Read, &action, list).await)? else {
            return Ok(Vec::new());
        };
        let mut issuers: Vec<Listed> = listed
            .key_info
            .into_iter()
            .filter_map(|(id, info)| {
                let generation = issuer_generation(&info.issuer_name)?;
                Some(Listed {
                    id,
                    name: info.issuer_name,
                    generation,
                    is_default: info.is_default,
                    key_id: info.key_id,
                })
            })
            .collect();
        issuers.sort_by_key(|i| i.generation);
        Ok(issuers)
    }

    async fn read_issuer(&self, mount: &str, listed: &Listed) -> Result<Issuer, BackendError> {
        let action = format!("read issuer {} of {mount}", listed.name);
        let read = pki::issuer::read(&self.client, mount, Some(&listed.id));
        let found = self.call(Verb::Read, &action, read).await?;
        Ok(Issuer {
            id: listed.id.clone(),
            name: listed.name.clone(),
            generation: listed.generation,
            is_default: listed.is_default,
            certificate: pem(&found.certificate),
        })
    }

    /// Role `name` of PKI mount `mount`, if there is one.
    pub async fn read_role(
        &self,
        mount: &str,
        name: &str,
    ) -> Result<Option<ReadRoleResponse>, BackendError> {
        let action = format!("read role {name} of {mount}");
        let read = pki::role::read(&self.client, mount, name);
        absent_as_none(self.call(Verb::Read, &action, read).await)
    }

    /// A role signing `domains` (and below them); with `uri_sans`, also
    /// those URIs, and then no common name is required.
    async fn write_role(
        &self,
        mount: &str,
        name: &str,
        domains: &BTreeSet<String>,
        uri_sans: &[String],
    ) -> Result<(), BackendError> {
        let action = format!("write role {name} of {mount}");
        let mut role = SetRoleRequest::builder();
        if !uri_sans.is_empty() {
            role.allowed_uri_sans(uri_sans.to_vec()).require_cn(false);
        }
        role.issuer_ref("default")
            .allowed_domains(domains.iter().cloned().collect::<Vec<_>>())
            .allow_bare_domains(true)
            .allow_subdomains(true)
            .allow_any_name(false)
            .allow_glob_domains(false)
            .allow_localhost(false)
            .allow_ip_sans(false)
            .enforce_hostnames(true)
            .server_flag(true)
            .client_flag(true)
            // Keys are made by Ossature (ECDSA P-256, Ed25519); OpenBao only signs.
            .key_type("any")
            .key_usage(vec!["DigitalSignature".to_string()])
            // The request's names count, not whatever the CSR carries.
            .use_csr_common_name(false)
            .use_csr_sans(false)
            .max_ttl(LEAF_MAX_TTL)
            .no_store(false);
        let set = pki::role::set(&self.client, mount, name, Some(&mut role));
        self.call(Verb::Write, &action, set).await
    }
}

fn pki_mount(common_name: &str) -> super::Mount {
    super::Mount {
        kind: "pki",
        description: format!("certificate authority of {common_name}"),
        version: None,
        max_lease_ttl: Some(CA_TTL),
    }
}

/// Domain names as compared: lower case, without a trailing dot, each once.
fn domain_set(domains: &[String]) -> BTreeSet<String> {
    domains
        .iter()
        .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
        .filter(|d| !d.is_empty())
        .collect()
}

/// PEM ending in one newline, however OpenBao's answer ended it.
fn pem(text: &str) -> String {
    format!("{}\n", text.trim())
}

fn next_generation(issuers: &[Listed]) -> u32 {
    issuers.iter().map(|i| i.generation).max().unwrap_or(0) + 1
}

/// Whether the stored role is the one `write_role` writes for `domains`.
fn role_matches(role: &ReadRoleResponse, domains: &BTreeSet<String>) -> bool {
    domain_set(&role.allowed_domains) == *domains
        && role.allow_bare_domains
        && role.allow_subdomains
        && !role.allow_any_name
        && !role.allow_glob_domains
        && !role.allow_localhost
        && !role.allow_ip_sans
        && role.enforce_hostnames
        && role.server_flag
        && role.client_flag
        && role.key_type == "any"
        && role.key_usage == ["DigitalSignature"]
        && !role.use_csr_common_name
        && !role.use_csr_sans
        && role.max_ttl == LEAF_MAX_TTL_SECS
        && !role.no_store
        && role.issuer_ref == "default"
}

/// The DNS names a CA certificate's name constraints permit.
fn permitted_domains(pem: &str) -> Result<BTreeSet<String>, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| format!("issuer certificate is not PEM: {e}"))?;
    let certificate = pem
        .parse_x509()
        .map_err(|e| format!("issuer certificate does not parse: {e}"))?;
    let constraints = certificate
        .name_constraints()
        .map_err(|e| format!("issuer name constraints do not parse: {e}"))?;
    let names = constraints
        .and_then(|c| c.value.permitted_subtrees.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|subtree| match subtree.base {
            x509_parser::extensions::GeneralName::DNSName(name) => Some(name.to_string()),
            _ => None,
        })
        .collect::<Vec<_>>();
    Ok(domain_set(&names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_compare_without_case_order_or_trailing_dots() {
        let a = domain_set(&["Acme.Example.".into(), "shop.test".into()]);
        let b = domain_set(&[
            "shop.test".into(),
            "acme.example".into(),
            "acme.example".into(),
        ]);
        assert_eq!(a, b);
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn generations_count_up_from_the_highest() {
        let listed = |generation: u32| Listed {
            id: String::new(),
            name: issuer_name(generation.into()),
            generation,
            is_default: false,
            key_id: String::new(),
        };
        assert_eq!(next_generation(&[]), 1);
        assert_eq!(next_generation(&[listed(1), listed(3)]), 4);
    }

    #[test]
    fn name_constraints_are_read_from_the_certificate() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.name_constraints = Some(rcgen::NameConstraints {
            permitted_subtrees: vec![
                rcgen::GeneralSubtree::DnsName("acme.example".into()),
                rcgen::GeneralSubtree::DnsName("Shop.Test".into()),
            ],
            excluded_subtrees: vec![],
        });
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        assert_eq!(
            permitted_domains(&pem).unwrap(),
            domain_set(&["acme.example".into(), "shop.test".into()])
        );
        assert!(permitted_domains("not a certificate").is_err());
    }
}
