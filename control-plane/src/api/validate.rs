//! Checks of every field a caller gives, each failing with a message that
//! says what is wrong and how to put it right. The apiserver checks again
//! (schema and CEL); these answer before anything is written, all fields
//! at once.

use crate::problem::FieldError;

/// Collects the errors of one request.
#[derive(Debug, Default)]
pub struct Check {
    pub errors: Vec<FieldError>,
}

impl Check {
    pub fn field(&mut self, field: impl Into<String>, result: Result<(), String>) {
        if let Err(message) = result {
            self.errors.push(FieldError {
                field: field.into(),
                message,
            });
        }
    }

    pub fn fail(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn into_result(self) -> Result<(), Vec<FieldError>> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }
}

/// A DNS label of at most `max` characters.
pub fn dns_label(value: &str, max: usize) -> Result<(), String> {
    let bytes = value.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= max
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{value:?} must be 1 to {max} lowercase letters, digits or '-', starting with a letter and ending with a letter or digit"
        ))
    }
}

/// `Viewer`, `Editor` or `Admin`.
pub fn is_standard_role(value: &str) -> bool {
    use ossature_policy::{ADMIN, EDITOR, VIEWER};
    [VIEWER, EDITOR, ADMIN].contains(&value)
}

/// A role a grant names: `Viewer`, `Editor`, `Admin`, or one of the
/// tenant's own.
pub fn role_name(value: &str) -> Result<(), String> {
    if is_standard_role(value) || dns_label(value, 63).is_ok() {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is no role: name Viewer, Editor, Admin, or one of the tenant's own roles (a lowercase DNS label)"
        ))
    }
}

/// The name of a role a tenant defines.
pub fn own_role_name(value: &str) -> Result<(), String> {
    dns_label(value, 63)?;
    if matches!(value, "viewer" | "editor" | "admin") {
        return Err(format!(
            "{value} is the standard role {}; choose another name",
            value[..1].to_uppercase() + &value[1..]
        ));
    }
    Ok(())
}

/// A name of the policy catalog, such as `serviceIdentity` or `read`.
pub fn identifier(value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.as_bytes()[0].is_ascii_lowercase()
        && value.bytes().all(|b| b.is_ascii_alphabetic());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{value:?} must be 1 to 63 letters, starting with a lowercase one, as the policy catalog names resources and actions"
        ))
    }
}

/// A tenant's name, with the rules the Tenant CRD's admission keeps.
pub fn tenant_name(value: &str) -> Result<(), String> {
    dns_label(value, 30)?;
    if value.contains("--") {
        return Err(format!(
            "{value:?} must not contain '--': it separates the tenant from the environment in namespace names"
        ));
    }
    if ["master", "public", "pulsar", "default", "system"].contains(&value)
        || value.starts_with("kube-")
    {
        return Err(format!(
            "{value:?} is reserved by a backend (Keycloak, Pulsar or Kubernetes); choose another name"
        ));
    }
    if value.starts_with("ossature-") {
        return Err(format!(
            "{value:?} starts with ossature-, which is reserved for what Ossature shares between tenants; choose another name"
        ));
    }
    Ok(())
}

pub fn environment_name(value: &str) -> Result<(), String> {
    dns_label(value, 28)?;
    if value.contains("--") {
        return Err(format!(
            "{value:?} must not contain '--': it separates the tenant from the environment in namespace names"
        ));
    }
    if ["default", "system"].contains(&value) || value.starts_with("kube-") {
        return Err(format!("{value:?} is reserved; choose another name"));
    }
    Ok(())
}

pub fn scope_name(value: &str) -> Result<(), String> {
    dns_label(value, 63)
}

/// Text shown to people: 1 to `max` characters, no control characters.
pub fn text(value: &str, max: usize) -> Result<(), String> {
    let count = value.chars().count();
    if count == 0 || value.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if count > max {
        return Err(format!("must be at most {max} characters (it has {count})"));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters (newlines, tabs, ...)".into());
    }
    Ok(())
}

pub fn residency(value: &str) -> Result<(), String> {
    dns_label(value, 32).map_err(|_| {
        format!("{value:?} must be a region name such as eu or us: lowercase letters, digits and '-', at most 32")
    })
}

/// A Kubernetes quantity such as `4`, `2500m` or `16Gi`, positive.
pub fn quantity(value: &str) -> Result<(), String> {
    match ossature_model::quantities::billionths(value) {
        Some(n) if n > 0 => Ok(()),
        Some(_) => Err(format!("{value:?} must be more than zero")),
        None => Err(format!(
            "{value:?} is not a quantity such as 4, 2500m, 512Mi or 16Gi"
        )),
    }
}

pub fn range(value: i64, min: i64, max: i64) -> Result<(), String> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(format!("must be between {min} and {max} (it is {value})"))
    }
}

/// A DNS name of at least two labels, lowercase; `*.` first when `wildcard`.
pub fn dns_name(value: &str, wildcard: bool) -> Result<(), String> {
    let name = match value.strip_prefix("*.") {
        Some(rest) if wildcard => rest,
        _ => value,
    };
    let labels: Vec<&str> = name.split('.').collect();
    let ok = value.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
        && labels
            .last()
            .is_some_and(|l| l.as_bytes()[0].is_ascii_lowercase());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a lowercase DNS name of at least two labels, such as shop.acme.example{}",
            if wildcard {
                " (a leading *. is allowed)"
            } else {
                ""
            }
        ))
    }
}

