//! kappa-operator: runs the Kappa architecture on AWS from two Kubernetes kinds.
//!
//! Layers, outermost first: [`crd`] (what users write) → [`controller`] (orchestrates one pipeline per
//! kind) → `plan` (pure: desired topology) → `aws` (one adapter per service). [`settings`] holds the
//! operator's own configuration, validated at startup; [`metrics`] and [`telemetry`] observe it all.

pub mod aws;
pub mod backfill;
pub mod controller;
pub mod cost;
pub mod crd;
pub mod http;
pub mod lambda;
pub mod metrics;
pub mod plan;
pub mod projection;
pub mod push;
pub mod runtime;
pub mod settings;
pub mod telemetry;
