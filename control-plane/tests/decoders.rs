//! Property tests of the request decoders, on stable, with inputs made by
//! `arbitrary` from unstructured bytes (driven by arbtest: a failure prints
//! the seed that reproduces it). Pure: no stack, no server.
//!
//! - Any body, bulk body or context header is answered with a value or
//!   with a problem naming each wrong field; nothing panics.
//! - Any valid command or query, encoded as a caller sends it,
//!   decodes to the same value and passes its checks.
//!
//! The invariants are the fuzz targets' own (control-plane/fuzz).

#[path = "../fuzz/src/lib.rs"]
mod invariants;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use arbitrary::{Result, Unstructured};
use ossature_control_plane::api::{self, Role, validate};
use ossature_control_plane::commands::{self, Command};
use ossature_control_plane::context::{Seen, fork};
use ossature_control_plane::problem::{Problem, ProblemKind};
use ossature_control_plane::queries::{self, Query};
use ossature_control_plane::server::{decode_bulk_commands, decode_bulk_queries};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// Time each property runs for (ARBTEST_BUDGET_MS overrides it).
const BUDGET_MS: u64 = 3000;

// ---------------------------------------------------------------------------
// Any input

/// The API's own words: every property name and enum value of its
/// document, so that arbitrary bodies get past their first field.
fn vocabulary() -> &'static [String] {
    static WORDS: OnceLock<Vec<String>> = OnceLock::new();
    WORDS.get_or_init(|| {
        fn collect(value: &Value, words: &mut BTreeSet<String>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::Object(properties)) = map.get("properties") {
                        words.extend(properties.keys().cloned());
                    }
                    if let Some(Value::Array(values)) = map.get("enum") {
                        words.extend(values.iter().filter_map(|v| v.as_str().map(String::from)));
                    }
                    map.values().for_each(|v| collect(v, words));
                }
                Value::Array(items) => items.iter().for_each(|v| collect(v, words)),
                _ => {}
            }
        }
        let document = serde_json::to_value(ossature_control_plane::server::openapi()).unwrap();
        let mut words = BTreeSet::new();
        collect(&document, &mut words);
        words.extend(
            commands::NAMES
                .iter()
                .chain(queries::NAMES)
                .map(|n| n.to_string()),
        );
        words.extend(
            [
                "acme",
                "eu",
                "4",
                "8Gi",
                "72h",
                "01JQ3X5T0RYB9Q8K1W7ZC4M2NP",
            ]
            .map(String::from),
        );
        assert!(words.contains("displayName") && words.contains("Ephemeral"));
        words.into_iter().collect()
    })
}

/// A word of the API most of the time, else any text.
fn word(u: &mut Unstructured) -> Result<String> {
    if u.ratio(3, 4)? {
        Ok(u.choose(vocabulary())?.clone())
    } else {
        u.arbitrary()
    }
}

/// JSON of any shape, its keys and strings mostly the API's words.
fn any_json(u: &mut Unstructured, depth: u32) -> Result<Value> {
    let last = if depth >= 5 { 4 } else { 6 };
    Ok(match u.int_in_range(0..=last)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 if u.arbitrary()? => json!(u.arbitrary::<i64>()?),
        2 => json!(u.arbitrary::<f64>()?),
        3 => json!(u.int_in_range(0..=400)?),
        4 => Value::String(word(u)?),
        5 => Value::Array(
            (0..u.int_in_range(0..=4)?)
                .map(|_| any_json(u, depth + 1))
                .collect::<Result<_>>()?,
        ),
        _ => Value::Object(
            (0..u.int_in_range(0..=8)?)
                .map(|_| Ok((word(u)?, any_json(u, depth + 1)?)))
                .collect::<Result<Map<_, _>>>()?,
        ),
    })
}

/// A body: an object, of any shape or built on a valid input with some
/// part of it replaced, added or removed.
fn any_body(u: &mut Unstructured) -> Result<Value> {
    if u.ratio(1, 2)? {
        return any_json(u, 0);
    }
    let mut body = if u.arbitrary()? {
        encoded(&valid_command(u)?).1
    } else {
        encoded_query(&valid_query(u)?).1
    };
    for _ in 0..u.int_in_range(1..=3)? {
        mutate(u, &mut body)?;
    }
    Ok(body)
}

