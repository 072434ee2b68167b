//! A tenant's own CA: which generation signs, how many are trusted, and
//! what a rotation still has to do.

use std::collections::BTreeMap;

/// The tenant CA as its Tenant reports it: the generation that signs, and
/// how many generations are trusted (more than one while it rotates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaState {
    pub generation: i64,
    pub trusted: usize,
}

impl CaState {
    pub fn of(tenant: &ossature_crds::Tenant) -> Self {
        let status = tenant
            .status
            .as_ref()
            .and_then(|s| s.certificate_authority.as_ref());
        // What the CA is, not what it is asked to be: leaves move once the
        // new generation signs.
        CaState {
            generation: status.map_or(1, |ca| ca.generation),
            trusted: status.map_or(1, |ca| ca.generations.len().max(1)),
        }
    }
}

/// The PKI role leaves are signed with.
pub const LEAF_ROLE: &str = "leaf";
/// The PKI role of leaves that name workloads by URI (SPIFFE IDs): made
/// when a first such certificate is signed.
pub const SERVICE_ROLE: &str = "service";
const GENERATION_PREFIX: &str = "gen-";

/// The name of a CA generation's issuer in the PKI mount: `gen-<n>`.
pub fn issuer_name(generation: i64) -> String {
    format!("{GENERATION_PREFIX}{generation}")
}

/// The generation an issuer's name carries; `None` for another's issuer.
pub fn issuer_generation(name: &str) -> Option<u32> {
    name.strip_prefix(GENERATION_PREFIX)?.parse().ok()
}

/// Subject common name of a tenant's CA generations: it names the tenant.
pub fn common_name(tenant: &str) -> String {
    format!("{tenant} CA")
}

/// Certificates of one tenant issued anew at once during a CA rotation.
pub const ROTATION_WAVE: usize = 5;

/// What to do with the generations present so that `wanted` signs and,
/// once no certificate is left on an older one, only it is trusted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rotation {
    /// Create generations up to `wanted`.
    pub create: bool,
    /// Make `wanted` the default issuer.
    pub make_default: bool,
    /// Older generations to delete.
    pub retire: Vec<i64>,
}

pub fn rotation(
    issuers: &[(i64, bool)],
    wanted: i64,
    certificates: &BTreeMap<i64, i64>,
) -> Rotation {
    let newest = issuers.iter().map(|(g, _)| *g).max().unwrap_or(0);
    let create = newest < wanted;
    let make_default = create || !issuers.iter().any(|(g, d)| *g == wanted && *d);
    let left_on_older = certificates
        .iter()
        .any(|(generation, count)| *generation < wanted && *count > 0);
    let retire = if create || left_on_older {
        Vec::new()
    } else {
        issuers
            .iter()
            .map(|(g, _)| *g)
            .filter(|g| *g < wanted)
            .collect()
    };
    Rotation {
        create,
        make_default,
        retire,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(i64, i64)]) -> BTreeMap<i64, i64> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn a_steady_ca_is_left_alone() {
        assert_eq!(
            rotation(&[(1, true)], 1, &counts(&[(1, 5)])),
            Rotation::default()
        );
    }

    #[test]
    fn a_rotation_adds_the_next_generation_keeps_the_old_until_its_leaves_moved_then_retires_it() {
        // Asked for: the next one is created and signs; the old one stays.
        let start = rotation(&[(1, true)], 2, &counts(&[(1, 5)]));
        assert!(start.create && start.make_default && start.retire.is_empty());
        // Leaves are moving: nothing to retire yet.
        let moving = rotation(&[(1, false), (2, true)], 2, &counts(&[(1, 2), (2, 3)]));
        assert_eq!(moving, Rotation::default());
        // All moved: the old one goes.
        let done = rotation(&[(1, false), (2, true)], 2, &counts(&[(2, 5)]));
        assert_eq!(done.retire, vec![1]);
        assert!(!done.create && !done.make_default);
        // Interrupted after creating, before making it the default.
        let resumed = rotation(&[(1, true), (2, false)], 2, &counts(&[(1, 5)]));
        assert!(!resumed.create && resumed.make_default && resumed.retire.is_empty());
    }
}
