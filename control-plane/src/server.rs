//! The HTTP side: routes (one per command and query, the bulk paths, the
//! API document), the pipeline every invocation goes through (context,
//! authentication, rate limit, decoding, checks, the one authorization
//! decision, idempotency, the work, the audit record), and the listener
//! (HTTP/1.1 and HTTP/2, optionally TLS).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::Value;
use tracing::Instrument;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{
    self, BulkCommands, BulkItemResult, BulkQueries, BulkResult, CommandResult, DecisionView,
};
use crate::audit::Audit;
use crate::auth::Authenticator;
use crate::authorize::{Asked, Authorization, Decision, command_asks};
use crate::commands::{self, Command, Early, plan, write::Writes};
use crate::events::{Sequenced, StreamEvent, Streams};
use crate::idempotency::{self, Claim, Idempotency};
use crate::invocation::Invocation;
use crate::problem::{Problem, ProblemDocument, ProblemKind};
use crate::queries::{self, Query};
use crate::watch::Watches;

/// Header of commands' idempotency keys.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on an answer that is a replay of a stored one.
pub const REPLAYED: &str = "idempotent-replayed";
/// Most items in one bulk request.
pub const MAX_BULK_ITEMS: usize = 100;

/// What every request shares.
pub struct App {
    pub client: kube::Client,
    pub watches: Watches,
    pub auth: Authenticator,
    pub authorization: Arc<Authorization>,
    /// What shapes the backend objects a dry run's plan shows.
    pub plan: plan::PlanSettings,
    pub idempotency: Idempotency,
    /// Tenants' progress as server-sent events.
    pub streams: Arc<Streams>,
    pub audit: Audit,
    pub limiter: DefaultKeyedRateLimiter<String>,
    pub max_body_bytes: usize,
    /// Requests, their durations and authorization decisions.
    pub metrics: crate::metrics::ApiMetrics,
}

/// A per-caller limit of `per_second` on average and `burst` at once.
pub fn rate_limiter(per_second: u32, burst: u32) -> DefaultKeyedRateLimiter<String> {
    let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))
}

/// A successful (or stored) answer.
struct Answer {
    status: StatusCode,
    body: Value,
}

fn ok(body: impl serde::Serialize) -> Result<Answer, Problem> {
    Ok(Answer {
        status: StatusCode::OK,
        body: serde_json::to_value(body).map_err(|e| {
            Problem::new(ProblemKind::Internal, format!("encoding the answer: {e}"))
        })?,
    })
}

fn client_address(request: &Request) -> Option<String> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.to_string())
}

/// Reads a JSON body within the size limit.
async fn read_json(app: &App, headers: &HeaderMap, body: Body) -> Result<Value, Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence != "application/json" && !essence.ends_with("+json") {
        return Err(Problem::new(
            ProblemKind::UnsupportedMediaType,
            format!(
                "send the body as JSON with Content-Type: application/json (it was {content_type:?})"
            ),
        ));
    }
    let too_large = || {
        Problem::new(
            ProblemKind::BodyTooLarge,
            format!(
                "the body is larger than {} bytes; split the request (bulk requests take at most {MAX_BULK_ITEMS} items)",
                app.max_body_bytes
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > app.max_body_bytes) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, app.max_body_bytes)
        .await
        .map_err(|_| too_large())?;
    parse_body(&bytes)
}

/// A request body as JSON, or the problem that answers it.
pub fn parse_body(bytes: &[u8]) -> Result<Value, Problem> {
    serde_json::from_slice(bytes).map_err(|e| {
        Problem::new(
            ProblemKind::InvalidInput,
            format!("the body is not JSON: {e}"),
        )
    })
}

/// Authenticates, then counts the call against its caller's rate.
async fn authenticate(app: &App, headers: &HeaderMap, inv: &mut Invocation) -> Result<(), Problem> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let address = inv
        .context
        .provenance
        .as_ref()
        .and_then(|p| p.client_address.clone())
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    match app.auth.authenticate(authorization, &app.watches).await {
        Ok(caller) => {
            let key = caller.actor();
            inv.caller = Some(caller);
            limit(app, key)
        }
        Err(problem) => {
            // Failed attempts count against the address they come from.
            limit(app, format!("address/{address}"))?;
            Err(problem)
        }
    }
}

fn limit(app: &App, key: String) -> Result<(), Problem> {
    app.limiter.check_key(&key).map_err(|not_until| {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        let mut problem = Problem::new(
            ProblemKind::RateLimited,
            format!(
                "this caller sends too many requests; wait {} s",
                wait.as_secs().max(1)
            ),
        );
        problem.retry_after_seconds = Some(wait.as_secs().max(1));
        problem
    })
}

/// The one authorization decision, recorded on the invocation; and the
/// toggles the context asks for, each needing its own permission.
fn decide(
    app: &App,
    inv: &mut Invocation,
    tenant: Option<&str>,
    asked: &[Asked],
) -> Result<(), Problem> {
    let Some(caller) = inv.caller.as_ref() else {
        return Err(Problem::new(ProblemKind::Unauthenticated, "no caller"));
    };
    let decision = app.authorization.decide(caller, tenant, asked);
    settle(app, inv, tenant, decision)
}

