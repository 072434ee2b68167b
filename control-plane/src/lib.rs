//! Ossature's control plane: an RPC API over HTTP that onboards, changes
//! and offboards tenants by writing the same custom resources a platform
//! engineer would (server-side apply, never a backend directly), with
//! Keycloak tokens, one authorization decision per invocation, idempotency
//! keys kept in Kubernetes, dry runs by the apiserver, and an audit record
//! of every invocation.

pub mod api;
pub mod audit;
pub mod auth;
pub mod authorize;
pub mod cli;
pub mod commands;
pub mod context;
pub mod events;
pub mod idempotency;
pub mod invocation;
#[cfg(feature = "local-stack")]
pub mod local_stack;
pub mod metrics;
pub mod problem;
pub mod queries;
pub mod rbac;
pub mod schemas;
pub mod server;
pub mod start;
pub mod watch;
