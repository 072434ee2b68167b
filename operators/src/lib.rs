//! Ossature's controllers and the adapters they drive. What they decide
//! without calling anything lives in `ossature-model`; here is what reads
//! and writes the backends.

pub mod acme_accounts;
pub mod adapters;
pub mod admission;
pub mod cli;
pub mod context;
pub mod controllers;
pub mod crds;
pub mod dns;
pub mod edge;
pub mod failpoint;
pub mod health;
pub mod kubernetes;
pub mod leader;
#[cfg(feature = "local-stack")]
pub mod local_stack;
pub mod metrics;
pub mod reconcile;
pub mod secrets_access;
pub mod shared;
pub mod signing;
pub mod start;
pub mod stores;