/// Records `decision` (refused, unless the toggles the context asks for
/// are allowed too) and answers with a refusal.
fn settle(
    app: &App,
    inv: &mut Invocation,
    tenant: Option<&str>,
    mut decision: Decision,
) -> Result<(), Problem> {
    let Some(caller) = inv.caller.as_ref() else {
        return Err(Problem::new(ProblemKind::Unauthenticated, "no caller"));
    };
    if decision.allowed && inv.context.debug_logging() {
        let tenant = tenant.or(caller.tenant.as_deref());
        let toggle = app
            .authorization
            .decide(caller, tenant, &[Asked::raise_log_level()]);
        if !toggle.allowed {
            decision = Decision {
                allowed: false,
                reason: format!(
                    "{} (the invocation context asks for debug logs)",
                    toggle.reason
                ),
            };
        }
    }
    inv.decision = Some(decision.clone());
    app.metrics.decision(decision.allowed);
    if !decision.allowed {
        return Err(Problem::new(ProblemKind::Forbidden, decision.reason));
    }
    if inv.context.debug_logging() {
        inv.enable_debug_logging();
    }
    // Entered again: the filter reads the level at entry.
    inv.span
        .in_scope(|| tracing::debug!(reason = decision.reason, "authorized"));
    Ok(())
}

/// Decodes, checks and authorizes a command: everything before its work.
fn prepare_command(
    app: &App,
    inv: &mut Invocation,
    name: &str,
    body: &Value,
) -> Result<Command, Problem> {
    let command = Command::decode(name, body).ok_or_else(|| {
        Problem::new(
            ProblemKind::NotFound,
            format!(
                "there is no command {name}; the commands are {}",
                commands::NAMES.join(", ")
            ),
        )
    })??;
    inv.dry_run = command.input().dry_run();
    command.check()?;
    let tenant = command.input().tenant().to_string();
    inv.tenant = Some(tenant.clone());
    let asked = command_asks(&command, &app.watches);
    decide(app, inv, Some(&tenant), &asked)?;
    Ok(command)
}

/// Runs a prepared command under its idempotency key.
async fn run_command(
    app: &App,
    inv: &mut Invocation,
    command: &Command,
    body: &Value,
    key: Option<&str>,
) -> Result<Answer, Problem> {
    let key = key.ok_or_else(|| {
        Problem::new(
            ProblemKind::IdempotencyKeyRequired,
            "send an Idempotency-Key header (a ULID or UUID the client makes for this change, sent again unchanged on a retry)",
        )
    })?;
    if let Err(message) = api::validate::idempotency_key(key) {
        return Err(Problem::invalid(vec![crate::problem::FieldError {
            field: "Idempotency-Key".into(),
            message,
        }]));
    }
    if command.input().dry_run() {
        return work(app, inv, command, Early::Unknown).await;
    }
    let tenant = command.input().tenant().to_string();
    let actor = inv.caller.as_ref().map(|c| c.actor()).unwrap_or_default();
    let hash = idempotency::request_hash(command.name(), body);
    let request = idempotency::Request {
        tenant: &tenant,
        actor: &actor,
        key,
        command: command.name(),
        hash: &hash,
        invocation_id: &inv.context.invocation_id,
    };
    // An onboarding's namespace is created while a key never used before
    // is claimed.
    let fresh_onboarding =
        matches!(command, Command::OnboardTenant(_)) && !app.idempotency.used(&request).await?;
    let (claim, early) = futures::join!(app.idempotency.claim(&request), async {
        match fresh_onboarding {
            true => Early::create(&app.client, command, annotations(inv)).await,
            false => Early::Unknown,
        }
    });
    let held = match claim? {
        Claim::Fresh(held) => held,
        replay => return replayed(inv, replay),
    };
    match work(app, inv, command, early).await {
        Ok(answer) => {
            app.idempotency
                .complete_later(held, answer.status.as_u16(), answer.body.clone());
            Ok(answer)
        }
        // A refusal is the request's answer, kept like a success; a
        // failure worth retrying gives the key back.
        Err(problem) if problem.status().is_client_error() => {
            let document = problem
                .clone()
                .with_invocation(&inv.context.invocation_id)
                .document();
            let stored = serde_json::to_value(&document).unwrap_or(Value::Null);
            app.idempotency
                .complete_later(held, problem.status().as_u16(), stored);
            Err(problem)
        }
        Err(problem) => {
            app.idempotency.release(held).await;
            Err(problem)
        }
    }
}

/// The stored answer of a claim that was not this invocation's.
fn replayed(inv: &mut Invocation, claim: Claim) -> Result<Answer, Problem> {
    let Claim::Replay {
        status,
        mut body,
        invocation_id,
    } = claim
    else {
        unreachable!("a fresh claim is never replayed")
    };
    inv.replay = true;
    tracing::info!(first = invocation_id, "replayed the stored answer");
    if let Some(map) = body.as_object_mut()
        && status < 400
    {
        map.insert("replay".into(), true.into());
    }
    Ok(Answer {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        body,
    })
}

/// The annotations of every object the invocation writes.
fn annotations(inv: &Invocation) -> std::collections::BTreeMap<String, String> {
    let reason = inv
        .decision
        .as_ref()
        .map(|d| d.reason.as_str())
        .unwrap_or_default();
    let actor = inv.caller.as_ref().map(|c| c.actor()).unwrap_or_default();
    inv.context.annotations(&actor, reason)
}