/// Replaces, adds or removes one member somewhere in `value`.
fn mutate(u: &mut Unstructured, value: &mut Value) -> Result<()> {
    match value {
        Value::Object(map) if !map.is_empty() && u.ratio(2, 3)? => {
            let key = u.choose(&map.keys().cloned().collect::<Vec<_>>())?.clone();
            match u.int_in_range(0..=3)? {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    map.insert(key, any_json(u, 3)?);
                }
                2 => {
                    let (new, value) = (word(u)?, any_json(u, 3)?);
                    map.insert(new, value);
                }
                _ => mutate(u, map.get_mut(&key).unwrap())?,
            }
        }
        Value::Array(items) if !items.is_empty() && u.arbitrary()? => {
            let i = u.choose_index(items.len())?;
            mutate(u, &mut items[i])?;
        }
        // Text just outside what a field takes.
        Value::String(_) if u.arbitrary()? => {
            let long = "x".repeat(*u.choose(&[64, 129, 257, 513])?);
            let bad = [
                "",
                " ",
                "a\tb",
                "Upper",
                "a--b",
                "-a",
                "0.0.0.0/33",
                "1d",
                &long,
            ];
            *value = Value::String(u.choose(&bad)?.to_string());
        }
        _ => *value = any_json(u, 3)?,
    }
    Ok(())
}

/// What fuzzing found: an unknown field whose name ends in `]` is named
/// as sent, and is no list member's path.
#[test]
fn an_unknown_field_named_like_a_list_member_is_named_as_sent() {
    let body = json!({"tenan]": "s"});
    invariants::command("onboardTenant", &body);
    let problem = Command::decode("onboardTenant", &body)
        .unwrap()
        .unwrap_err();
    assert_eq!(problem.errors[0].field, "tenan]");
}

#[test]
fn any_body_is_answered_with_a_value_or_the_fields_that_are_wrong() {
    arbtest::arbtest(|u| {
        let body = any_body(u)?;
        for name in commands::NAMES {
            invariants::command(name, &body);
        }
        for name in queries::NAMES {
            invariants::query(name, &body);
        }
        let name = word(u)?;
        invariants::command(&name, &body);
        invariants::query(&name, &body);
        Ok(())
    })
    .budget_ms(BUDGET_MS);
}

#[test]
fn any_bytes_are_json_or_refused_as_invalid_input() {
    arbtest::arbtest(|u| {
        let bytes: Vec<u8> = if u.arbitrary()? {
            u.arbitrary()?
        } else {
            // Valid JSON cut short or with a byte changed.
            let mut text = any_json(u, 0)?.to_string().into_bytes();
            if !text.is_empty() {
                let at = u.choose_index(text.len())?;
                if u.arbitrary()? {
                    text.truncate(at);
                } else {
                    text[at] = u.arbitrary()?;
                }
            }
            text
        };
        if let Some(body) = invariants::parse(&bytes) {
            invariants::command("onboardTenant", &body);
        }
        Ok(())
    })
    .budget_ms(BUDGET_MS);
}