/// A CIDR range or a single address.
pub fn source_range(value: &str) -> Result<(), String> {
    let ok = match value.split_once('/') {
        None => value.parse::<std::net::IpAddr>().is_ok(),
        Some((addr, bits)) => match (addr.parse::<std::net::IpAddr>(), bits.parse::<u8>()) {
            (Ok(std::net::IpAddr::V4(_)), Ok(bits)) => bits <= 32,
            (Ok(std::net::IpAddr::V6(_)), Ok(bits)) => bits <= 128,
            _ => false,
        },
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a CIDR range such as 203.0.113.0/24 or 2001:db8::/32, or a single address"
        ))
    }
}

/// An OAuth redirect URI: http(s), a `*` allowed at the end only.
pub fn redirect_uri(value: &str) -> Result<(), String> {
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"));
    let body = value.strip_suffix('*').unwrap_or(value);
    match rest {
        Some(r)
            if !r.is_empty()
                && value.len() <= 512
                && !body.contains('*')
                && !value.chars().any(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "{value:?} is not a redirect URI such as https://app.acme.example/* (http or https, a '*' only at the end, at most 512 characters)"
        )),
    }
}

/// A duration such as `72h`, `1h30m` or `90s`.
pub fn duration(value: &str) -> Result<(), String> {
    let mut rest = value;
    let mut seen_any = false;
    for unit in ['h', 'm', 's'] {
        if let Some(end) = rest.find(unit) {
            let digits = &rest[..end];
            if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                break;
            }
            seen_any = true;
            rest = &rest[end + 1..];
        }
    }
    if seen_any && rest.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a duration such as 72h, 1h30m or 90s (hours, minutes, seconds in that order)"
        ))
    }
}

/// A group or user name of a grant, as tokens carry it.
pub fn principal(value: &str) -> Result<(), String> {
    text(value, 256)
}

/// A label key (`prefix/name`) and value, as Kubernetes takes them.
pub fn label(key: &str, value: &str) -> Result<(), String> {
    let name_ok = |n: &str| {
        let b = n.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
    };
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if !name_ok(name)
        || prefix.is_some_and(|p| dns_name(p, false).is_err() && dns_label(p, 63).is_err())
    {
        return Err(format!(
            "label key {key:?} must be a name of at most 63 letters, digits, '-', '_' or '.', optionally after a DNS prefix and '/'"
        ));
    }
    if !value.is_empty() && !name_ok(value) {
        return Err(format!(
            "label value {value:?} must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    if key == ossature_model::names::TENANT_LABEL || key == ossature_model::names::MANAGED_BY.0 {
        return Err(format!("label {key} is set by Ossature; leave it out"));
    }
    Ok(())
}

/// An idempotency key: 1 to 255 visible ASCII characters.
pub fn idempotency_key(value: &str) -> Result<(), String> {
    if !value.is_empty() && value.len() <= 255 && value.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err("must be 1 to 255 visible ASCII characters, for example a ULID or UUID made by the client for this change".into())
    }
}

/// A ULID, as invocation ids are.
pub fn ulid(value: &str) -> Result<(), String> {
    match ulid::Ulid::from_string(value) {
        Ok(id) if id.to_string() == value => Ok(()),
        _ => Err(format!(
            "{value:?} is not a ULID: 26 characters of Crockford base32 in upper case"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_crds_rules() {
        assert!(tenant_name("acme").is_ok());
        assert!(tenant_name("Acme").is_err());
        assert!(tenant_name("acme--eu").unwrap_err().contains("'--'"));
        assert!(tenant_name("master").unwrap_err().contains("reserved"));
        assert!(tenant_name("kube-x").is_err());
        assert!(tenant_name("ossature-x").unwrap_err().contains("reserved"));
        assert!(tenant_name(&"a".repeat(31)).is_err());
        assert!(environment_name("prod").is_ok());
        assert!(environment_name(&"a".repeat(29)).is_err());
        assert!(scope_name("eu-west").is_ok());
        assert!(scope_name("eu_west").is_err());
    }

    #[test]
    fn values_are_checked_with_a_way_out() {
        assert!(quantity("16Gi").is_ok());
        assert!(quantity("2500m").is_ok());
        assert!(quantity("0").is_err());
        assert!(quantity("lots").unwrap_err().contains("16Gi"));
        assert!(dns_name("shop.acme.example", false).is_ok());
        assert!(dns_name("*.acme.example", true).is_ok());
        assert!(dns_name("*.acme.example", false).is_err());
        assert!(dns_name("localhost", false).is_err());
        assert!(source_range("203.0.113.0/24").is_ok());
        assert!(source_range("2001:db8::/32").is_ok());
        assert!(source_range("203.0.113.0/33").is_err());
        assert!(source_range("10.0.0.1").is_ok());
        assert!(redirect_uri("https://app.acme.example/*").is_ok());
        assert!(redirect_uri("https://app.*.example/").is_err());
        assert!(redirect_uri("ftp://x").is_err());
        assert!(duration("72h").is_ok());
        assert!(duration("1h30m").is_ok());
        assert!(duration("90s").is_ok());
        assert!(duration("").is_err());
        assert!(duration("3d").is_err());
        assert!(duration("30m1h").is_err());
        assert!(text("Acme", 128).is_ok());
        assert!(text("", 128).is_err());
        assert!(text("a\nb", 128).is_err());
        assert!(label("ossature.dev/test", "a").is_ok());
        assert!(label("team", "").is_ok());
        assert!(label("ossature.dev/tenant", "x").is_err());
        assert!(label("bad key", "x").is_err());
        assert!(idempotency_key("01JQ3X5T0RYB9Q8K1W7ZC4M2NP").is_ok());
        assert!(idempotency_key("has space").is_err());
        assert!(ulid("01JQ3X5T0RYB9Q8K1W7ZC4M2NP").is_ok());
        assert!(ulid("01jq3x5t0ryb9q8k1w7zc4m2np").is_err());
    }
}