/// The command's writes (or dry run), its plan, and the outcome it waits for.
async fn work(
    app: &App,
    inv: &mut Invocation,
    command: &Command,
    early: Early,
) -> Result<Answer, Problem> {
    let input = command.input();
    let decision = inv.decision.clone().unwrap_or(Decision {
        allowed: false,
        reason: String::new(),
    });
    let mut writes = Writes::new(app.client.clone(), input.dry_run(), annotations(inv));
    let current = input
        .dry_run()
        .then(|| plan::current(&app.watches, input.tenant()));
    let awaited = commands::run(command, &app.watches, &mut writes, early).await;
    if !input.dry_run() {
        inv.record_written(&writes.changes);
    }
    let awaited = awaited?;
    let plan = current.map(|current| {
        let new = plan::after(current.as_ref(), &writes.changes);
        plan::backend_plan(current.as_ref(), new.as_ref(), &app.plan)
    });
    let outcome = match input.wait() {
        Some(wait) if !input.dry_run() => Some(
            commands::wait_outcome(
                &app.watches,
                &awaited,
                Duration::from_secs(wait.timeout_seconds.into()),
            )
            .await,
        ),
        _ => None,
    };
    ok(CommandResult {
        command: command.name().to_string(),
        invocation_id: inv.context.invocation_id.clone(),
        tenant: input.tenant().to_string(),
        dry_run: input.dry_run(),
        replay: false,
        decision: DecisionView {
            allowed: decision.allowed,
            reason: decision.reason,
        },
        objects: writes.changes,
        plan,
        outcome,
    })
}

/// Decodes, checks, authorizes and answers a query.
async fn run_query(
    app: &App,
    inv: &mut Invocation,
    name: &str,
    body: &Value,
) -> Result<Answer, Problem> {
    let query = Query::decode(name, body).ok_or_else(|| {
        Problem::new(
            ProblemKind::NotFound,
            format!(
                "there is no query {name}; the queries are {}",
                queries::NAMES.join(", ")
            ),
        )
    })??;
    query.check()?;
    match &query {
        Query::TenantStatus(q) => {
            inv.tenant = Some(q.tenant.clone());
            let asked = [Asked::new("tenant", "read", None)];
            decide(app, inv, Some(&q.tenant), &asked)?;
            ok(queries::tenant_status(&app.watches, &q.tenant)?)
        }
        Query::ListTenants(q) => {
            let caller = inv
                .caller
                .clone()
                .ok_or_else(|| Problem::new(ProblemKind::Unauthenticated, "no caller"))?;
            // A tenant's caller lists its own tenant, if it may read it.
            match caller.tenant.as_deref() {
                Some(own) if !caller.is_platform_operator() => {
                    decide(app, inv, Some(own), &[Asked::new("tenant", "read", None)])?
                }
                _ => decide(app, inv, None, &[Asked::new("tenant", "list", None)])?,
            }
            ok(queries::list_tenants(&app.watches, &caller, q))
        }
        Query::InvocationStatus(q) => {
            let (record, tenant) = queries::invocation_record(&app.idempotency, q).await?;
            inv.tenant = Some(tenant.clone());
            let asked = [Asked::new("invocation", "read", None)];
            decide(app, inv, Some(&tenant), &asked)?;
            ok(queries::invocation_status(&record, tenant))
        }
        Query::TenantTree(q) => {
            inv.tenant = Some(q.tenant.clone());
            let asked = match &q.scope {
                None => Asked::new("tenant", "read", None),
                Some(scope) => Asked::new("scope", "read", Some(scope)),
            };
            decide(app, inv, Some(&q.tenant), &[asked])?;
            ok(queries::tenant_tree(&app.watches, &app.plan, q)?)
        }
        Query::CallerPermissions(q) => {
            inv.tenant = Some(q.tenant.clone());
            let caller = inv
                .caller
                .clone()
                .ok_or_else(|| Problem::new(ProblemKind::Unauthenticated, "no caller"))?;
            let decision = app.authorization.own(&caller, &q.tenant, name);
            settle(app, inv, Some(&q.tenant), decision)?;
            ok(queries::caller_permissions(&app.authorization, &caller, q))
        }
        Query::RolePermissions(q) => {
            inv.tenant = Some(q.tenant.clone());
            let asked = [Asked::new("role", "read", None)];
            decide(app, inv, Some(&q.tenant), &asked)?;
            ok(queries::role_permissions(&app.authorization, q))
        }
    }
}

/// Ends an invocation: its audit record, its context header.
fn finish(app: &App, inv: &Invocation, result: Result<Answer, Problem>) -> Response {
    let (mut response, status, problem) = match result {
        Ok(answer) => {
            let problem = answer.status.is_client_error() || answer.status.is_server_error();
            let mut response = (answer.status, axum::Json(answer.body)).into_response();
            if problem {
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(crate::problem::PROBLEM_JSON),
                );
            }
            (response, answer.status, None)
        }
        Err(problem) => {
            let problem = problem
                .with_invocation(&inv.context.invocation_id)
                .with_instance(&inv.route);
            tracing::info!(
                problem = problem.kind.slug(),
                detail = problem.detail,
                "refused"
            );
            (
                problem.clone().into_response(),
                problem.status(),
                Some(problem),
            )
        }
    };
    if inv.replay {
        response
            .headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
    }
    inv.stamp(&mut response);
    app.audit
        .record(&inv.audit_record(status.as_u16(), problem.as_ref()));
    app.metrics
        .request(&inv.action, status.as_u16(), inv.started.elapsed());
    response
}