#[test]
fn any_bulk_body_is_answered_item_by_item() {
    arbtest::arbtest(|u| {
        let items = (0..u.int_in_range(0..=4)?)
            .map(|_| {
                let mut item = Map::new();
                for (key, value) in [
                    ("command", Value::String(word(u)?)),
                    ("query", Value::String(word(u)?)),
                    ("idempotencyKey", Value::String(u.arbitrary()?)),
                    ("input", any_body(u)?),
                ] {
                    if u.ratio(4, 5)? {
                        item.insert(key.into(), value);
                    }
                }
                Ok(Value::Object(item))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut body = json!({"items": items});
        if u.arbitrary()? {
            body["validateFirst"] = any_json(u, 4)?;
        }
        if u.ratio(1, 4)? {
            mutate(u, &mut body)?;
        }
        match decode_bulk_commands(&body) {
            Ok(bulk) => {
                for item in &bulk.items {
                    invariants::command(&item.command, &item.input);
                }
            }
            Err(problem) => invariants::assert_invalid(&problem),
        }
        match decode_bulk_queries(&body) {
            Ok(bulk) => {
                for item in &bulk.items {
                    invariants::query(&item.query, &item.input);
                }
            }
            Err(problem) => invariants::assert_invalid(&problem),
        }
        Ok(())
    })
    .budget_ms(BUDGET_MS);
}

#[test]
fn any_context_header_forks_a_whole_context_or_is_refused_field_by_field() {
    use base64::Engine;
    arbtest::arbtest(|u| {
        let header = if u.arbitrary()? {
            u.arbitrary::<String>()?
        } else {
            let json = any_json(u, 1)?.to_string();
            base64::engine::general_purpose::STANDARD.encode(json)
        };
        let (context, problem) = fork(Seen {
            header: Some(&header),
            traceparent: None,
            client_address: None,
            user_agent: Some(&header),
        });
        assert!(validate::ulid(&context.action_id).is_ok(), "{context:?}");
        assert!(
            validate::ulid(&context.invocation_id).is_ok(),
            "{context:?}"
        );
        assert_eq!(context.trace_id.len(), 32, "{context:?}");
        if let Some(problem) = problem {
            assert_eq!(problem.kind, ProblemKind::InvalidInvocationContext);
            assert!(!problem.errors.is_empty(), "{problem:?}");
            assert!(problem.errors.iter().all(|e| !e.message.is_empty()));
        }
        Ok(())
    })
    .budget_ms(BUDGET_MS);
}

// ---------------------------------------------------------------------------
// Valid input, built from arbitrary parts

/// `n` of `make`, 0 to `most`.
fn some<T>(
    u: &mut Unstructured,
    most: usize,
    mut make: impl FnMut(&mut Unstructured, usize) -> Result<T>,
) -> Result<Vec<T>> {
    (0..u.int_in_range(0..=most)?).map(|i| make(u, i)).collect()
}

fn maybe<T>(
    u: &mut Unstructured,
    make: impl FnOnce(&mut Unstructured) -> Result<T>,
) -> Result<Option<T>> {
    if u.arbitrary()? {
        Ok(Some(make(u)?))
    } else {
        Ok(None)
    }
}

/// A DNS label of 1 to `max` characters: a letter first, an alphanumeric
/// last, single '-' between.
fn label(u: &mut Unstructured, max: usize) -> Result<String> {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let len = u.int_in_range(1..=max)?;
    let mut text = vec![*u.choose(LETTERS)?];
    while text.len() < len {
        let hyphen = text.len() + 1 < len && text.last() != Some(&b'-') && u.ratio(1, 6)?;
        text.push(if hyphen { b'-' } else { *u.choose(ALNUM)? });
    }
    Ok(String::from_utf8(text).unwrap())
}

/// A tenant's name: `t-` keeps it clear of every reserved name.
fn tenant(u: &mut Unstructured) -> Result<String> {
    Ok(format!("t-{}", label(u, 28)?))
}

/// Text shown to people: 1 to `max` characters (often exactly `max`) of
/// any script, one to four bytes each, no control character, not blank.
fn text(u: &mut Unstructured, max: usize) -> Result<String> {
    const SOME: &[char] = &['A', 'z', ' ', '-', 'é', 'ß', '東', '𝄞', '😀', '\u{200f}'];
    let len = match u.ratio(1, 3)? {
        true => max,
        false => u.int_in_range(1..=max)?,
    };
    let mut text = String::from(*u.choose(&['A', 'é', '東', '😀'])?);
    for _ in 1..len {
        let any: char = u.arbitrary()?;
        text.push(match any.is_control() || u.ratio(1, 2)? {
            true => *u.choose(SOME)?,
            false => any,
        });
    }
    Ok(text)
}

/// An environment's name: `e-` keeps it clear of reserved names.
fn environment_name(u: &mut Unstructured) -> Result<String> {
    Ok(format!("e-{}", label(u, 26)?))
}

fn quantity(u: &mut Unstructured) -> Result<String> {
    let number = u.int_in_range(1..=99_999u32)?;
    Ok(format!(
        "{number}{}",
        u.choose(&["", "m", "k", "Mi", "Gi", "Ti"])?
    ))
}

fn duration(u: &mut Unstructured) -> Result<String> {
    let parts: Vec<String> = ['h', 'm', 's']
        .into_iter()
        .filter_map(|unit| match u.ratio(1, 2) {
            Ok(true) => Some(u.int_in_range(0..=999_999u32).map(|n| format!("{n}{unit}"))),
            _ => None,
        })
        .collect::<Result<_>>()?;
    Ok(if parts.is_empty() {
        format!("{}h", u.int_in_range(1..=72u32)?)
    } else {
        parts.concat()
    })
}

fn dns_name(u: &mut Unstructured, i: usize) -> Result<String> {
    Ok(format!("d{i}-{}.{}.example", label(u, 20)?, label(u, 10)?))
}

fn source_range(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0..=2)? {
        0 => Ipv4Addr::from(u.arbitrary::<u32>()?).to_string(),
        1 => format!(
            "{}/{}",
            Ipv4Addr::from(u.arbitrary::<u32>()?),
            u.int_in_range(0..=32)?
        ),
        _ => format!(
            "{}/{}",
            Ipv6Addr::from(u.arbitrary::<u128>()?),
            u.int_in_range(0..=128)?
        ),
    })
}

