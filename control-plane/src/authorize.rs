//! The one authorization decision of an invocation, made once at its start
//! and recorded in its audit record and on the objects it writes.
//!
//! The policy engine (Rego, from `ossature-policy`) replaces the body of
//! [`authorize`]; the boundary stays. Until then it keeps the rule that
//! holds whatever the roles: platform operators act on every tenant, a
//! tenant's caller only on its own tenant.

use crate::auth::Caller;

/// What a caller asks to do: a command or query by name, or a toggle of
/// the invocation context.
pub type Action<'a> = &'a str;

/// Raising an invocation's log level (a toggle of its context).
pub const RAISE_LOG_LEVEL: Action<'static> = "raiseLogLevel";

/// Allowed or not, and why in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

impl Decision {
    fn allow(reason: String) -> Self {
        Decision {
            allowed: true,
            reason,
        }
    }

    fn deny(reason: String) -> Self {
        Decision {
            allowed: false,
            reason,
        }
    }
}

/// Whether `caller` may do `action` on `tenant` (none: every tenant the
/// caller may see, as a listing) within `scope` (none: the whole tenant).
pub fn authorize(
    caller: &Caller,
    action: Action<'_>,
    tenant: Option<&str>,
    scope: Option<&str>,
) -> Decision {
    let who = caller.username.as_deref().unwrap_or(&caller.subject);
    if caller.is_platform_operator() {
        return Decision::allow(format!(
            "{who} is a platform operator, who may {action} on every tenant"
        ));
    }
    let Some(own) = caller.tenant.as_deref() else {
        return Decision::deny(format!(
            "{who} is neither a platform operator nor of a tenant"
        ));
    };
    if action == RAISE_LOG_LEVEL {
        return Decision::deny(format!(
            "raising an invocation's log level is for platform operators; {who} is a caller of tenant {own}"
        ));
    }
    let within = scope.map(|s| format!(" in scope {s}")).unwrap_or_default();
    match tenant {
        Some(target) if target == own => Decision::allow(format!(
            "{who} is a caller of tenant {own} and may {action}{within} on its own tenant"
        )),
        Some(target) => Decision::deny(format!(
            "{who} is a caller of tenant {own}; a token of tenant {own} never acts on tenant {target}"
        )),
        None => Decision::allow(format!(
            "{who} is a caller of tenant {own}; {action} shows only tenant {own}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::CallerKind;

    fn caller(kind: CallerKind, tenant: Option<&str>) -> Caller {
        Caller {
            kind,
            tenant: tenant.map(String::from),
            subject: "sub-1".into(),
            username: Some("alice".into()),
            client_id: None,
        }
    }

    #[test]
    fn a_tenants_caller_acts_only_on_its_own_tenant() {
        let alice = caller(CallerKind::TenantUser, Some("acme"));
        let own = authorize(&alice, "changeTenant", Some("acme"), None);
        assert!(own.allowed, "{}", own.reason);
        let other = authorize(&alice, "tenantStatus", Some("globex"), None);
        assert!(!other.allowed);
        assert!(
            other.reason.contains("never acts on tenant globex"),
            "{}",
            other.reason
        );
        let scoped = authorize(&alice, "grantRole", Some("acme"), Some("eu"));
        assert!(scoped.reason.contains("in scope eu"));
        assert!(!authorize(&alice, RAISE_LOG_LEVEL, Some("acme"), None).allowed);
    }

    #[test]
    fn platform_operators_act_on_every_tenant() {
        let ops = caller(CallerKind::PlatformOperator, None);
        for tenant in ["acme", "globex"] {
            let decision = authorize(&ops, "offboardTenant", Some(tenant), None);
            assert!(decision.allowed);
            assert!(decision.reason.contains("platform operator"));
        }
        assert!(authorize(&ops, RAISE_LOG_LEVEL, Some("acme"), None).allowed);
    }
}