/// What an endpoint serves.
#[derive(Clone, Copy)]
enum Served {
    Command(&'static str),
    Query(&'static str),
    BulkCommands,
    BulkQueries,
}

/// Every endpoint: the invocation from its context header, the caller,
/// the body, the work, and the end (audit record, context header).
async fn endpoint(app: Arc<App>, served: Served, request: Request) -> Response {
    let (route, action) = match served {
        Served::Command(name) => (format!("/v1/commands/{name}"), name),
        Served::Query(name) => (format!("/v1/queries/{name}"), name),
        Served::BulkCommands => ("/v1/commands".to_string(), "bulkCommands"),
        Served::BulkQueries => ("/v1/queries".to_string(), "bulkQueries"),
    };
    let client = client_address(&request);
    let (parts, body) = request.into_parts();
    let (mut inv, bad_context) = Invocation::begin(&parts.headers, client, &route, action);
    let span = inv.span.clone();
    async move {
        let result = async {
            if let Some(problem) = bad_context {
                return Err(problem);
            }
            authenticate(&app, &parts.headers, &mut inv).await?;
            let body = read_json(&app, &parts.headers, body).await?;
            match served {
                Served::Command(name) => {
                    let command = prepare_command(&app, &mut inv, name, &body)?;
                    let key = parts
                        .headers
                        .get(IDEMPOTENCY_KEY)
                        .and_then(|v| v.to_str().ok());
                    run_command(&app, &mut inv, &command, &body, key).await
                }
                Served::Query(name) => run_query(&app, &mut inv, name, &body).await,
                Served::BulkCommands => bulk_commands(&app, &mut inv, &body).await,
                Served::BulkQueries => bulk_queries(&app, &mut inv, &body).await,
            }
        }
        .await;
        finish(&app, &inv, result)
    }
    .instrument(span)
    .await
}

async fn command_endpoint(app: Arc<App>, name: &'static str, request: Request) -> Response {
    endpoint(app, Served::Command(name), request).await
}

async fn query_endpoint(app: Arc<App>, name: &'static str, request: Request) -> Response {
    endpoint(app, Served::Query(name), request).await
}

fn item_result(index: usize, inv: &Invocation, result: &Result<Answer, Problem>) -> BulkItemResult {
    match result {
        Ok(answer) => BulkItemResult {
            index,
            status: answer.status.as_u16(),
            invocation_id: inv.context.invocation_id.clone(),
            result: (!answer.status.is_client_error()).then(|| answer.body.clone()),
            problem: answer
                .status
                .is_client_error()
                .then(|| serde_json::from_value::<ProblemDocument>(answer.body.clone()).ok())
                .flatten(),
        },
        Err(problem) => {
            let problem = problem
                .clone()
                .with_invocation(&inv.context.invocation_id)
                .with_instance(&inv.route);
            BulkItemResult {
                index,
                status: problem.status().as_u16(),
                invocation_id: inv.context.invocation_id.clone(),
                result: None,
                problem: Some(problem.document()),
            }
        }
    }
}

fn audit_item(app: &App, inv: &Invocation, result: &Result<Answer, Problem>) {
    let (status, problem) = match result {
        Ok(answer) => (answer.status.as_u16(), None),
        Err(problem) => (problem.status().as_u16(), Some(problem)),
    };
    app.audit.record(&inv.audit_record(status, problem));
}

fn check_items(count: usize) -> Result<(), Problem> {
    if count == 0 || count > MAX_BULK_ITEMS {
        return Err(Problem::invalid(vec![crate::problem::FieldError {
            field: "items".into(),
            message: format!("must hold 1 to {MAX_BULK_ITEMS} items (it has {count})"),
        }]));
    }
    Ok(())
}

/// A bulk body of commands, with 1 to [`MAX_BULK_ITEMS`] items; each
/// item's input is decoded as its own path's would be.
pub fn decode_bulk_commands(body: &Value) -> Result<BulkCommands, Problem> {
    let bulk: BulkCommands = commands::decode_as(body)?;
    check_items(bulk.items.len())?;
    Ok(bulk)
}

/// A bulk body of queries, with 1 to [`MAX_BULK_ITEMS`] items.
pub fn decode_bulk_queries(body: &Value) -> Result<BulkQueries, Problem> {
    let bulk: BulkQueries = commands::decode_as(body)?;
    check_items(bulk.items.len())?;
    Ok(bulk)
}

async fn bulk_commands(app: &App, inv: &mut Invocation, body: &Value) -> Result<Answer, Problem> {
    let bulk = decode_bulk_commands(body)?;
    let route = "/v1/commands";
    let mut children: Vec<Invocation> = bulk
        .items
        .iter()
        .map(|item| inv.child(route, &item.command))
        .collect();
    let mut results = Vec::with_capacity(bulk.items.len());
    if bulk.validate_first {
        let prepared: Vec<Result<Command, Problem>> = bulk
            .items
            .iter()
            .zip(children.iter_mut())
            .map(|(item, child)| {
                let _entered = child.span.clone().entered();
                let command = prepare_command(app, child, &item.command, &item.input)?;
                api::validate::idempotency_key(&item.idempotency_key).map_err(|message| {
                    Problem::invalid(vec![crate::problem::FieldError {
                        field: "idempotencyKey".into(),
                        message,
                    }])
                })?;
                Ok(command)
            })
            .collect();
        if prepared.iter().any(Result::is_err) {
            for (index, (child, prepared)) in children.iter().zip(prepared).enumerate() {
                let result = match prepared {
                    Err(problem) => Err(problem),
                    Ok(_) => Err(Problem::new(
                        ProblemKind::NotRun,
                        "not run: another item was refused and validateFirst was asked, so no item ran",
                    )),
                };
                audit_item(app, child, &result);
                results.push(item_result(index, child, &result));
            }
            return ok(BulkResult {
                executed: false,
                items: results,
            });
        }
        for (index, ((item, child), command)) in bulk
            .items
            .iter()
            .zip(children.iter_mut())
            .zip(prepared.into_iter().flatten())
            .enumerate()
        {
            let span = child.span.clone();
            let result = run_command(
                app,
                child,
                &command,
                &item.input,
                Some(&item.idempotency_key),
            )
            .instrument(span)
            .await;
            audit_item(app, child, &result);
            results.push(item_result(index, child, &result));
        }
    } else {
        for (index, (item, child)) in bulk.items.iter().zip(children.iter_mut()).enumerate() {
            let span = child.span.clone();
            let result = async {
                let command = prepare_command(app, child, &item.command, &item.input)?;
                run_command(
                    app,
                    child,
                    &command,
                    &item.input,
                    Some(&item.idempotency_key),
                )
                .await
            }
            .instrument(span)
            .await;
            audit_item(app, child, &result);
            results.push(item_result(index, child, &result));
        }
    }
    ok(BulkResult {
        executed: true,
        items: results,
    })
}

async fn bulk_queries(app: &App, inv: &mut Invocation, body: &Value) -> Result<Answer, Problem> {
    let bulk = decode_bulk_queries(body)?;
    let mut results = Vec::with_capacity(bulk.items.len());
    for (index, item) in bulk.items.iter().enumerate() {
        let mut child = inv.child("/v1/queries", &item.query);
        let span = child.span.clone();
        let result = run_query(app, &mut child, &item.query, &item.input)
            .instrument(span)
            .await;
        audit_item(app, &child, &result);
        results.push(item_result(index, &child, &result));
    }
    ok(BulkResult {
        executed: true,
        items: results,
    })
}

/// Responses every endpoint may give besides its answer.
macro_rules! endpoint {
    ($fn:ident, $path:literal, $name:literal, $tag:literal, $input:ty, $output:ty, $run:ident) => {
        #[doc = concat!("`", $name, "`")]
        #[utoipa::path(
            post,
            path = $path,
            tag = $tag,
            operation_id = $name,
            request_body(content = $input, content_type = "application/json"),
            params(
                ("Idempotency-Key" = Option<String>, Header, description = "Commands: required; the same key and body again returns the first answer, marked as a replay."),
                ("ossature-invocation" = Option<String>, Header, description = "Invocation context: base64 of JSON (schemas/invocation-context.schema.json)."),
            ),
            responses(
                (status = 200, description = "Done", body = $output,
                    headers(("ossature-invocation" = String, description = "This invocation's context, base64 of JSON"))),
                (status = 400, description = "Bad input", body = ProblemDocument, content_type = "application/problem+json"),
                (status = 401, description = "No valid token", body = ProblemDocument, content_type = "application/problem+json"),
                (status = 403, description = "Not allowed", body = ProblemDocument, content_type = "application/problem+json"),
                (status = 404, description = "No such tenant or object", body = ProblemDocument, content_type = "application/problem+json"),
                (status = 409, description = "In flight, or changed meanwhile", body = ProblemDocument, content_type = "application/problem+json"),
                (status = 413, description = "Body too large", body = ProblemDocument, content_type = "application/problem+json"),
                (status = 415, description = "Not JSON", body = ProblemDocument, content_type = "application/problem+json"),
                (status = 422, description = "Key reused, or refused by the apiserver", body = ProblemDocument, content_type = "application/problem+json"),
                (status = 429, description = "Rate limited", body = ProblemDocument, content_type = "application/problem+json"),
                (status = 503, description = "A dependency is unavailable", body = ProblemDocument, content_type = "application/problem+json"),
            ),
            security(("bearer" = [])),
        )]
        async fn $fn(State(app): State<Arc<App>>, request: Request) -> Response {
            $run(app, $name, request).await
        }
    };
}