fn choose<T: Copy>(u: &mut Unstructured, values: &[T]) -> Result<T> {
    u.choose(values).copied()
}

fn wait(u: &mut Unstructured) -> Result<Option<api::Wait>> {
    maybe(u, |u| {
        Ok(api::Wait {
            timeout_seconds: u.int_in_range(1..=300)?,
        })
    })
}

fn identity(u: &mut Unstructured, tenant_type: api::TenantType) -> Result<api::Identity> {
    let isolation = maybe(u, |u| {
        choose(u, &[api::Isolation::Organization, api::Isolation::Realm])
    })?;
    // Realm-wide settings only with a realm of its own.
    let realm = isolation == Some(api::Isolation::Realm);
    let realm_only = |u: &mut Unstructured<'_>| match realm {
        true => maybe(u, |u| u.arbitrary()),
        false => Ok(None),
    };
    Ok(api::Identity {
        isolation,
        access_token_lifetime_seconds: maybe(u, |u| u.int_in_range(60..=3600))?,
        redirect_uris: some(u, 16, |u, _| {
            Ok(format!(
                "{}://{}.example/{}{}",
                choose(u, &["https", "http"])?,
                label(u, 20)?,
                label(u, 10)?,
                choose(u, &["", "*"])?
            ))
        })?,
        mfa_required: realm_only(u)?,
        email_verification: realm_only(u)?,
        self_registration: realm_only(u)?,
        identity_provider_federation: match tenant_type {
            api::TenantType::Business => maybe(u, |u| u.arbitrary())?,
            api::TenantType::Consumer => maybe(u, |_| Ok(false))?,
        },
    })
}

fn quotas(u: &mut Unstructured) -> Result<api::Quotas> {
    Ok(api::Quotas {
        cpu: maybe(u, quantity)?,
        memory: maybe(u, quantity)?,
        storage: maybe(u, quantity)?,
        pods: maybe(u, |u| u.int_in_range(0..=100_000))?,
        topics: maybe(u, |u| u.int_in_range(1..=100_000))?,
        backlog: maybe(u, quantity)?,
        publish_rate: maybe(u, |u| u.int_in_range(1..=10_000_000))?,
        partitions: maybe(u, |u| u.int_in_range(1..=10_000))?,
    })
}

fn edge(u: &mut Unstructured) -> Result<api::Edge> {
    Ok(api::Edge {
        client_auth: maybe(u, |u| {
            Ok(api::ClientAuth {
                mode: choose(
                    u,
                    &[api::ClientAuthMode::Optional, api::ClientAuthMode::Required],
                )?,
                ca_bundle: maybe(u, |u| {
                    Ok(format!(
                        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                        label(u, 60)?
                    ))
                })?,
            })
        })?,
        allowed_source_ranges: some(u, 6, |u, _| source_range(u))?,
    })
}

fn principals(u: &mut Unstructured) -> Result<(Vec<String>, Vec<String>)> {
    let mut groups = some(u, 3, |u, _| text(u, 256))?;
    let users = some(u, 3, |u, _| text(u, 256))?;
    if groups.is_empty() && users.is_empty() {
        groups.push(text(u, 256)?);
    }
    Ok((groups, users))
}

/// A standard role, or one of the tenant's own.
fn role(u: &mut Unstructured) -> Result<Role> {
    Ok(match u.int_in_range(0..=3)? {
        0 => "Viewer".to_string(),
        1 => "Editor".to_string(),
        2 => "Admin".to_string(),
        _ => own_role(u)?,
    })
}

/// A tenant's own role: `-r` keeps it clear of viewer, editor and admin.
fn own_role(u: &mut Unstructured) -> Result<String> {
    Ok(format!("{}-r", label(u, 61)?))
}

/// A name as the policy catalog spells them: letters, a lowercase first.
fn identifier(u: &mut Unstructured) -> Result<String> {
    const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let len = u.int_in_range(1..=63)?;
    let mut name = vec![*u.choose(LOWER)?];
    while name.len() < len {
        name.push(*u.choose(LETTERS)?);
    }
    Ok(String::from_utf8(name).unwrap())
}

