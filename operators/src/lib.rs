//! Ossature's controllers and the adapters they drive.

pub mod adapters;
pub mod admission;
pub mod conditions;
pub mod context;
pub mod controllers;
pub mod crds;
pub mod desired;
pub mod dns;
pub mod edge;
pub mod failpoint;
pub mod issuance;
pub mod kubernetes;
pub mod metrics;
pub mod reconcile;
pub mod scope_tree;
pub mod shared;