endpoint!(
    onboard_tenant,
    "/v1/commands/onboardTenant",
    "onboardTenant",
    "commands",
    api::OnboardTenant,
    CommandResult,
    command_endpoint
);
endpoint!(
    change_tenant,
    "/v1/commands/changeTenant",
    "changeTenant",
    "commands",
    api::ChangeTenant,
    CommandResult,
    command_endpoint
);
endpoint!(
    add_scope,
    "/v1/commands/addScope",
    "addScope",
    "commands",
    api::AddScope,
    CommandResult,
    command_endpoint
);
endpoint!(
    move_scope,
    "/v1/commands/moveScope",
    "moveScope",
    "commands",
    api::MoveScope,
    CommandResult,
    command_endpoint
);
endpoint!(
    remove_scope,
    "/v1/commands/removeScope",
    "removeScope",
    "commands",
    api::RemoveScope,
    CommandResult,
    command_endpoint
);
endpoint!(
    grant_role,
    "/v1/commands/grantRole",
    "grantRole",
    "commands",
    api::GrantRole,
    CommandResult,
    command_endpoint
);
endpoint!(
    revoke_role,
    "/v1/commands/revokeRole",
    "revokeRole",
    "commands",
    api::RevokeRole,
    CommandResult,
    command_endpoint
);
endpoint!(
    create_environment,
    "/v1/commands/createEnvironment",
    "createEnvironment",
    "commands",
    api::CreateEnvironment,
    CommandResult,
    command_endpoint
);
endpoint!(
    remove_environment,
    "/v1/commands/removeEnvironment",
    "removeEnvironment",
    "commands",
    api::RemoveEnvironment,
    CommandResult,
    command_endpoint
);
endpoint!(
    request_certificate,
    "/v1/commands/requestCertificate",
    "requestCertificate",
    "commands",
    api::RequestCertificate,
    CommandResult,
    command_endpoint
);
endpoint!(
    offboard_tenant,
    "/v1/commands/offboardTenant",
    "offboardTenant",
    "commands",
    api::OffboardTenant,
    CommandResult,
    command_endpoint
);
endpoint!(
    tenant_status,
    "/v1/queries/tenantStatus",
    "tenantStatus",
    "queries",
    api::TenantStatusQuery,
    api::TenantStatus,
    query_endpoint
);
endpoint!(
    list_tenants,
    "/v1/queries/listTenants",
    "listTenants",
    "queries",
    api::ListTenantsQuery,
    api::TenantList,
    query_endpoint
);
endpoint!(
    invocation_status,
    "/v1/queries/invocationStatus",
    "invocationStatus",
    "queries",
    api::InvocationStatusQuery,
    api::InvocationStatus,
    query_endpoint
);