fn define_role(u: &mut Unstructured) -> Result<api::DefineRole> {
    let mut policies = some(u, 4, |u, _| label(u, 63))?;
    let permissions = some(u, 4, |u, _| {
        let mut actions = some(u, 3, |u, _| identifier(u))?;
        actions.push(identifier(u)?);
        Ok(api::RolePermissionInput {
            resource: identifier(u)?,
            actions,
        })
    })?;
    if permissions.is_empty() {
        policies.push(label(u, 63)?);
    }
    Ok(api::DefineRole {
        tenant: tenant(u)?,
        role: api::RoleDefinition {
            name: own_role(u)?,
            description: match u.arbitrary()? {
                true => text(u, 1024)?,
                false => String::new(),
            },
            policies,
            permissions,
        },
        dry_run: u.arbitrary()?,
    })
}

/// An object in an environment, with a spec the kind's decoding checks later.
fn apply_object(u: &mut Unstructured) -> Result<api::ApplyObject> {
    let mut spec = serde_json::Map::new();
    for _ in 0..u.int_in_range(0..=3)? {
        spec.insert(identifier(u)?, Value::from(u.arbitrary::<i32>()?));
    }
    Ok(api::ApplyObject {
        tenant: tenant(u)?,
        environment: environment_name(u)?,
        name: label(u, 63)?,
        spec: Value::Object(spec),
        dry_run: u.arbitrary()?,
        wait: wait(u)?,
    })
}

fn environment_object(u: &mut Unstructured) -> Result<api::EnvironmentObject> {
    Ok(api::EnvironmentObject {
        tenant: tenant(u)?,
        environment: environment_name(u)?,
        name: label(u, 63)?,
        dry_run: u.arbitrary()?,
    })
}

/// A scope named `name`, under one of `above` or a root.
fn scope(u: &mut Unstructured, name: String, above: &[String]) -> Result<api::ScopeDefinition> {
    let parent = match above.is_empty() || u.ratio(1, 3)? {
        true => None,
        false => Some(u.choose(above)?.clone()),
    };
    Ok(api::ScopeDefinition {
        name,
        display_name: text(u, 128)?,
        parent,
        grants: some(u, 3, |u, _| {
            let (groups, users) = principals(u)?;
            Ok(api::Grant {
                role: role(u)?,
                groups,
                users,
            })
        })?,
    })
}

/// An environment named `name`, in one of `scopes` or at the root.
fn environment(
    u: &mut Unstructured,
    name: String,
    scopes: &[String],
) -> Result<api::EnvironmentDefinition> {
    use api::EnvironmentKind::*;
    let kind = choose(u, &[Production, Staging, Development, Ephemeral])?;
    Ok(api::EnvironmentDefinition {
        name,
        kind,
        ttl: match kind {
            Ephemeral => maybe(u, duration)?,
            _ => None,
        },
        quotas: quotas(u)?,
        message_retention_minutes: maybe(u, |u| u.int_in_range(1..=525_600))?,
        deletion_policy: maybe(u, |u| {
            choose(
                u,
                &[api::DeletionPolicy::Delete, api::DeletionPolicy::Retain],
            )
        })?,
        scope: match scopes.is_empty() || u.arbitrary()? {
            true => None,
            false => Some(u.choose(scopes)?.clone()),
        },
    })
}

fn onboard(u: &mut Unstructured) -> Result<api::OnboardTenant> {
    let tenant_type = choose(u, &[api::TenantType::Business, api::TenantType::Consumer])?;
    let mut scopes: Vec<api::ScopeDefinition> = Vec::new();
    for i in 0..u.int_in_range(0..=6)? {
        let names: Vec<String> = scopes.iter().map(|s| s.name.clone()).collect();
        let name = format!("s{i}-{}", label(u, 20)?);
        scopes.push(scope(u, name, &names)?);
    }
    let scope_names: Vec<String> = scopes.iter().map(|s| s.name.clone()).collect();
    Ok(api::OnboardTenant {
        tenant: tenant(u)?,
        tenant_type,
        display_name: text(u, 128)?,
        residency: label(u, 32)?,
        labels: some(u, 3, |u, i| {
            let key = match u.arbitrary()? {
                true => format!("k{i}-{}", label(u, 20)?),
                false => format!("{}.example/k{i}", label(u, 20)?),
            };
            Ok((key, maybe(u, |u| label(u, 63))?.unwrap_or_default()))
        })?
        .into_iter()
        .collect::<BTreeMap<_, _>>(),
        identity: identity(u, tenant_type)?,
        quotas: quotas(u)?,
        edge: edge(u)?,
        domains: some(u, 5, dns_name)?,
        deletion_policy: maybe(u, |u| {
            choose(
                u,
                &[api::DeletionPolicy::Delete, api::DeletionPolicy::Retain],
            )
        })?,
        environments: some(u, 4, |u, i| {
            let name = format!("e{i}-{}", label(u, 20)?);
            environment(u, name, &scope_names)
        })?,
        scopes,
        dry_run: u.arbitrary()?,
        wait: wait(u)?,
    })
}

