//! Ossature's controllers and the adapters they drive.

pub mod adapters;
pub mod conditions;
pub mod context;
pub mod crds;
pub mod desired;
pub mod environment;
pub mod kubernetes;
pub mod metrics;
pub mod scope;
pub mod scope_tree;
pub mod tenant;