endpoint!(
    tenant_tree,
    "/v1/queries/tenantTree",
    "tenantTree",
    "queries",
    api::TenantTreeQuery,
    api::TenantTree,
    query_endpoint
);
endpoint!(
    caller_permissions,
    "/v1/queries/callerPermissions",
    "callerPermissions",
    "queries",
    api::CallerPermissionsQuery,
    api::CallerPermissions,
    query_endpoint
);
endpoint!(
    role_permissions,
    "/v1/queries/rolePermissions",
    "rolePermissions",
    "queries",
    api::RolePermissionsQuery,
    api::RolePermissions,
    query_endpoint
);

endpoint!(
    define_role,
    "/v1/commands/defineRole",
    "defineRole",
    "commands",
    api::DefineRole,
    CommandResult,
    command_endpoint
);
endpoint!(
    remove_role,
    "/v1/commands/removeRole",
    "removeRole",
    "commands",
    api::RemoveRole,
    CommandResult,
    command_endpoint
);
endpoint!(
    map_group,
    "/v1/commands/mapGroup",
    "mapGroup",
    "commands",
    api::MapGroup,
    CommandResult,
    command_endpoint
);
endpoint!(
    unmap_group,
    "/v1/commands/unmapGroup",
    "unmapGroup",
    "commands",
    api::UnmapGroup,
    CommandResult,
    command_endpoint
);

endpoint!(
    apply_topic,
    "/v1/commands/applyTopic",
    "applyTopic",
    "commands",
    api::ApplyTopic,
    CommandResult,
    command_endpoint
);
endpoint!(
    remove_topic,
    "/v1/commands/removeTopic",
    "removeTopic",
    "commands",
    api::RemoveTopic,
    CommandResult,
    command_endpoint
);
endpoint!(
    apply_service_identity,
    "/v1/commands/applyServiceIdentity",
    "applyServiceIdentity",
    "commands",
    api::ApplyServiceIdentity,
    CommandResult,
    command_endpoint
);
endpoint!(
    remove_service_identity,
    "/v1/commands/removeServiceIdentity",
    "removeServiceIdentity",
    "commands",
    api::RemoveServiceIdentity,
    CommandResult,
    command_endpoint
);
endpoint!(
    rotate_credentials,
    "/v1/commands/rotateCredentials",
    "rotateCredentials",
    "commands",
    api::RotateCredentials,
    CommandResult,
    command_endpoint
);
endpoint!(
    apply_workload,
    "/v1/commands/applyWorkload",
    "applyWorkload",
    "commands",
    api::ApplyWorkload,
    CommandResult,
    command_endpoint
);
endpoint!(
    remove_workload,
    "/v1/commands/removeWorkload",
    "removeWorkload",
    "commands",
    api::RemoveWorkload,
    CommandResult,
    command_endpoint
);

async fn commands_bulk_run(app: Arc<App>, _name: &'static str, request: Request) -> Response {
    endpoint(app, Served::BulkCommands, request).await
}

async fn queries_bulk_run(app: Arc<App>, _name: &'static str, request: Request) -> Response {
    endpoint(app, Served::BulkQueries, request).await
}

endpoint!(
    bulk_commands_endpoint,
    "/v1/commands",
    "bulkCommands",
    "bulk",
    BulkCommands,
    BulkResult,
    commands_bulk_run
);
endpoint!(
    bulk_queries_endpoint,
    "/v1/queries",
    "bulkQueries",
    "bulk",
    BulkQueries,
    BulkResult,
    queries_bulk_run
);

/// Interval of the comments that keep an idle stream's connection open.
const STREAM_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a stream waits for a tenant its watch does not hold yet.
const NEW_TENANT_GRACE: Duration = Duration::from_secs(2);
/// Header of the last event a reconnecting stream saw.
const LAST_EVENT_ID: &str = "last-event-id";