fn change(u: &mut Unstructured) -> Result<api::ChangeTenant> {
    let mut change = api::ChangeTenant {
        tenant: tenant(u)?,
        display_name: maybe(u, |u| text(u, 128))?,
        identity: maybe(u, |u| identity(u, api::TenantType::Business))?,
        edge: maybe(u, edge)?,
        domains: maybe(u, |u| some(u, 5, dns_name))?,
        quotas: maybe(u, quotas)?,
        dry_run: u.arbitrary()?,
        wait: wait(u)?,
    };
    if change.display_name.is_none()
        && change.identity.is_none()
        && change.edge.is_none()
        && change.domains.is_none()
        && change.quotas.is_none()
    {
        change.quotas = Some(quotas(u)?);
    }
    Ok(change)
}

fn certificate(u: &mut Unstructured) -> Result<api::RequestCertificate> {
    let tenant = tenant(u)?;
    let acme = u.arbitrary()?;
    let mut dns_names = some(u, 4, |u, i| {
        let name = dns_name(u, i)?;
        Ok(if u.arbitrary()? {
            format!("*.{name}")
        } else {
            name
        })
    })?;
    let uris = match acme {
        true => Vec::new(),
        false => some(u, 3, |u, _| {
            Ok(format!(
                "spiffe://{tenant}.ossature.test/ns/tn-{tenant}/sa/{}",
                label(u, 30)?
            ))
        })?,
    };
    if dns_names.is_empty() && uris.is_empty() {
        dns_names.push(dns_name(u, 0)?);
    }
    use api::{KeyAlgorithm, Usage};
    Ok(api::RequestCertificate {
        environment: maybe(u, environment_name)?,
        name: label(u, 63)?,
        dns_names,
        uris,
        usages: match acme {
            true => some(u, 1, |_, _| Ok(Usage::Server))?,
            false => some(u, 2, |u, _| choose(u, &[Usage::Server, Usage::Client]))?,
        },
        key_algorithm: match acme {
            true => maybe(u, |_| Ok(KeyAlgorithm::EcdsaP256))?,
            false => maybe(u, |u| {
                choose(u, &[KeyAlgorithm::EcdsaP256, KeyAlgorithm::Ed25519])
            })?,
        },
        lifetime: match acme {
            true => None,
            false => maybe(u, duration)?,
        },
        renew_before: maybe(u, duration)?,
        secret_name: maybe(u, |u| label(u, 63))?,
        acme_issuer: match acme {
            true => Some(label(u, 63)?),
            false => None,
        },
        dry_run: u.arbitrary()?,
        tenant,
    })
}

/// Any valid command.
fn valid_command(u: &mut Unstructured) -> Result<Command> {
    let name = *u.choose(commands::NAMES)?;
    Ok(match name {
        "onboardTenant" => Command::OnboardTenant(onboard(u)?),
        "changeTenant" => Command::ChangeTenant(change(u)?),
        "addScope" => {
            // Suffixes keep the scope and its parent apart.
            let (name, parent) = (format!("{}-s", label(u, 60)?), label(u, 60)? + "-p");
            Command::AddScope(api::AddScope {
                tenant: tenant(u)?,
                scope: scope(u, name, &[parent])?,
                dry_run: u.arbitrary()?,
                wait: wait(u)?,
            })
        }
        "moveScope" => {
            let scope = format!("{}-s", label(u, 60)?);
            Command::MoveScope(api::MoveScope {
                tenant: tenant(u)?,
                parent: maybe(u, |u| Ok(format!("{}-p", label(u, 60)?)))?,
                scope,
                dry_run: u.arbitrary()?,
                wait: wait(u)?,
            })
        }
        "removeScope" => Command::RemoveScope(api::RemoveScope {
            tenant: tenant(u)?,
            scope: label(u, 63)?,
            dry_run: u.arbitrary()?,
        }),
        "grantRole" | "revokeRole" => {
            let (tenant, scope, role) = (tenant(u)?, label(u, 63)?, role(u)?);
            let (groups, users) = principals(u)?;
            let dry_run = u.arbitrary()?;
            match name {
                "grantRole" => Command::GrantRole(api::GrantRole {
                    tenant,
                    scope,
                    role,
                    groups,
                    users,
                    dry_run,
                }),
                _ => Command::RevokeRole(api::RevokeRole {
                    tenant,
                    scope,
                    role,
                    groups,
                    users,
                    dry_run,
                }),
            }
        }
        "createEnvironment" => {
            let (name, scope) = (environment_name(u)?, label(u, 63)?);
            Command::CreateEnvironment(api::CreateEnvironment {
                tenant: tenant(u)?,
                environment: environment(u, name, &[scope])?,
                dry_run: u.arbitrary()?,
                wait: wait(u)?,
            })
        }
        "removeEnvironment" => Command::RemoveEnvironment(api::RemoveEnvironment {
            tenant: tenant(u)?,
            environment: environment_name(u)?,
            dry_run: u.arbitrary()?,
        }),
        "requestCertificate" => Command::RequestCertificate(certificate(u)?),
        "offboardTenant" => Command::OffboardTenant(api::OffboardTenant {
            tenant: tenant(u)?,
            dry_run: u.arbitrary()?,
            wait: wait(u)?,
        }),
        "defineRole" => Command::DefineRole(define_role(u)?),
        "removeRole" => Command::RemoveRole(api::RemoveRole {
            tenant: tenant(u)?,
            role: own_role(u)?,
            dry_run: u.arbitrary()?,
        }),
        "mapGroup" | "unmapGroup" => {
            let (tenant, scope, group, role, dry_run) = (
                tenant(u)?,
                label(u, 63)?,
                text(u, 256)?,
                role(u)?,
                u.arbitrary()?,
            );
            if name == "mapGroup" {
                Command::MapGroup(api::MapGroup {
                    tenant,
                    scope,
                    group,
                    role,
                    dry_run,
                })
            } else {
                Command::UnmapGroup(api::UnmapGroup {
                    tenant,
                    scope,
                    group,
                    role,
                    dry_run,
                })
            }
        }
        "applyTopic" => Command::ApplyTopic(apply_object(u)?),
        "applyServiceIdentity" => Command::ApplyServiceIdentity(apply_object(u)?),
        "applyWorkload" => Command::ApplyWorkload(apply_object(u)?),
        "removeTopic" => Command::RemoveTopic(environment_object(u)?),
        "removeServiceIdentity" => Command::RemoveServiceIdentity(environment_object(u)?),
        "removeWorkload" => Command::RemoveWorkload(environment_object(u)?),
        "rotateCredentials" => Command::RotateCredentials(environment_object(u)?),
        other => panic!("command {other} has no generator here; add one"),
    })
}

/// Any valid query.
fn valid_query(u: &mut Unstructured) -> Result<Query> {
    use api::*;
    use base64::Engine;
    Ok(match *u.choose(queries::NAMES)? {
        "tenantStatus" => Query::TenantStatus(TenantStatusQuery { tenant: tenant(u)? }),
        "listTenants" => Query::ListTenants(ListTenantsQuery {
            limit: maybe(u, |u| u.int_in_range(1..=500))?,
            continue_token: maybe(u, |u| {
                Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tenant(u)?))
            })?,
        }),
        "invocationStatus" => Query::InvocationStatus(InvocationStatusQuery {
            invocation_id: ulid::Ulid::from(u.arbitrary::<u128>()?).to_string(),
        }),
        "tenantTree" => Query::TenantTree(TenantTreeQuery {
            tenant: tenant(u)?,
            scope: maybe(u, |u| label(u, 63))?,
        }),
        "callerPermissions" => Query::CallerPermissions(CallerPermissionsQuery {
            tenant: tenant(u)?,
            scope: maybe(u, |u| label(u, 63))?,
        }),
        "rolePermissions" => {
            let mut roles = some(u, 49, |u, _| text(u, 63))?;
            roles.push(text(u, 63)?);
            Query::RolePermissions(RolePermissionsQuery {
                tenant: tenant(u)?,
                roles,
            })
        }
        other => panic!("query {other} has no generator here; add one"),
    })
}

fn json_of(input: &impl Serialize) -> Value {
    serde_json::to_value(input).expect("an input encodes")
}