/// A tenant's progress: a snapshot, then each change of its conditions, until
/// it is Ready, failed or gone.
#[utoipa::path(
    get,
    path = "/v1/streams/tenants/{tenant}",
    operation_id = "tenantEvents",
    tag = "streams",
    params(
        ("tenant" = String, Path, description = "The tenant to follow"),
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event seen: the stream resumes after it, or starts with a snapshot when this server no longer has what came since"),
    ),
    responses(
        (status = 200, description = "Server-sent events; each one's data is the JSON of one of these, its `event` field the event's name: `snapshot` (first, and after any gap), `condition`, `progress`, `removed`, `end` (last)", body = StreamEvent, content_type = "text/event-stream"),
        (status = 400, description = "Bad input", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = ProblemDocument, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
async fn tenant_events(
    State(app): State<Arc<App>>,
    axum::extract::Path(tenant): axum::extract::Path<String>,
    request: Request,
) -> Response {
    let route = format!("/v1/streams/tenants/{tenant}");
    let client = client_address(&request);
    let (parts, _) = request.into_parts();
    let (mut inv, bad_context) = Invocation::begin(&parts.headers, client, &route, "tenantEvents");
    let span = inv.span.clone();
    async move {
        let allowed = async {
            if let Some(problem) = bad_context {
                return Err(problem);
            }
            authenticate(&app, &parts.headers, &mut inv).await?;
            let mut check = crate::api::validate::Check::default();
            check.field("tenant", crate::api::validate::tenant_name(&tenant));
            check.into_result().map_err(Problem::invalid)?;
            inv.tenant = Some(tenant.clone());
            decide(
                &app,
                &mut inv,
                Some(&tenant),
                &[Asked::new("tenant", "read", None)],
            )?;
            // A tenant onboarded a moment ago may not have reached the watch yet.
            let mut changes = app.watches.changes();
            let deadline = tokio::time::Instant::now() + NEW_TENANT_GRACE;
            while app.watches.tenant(&tenant).is_none() {
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { break },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            queries::tenant_status(&app.watches, &tenant).map(|_| ())
        }
        .await;
        if let Err(problem) = allowed {
            return finish(&app, &inv, Err(problem));
        }
        let last_event_id = parts
            .headers
            .get(LAST_EVENT_ID)
            .and_then(|v| v.to_str().ok());
        let start = app.streams.subscribe(&tenant, last_event_id);
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        tokio::spawn(
            pump_events(app.streams.clone(), tenant, start, sender).instrument(inv.span.clone()),
        );
        let events = futures::stream::unfold(receiver, |mut receiver| async move {
            let event = receiver.recv().await?;
            Some((Ok::<_, std::convert::Infallible>(event), receiver))
        });
        let mut response = axum::response::sse::Sse::new(events)
            .keep_alive(axum::response::sse::KeepAlive::new().interval(STREAM_KEEP_ALIVE))
            .into_response();
        inv.stamp(&mut response);
        app.audit.record(&inv.audit_record(200, None));
        response
    }
    .instrument(span)
    .await
}

/// Sends one stream's events until the outcome, the client leaving or the
/// server stopping; a stream that falls behind gets a snapshot.
async fn pump_events(
    streams: Arc<Streams>,
    tenant: String,
    start: crate::events::Start,
    sender: tokio::sync::mpsc::Sender<axum::response::sse::Event>,
) {
    use axum::response::sse::Event;
    use tokio::sync::broadcast::error::RecvError;
    let send = |sequenced: &Sequenced| {
        let event = Event::default()
            .event(sequenced.event.name())
            .json_data(&sequenced.event)
            .unwrap_or_default();
        let event = match sequenced.event {
            StreamEvent::End { .. } => event,
            _ => event.id(streams.event_id(sequenced.seq)),
        };
        sender.send(event)
    };
    let end = |state| {
        let event = StreamEvent::End { state };
        let data = Event::default().event(event.name()).json_data(&event);
        sender.send(data.unwrap_or_default())
    };
    let crate::events::Start {
        first,
        mut receiver,
        outcome,
    } = start;
    let mut seen = 0;
    for sequenced in &first {
        if send(sequenced).await.is_err() {
            return;
        }
        seen = sequenced.seq;
        if matches!(sequenced.event, StreamEvent::End { .. }) {
            return;
        }
        if let Some(state) = sequenced.outcome {
            let _ = end(state).await;
            return;
        }
    }
    if first.is_empty()
        && let Some(state) = outcome
    {
        let _ = end(state).await;
        return;
    }
    loop {
        let sequenced = tokio::select! {
            received = receiver.recv() => match received {
                Ok(sequenced) => sequenced,
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "stream fell behind; sending a snapshot");
                    streams.snapshot(&tenant)
                }
                Err(RecvError::Closed) => return,
            },
            _ = sender.closed() => return,
        };
        if sequenced.seq <= seen && !matches!(sequenced.event, StreamEvent::Snapshot { .. }) {
            continue;
        }
        if send(&sequenced).await.is_err() {
            return;
        }
        seen = seen.max(sequenced.seq);
        if matches!(sequenced.event, StreamEvent::End { .. }) {
            return;
        }
        if let Some(state) = sequenced.outcome {
            let _ = end(state).await;
            return;
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ossature control plane",
        description = "Onboards, changes and offboards tenants by writing Ossature's custom resources. Errors are application/problem+json.",
        version = "v1",
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "commands", description = "Change something; need an Idempotency-Key; take dryRun."),
        (name = "queries", description = "Read from the shared watch."),
        (name = "bulk", description = "Several commands or queries, in order, each with its own result; never atomic."),
        (name = "streams", description = "Progress pushed as server-sent events."),
    ),
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An EdDSA access token from Keycloak: of your tenant's realm (its audience and organization or tenant claim name the tenant), or of the platform operators' realm and group."))
                    .build(),
            ),
        );
    }
}

/// The API's routes, and its document generated from the same handlers.
pub fn routes() -> (axum::Router<Arc<App>>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(onboard_tenant))
        .routes(routes!(change_tenant))
        .routes(routes!(add_scope))
        .routes(routes!(move_scope))
        .routes(routes!(remove_scope))
        .routes(routes!(grant_role))
        .routes(routes!(revoke_role))
        .routes(routes!(create_environment))
        .routes(routes!(remove_environment))
        .routes(routes!(request_certificate))
        .routes(routes!(offboard_tenant))
        .routes(routes!(define_role))
        .routes(routes!(remove_role))
        .routes(routes!(map_group))
        .routes(routes!(unmap_group))
        .routes(routes!(apply_topic))
        .routes(routes!(remove_topic))
        .routes(routes!(apply_service_identity))
        .routes(routes!(remove_service_identity))
        .routes(routes!(rotate_credentials))
        .routes(routes!(apply_workload))
        .routes(routes!(remove_workload))
        .routes(routes!(tenant_status))
        .routes(routes!(list_tenants))
        .routes(routes!(invocation_status))
        .routes(routes!(tenant_tree))
        .routes(routes!(caller_permissions))
        .routes(routes!(role_permissions))
        .routes(routes!(bulk_commands_endpoint))
        .routes(routes!(bulk_queries_endpoint))
        .routes(routes!(tenant_events))
        .split_for_parts()
}

/// The API document, as served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().1
}

/// A path the API does not have.
async fn not_found(state: State<Arc<App>>, request: Request) -> Response {
    not_served(state, request, false).await
}

/// A path of the API asked with another method than POST.
async fn method_not_allowed(state: State<Arc<App>>, request: Request) -> Response {
    not_served(state, request, true).await
}

/// Anything else: a problem, answered and audited like every invocation.
async fn not_served(State(app): State<Arc<App>>, request: Request, known_path: bool) -> Response {
    let path = request.uri().path().to_string();
    let action = path.rsplit('/').next().unwrap_or_default().to_string();
    let (inv, _) = Invocation::begin(request.headers(), client_address(&request), &path, &action);
    let problem = if !known_path {
        Problem::new(
            ProblemKind::NotFound,
            format!(
                "nothing is served at {path}: commands are POST /v1/commands/<name> ({}), queries POST /v1/queries/<name> ({}), a tenant's events GET /v1/streams/tenants/<tenant>; the API is described at /openapi.json",
                commands::NAMES.join(", "),
                queries::NAMES.join(", ")
            ),
        )
    } else {
        Problem::new(
            ProblemKind::MethodNotAllowed,
            format!(
                "{} is not served at {path}; commands and queries take POST, streams GET",
                request.method()
            ),
        )
    };
    let _entered = inv.span.clone().entered();
    finish(&app, &inv, Err(problem))
}

/// The whole service: the API, `/openapi.json`, `/healthz`, `/metrics`, CORS.
pub fn router(app: Arc<App>, cors_origins: &[String]) -> axum::Router {
    let (api, document) = routes();
    let document = Arc::new(document);
    let metrics = app.metrics.clone();
    let mut router = api
        .route(
            "/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move { axum::Json((*document).clone()) }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move { metrics.render() }
            }),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(app);
    if !cors_origins.is_empty() {
        use tower_http::cors::{AllowOrigin, CorsLayer};
        let origins: Vec<HeaderValue> = cors_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        let cors = CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::POST, Method::GET])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::HeaderName::from_static(IDEMPOTENCY_KEY),
                header::HeaderName::from_static(crate::context::HEADER),
                header::HeaderName::from_static("traceparent"),
            ])
            .expose_headers([
                header::HeaderName::from_static(crate::context::HEADER),
                header::HeaderName::from_static(REPLAYED),
                header::RETRY_AFTER,
            ])
            .max_age(Duration::from_secs(600));
        router = router.layer(cors);
    }
    router
}

/// TLS from a certificate chain and key in PEM files; HTTP/2 and
/// HTTP/1.1 offered by ALPN.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use anyhow::Context as _;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading --tls-cert {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!(
                "--tls-cert {} holds no PEM certificate chain",
                cert.display()
            )
        })?;
    if chain.is_empty() {
        anyhow::bail!("--tls-cert {} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("--tls-key {} holds no PEM private key", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .context("the TLS certificate and key do not fit together")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `router` on `listener` (HTTP/1.1 and HTTP/2; TLS with `tls`)
/// until `shutdown`, then lets open requests finish for up to 10 s.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use tower::ServiceExt;

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let router = router.clone();
        let service = hyper::service::service_fn(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(request.map(Body::new))
            },
        );
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let builder = Builder::new(TokioExecutor::new());
            let served = match acceptor {
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                            .await;
                    let Ok(Ok(tls)) = handshake else {
                        tracing::debug!(%peer, "TLS handshake failed or timed out");
                        return;
                    };
                    let connection = builder
                        .serve_connection(TokioIo::new(tls), service)
                        .into_owned();
                    watcher.watch(connection).await
                }
                None => {
                    let connection = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    watcher.watch(connection).await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("requests still open after 10 s were cut");
        }
    }
}