/// The command's name and its body, as a caller sends it.
fn encoded(command: &Command) -> (&'static str, Value) {
    let body = match command {
        Command::OnboardTenant(c) => json_of(c),
        Command::ChangeTenant(c) => json_of(c),
        Command::AddScope(c) => json_of(c),
        Command::MoveScope(c) => json_of(c),
        Command::RemoveScope(c) => json_of(c),
        Command::GrantRole(c) => json_of(c),
        Command::RevokeRole(c) => json_of(c),
        Command::CreateEnvironment(c) => json_of(c),
        Command::RemoveEnvironment(c) => json_of(c),
        Command::RequestCertificate(c) => json_of(c),
        Command::OffboardTenant(c) => json_of(c),
        Command::DefineRole(c) => json_of(c),
        Command::RemoveRole(c) => json_of(c),
        Command::MapGroup(c) => json_of(c),
        Command::UnmapGroup(c) => json_of(c),
        Command::ApplyTopic(c) | Command::ApplyServiceIdentity(c) | Command::ApplyWorkload(c) => {
            json_of(c)
        }
        Command::RemoveTopic(c)
        | Command::RemoveServiceIdentity(c)
        | Command::RemoveWorkload(c)
        | Command::RotateCredentials(c) => json_of(c),
    };
    (command.name(), body)
}

fn encoded_query(query: &Query) -> (&'static str, Value) {
    match query {
        Query::TenantStatus(q) => ("tenantStatus", json_of(q)),
        Query::ListTenants(q) => ("listTenants", json_of(q)),
        Query::InvocationStatus(q) => ("invocationStatus", json_of(q)),
        Query::TenantTree(q) => ("tenantTree", json_of(q)),
        Query::CallerPermissions(q) => ("callerPermissions", json_of(q)),
        Query::RolePermissions(q) => ("rolePermissions", json_of(q)),
    }
}

/// What `name` decoded from `body` is what was sent, and passes its checks.
fn assert_decoded_as_sent<T: PartialEq + std::fmt::Debug>(
    name: &str,
    body: &Value,
    decoded: Option<std::result::Result<T, Problem>>,
    sent: &T,
    check: impl Fn(&T) -> std::result::Result<(), Problem>,
) {
    let decoded = decoded
        .unwrap_or_else(|| panic!("{name} is not decoded by its own name"))
        .unwrap_or_else(|p| panic!("{name} {body} is refused: {p:?}"));
    assert_eq!(&decoded, sent, "{name} {body}");
    if let Err(problem) = check(&decoded) {
        panic!("{name} {body} fails its checks: {:?}", problem.errors);
    }
}

/// A body as the server reads it, sent as bytes as a caller does.
fn sent(body: &Value) -> Value {
    let bytes = serde_json::to_vec(body).unwrap();
    invariants::parse(&bytes).expect("an encoded input is JSON")
}

#[test]
fn a_valid_command_or_query_decodes_to_itself_and_passes_its_checks() {
    arbtest::arbtest(|u| {
        if u.arbitrary()? {
            let command = valid_command(u)?;
            let (name, body) = encoded(&command);
            let decoded = Command::decode(name, &sent(&body));
            assert_decoded_as_sent(name, &body, decoded, &command, Command::check);
        } else {
            let query = valid_query(u)?;
            let (name, body) = encoded_query(&query);
            let decoded = Query::decode(name, &sent(&body));
            assert_decoded_as_sent(name, &body, decoded, &query, Query::check);
        }
        Ok(())
    })
    .budget_ms(2 * BUDGET_MS);
}

#[test]
fn valid_commands_in_bulk_decode_item_by_item() {
    arbtest::arbtest(|u| {
        let commands = (0..u.int_in_range(1..=5)?)
            .map(|_| valid_command(u))
            .collect::<Result<Vec<_>>>()?;
        let items: Vec<Value> = commands
            .iter()
            .enumerate()
            .map(|(i, command)| {
                let (name, input) = encoded(command);
                json!({"command": name, "idempotencyKey": format!("key-{i}"), "input": input})
            })
            .collect();
        let body = json!({"validateFirst": u.arbitrary::<bool>()?, "items": items});
        let bulk = decode_bulk_commands(&body).unwrap_or_else(|p| panic!("{body}: {p:?}"));
        assert_eq!(bulk.items.len(), commands.len());
        for (item, command) in bulk.items.iter().zip(&commands) {
            let decoded = Command::decode(&item.command, &item.input);
            assert_decoded_as_sent(&item.command, &item.input, decoded, command, Command::check);
            assert!(validate::idempotency_key(&item.idempotency_key).is_ok());
        }
        Ok(())
    })
    .budget_ms(BUDGET_MS);
}
