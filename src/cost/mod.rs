//! What a million writes cost: the topology an EventLog and its MaterializedViews produce, priced line by
//! line before anything is applied.
//!
//! [`estimate()`] prices one EventLog with its views at [`Prices`] under [`Assumptions`] and returns an
//! [`Estimate`]: one [`Line`] per billed quantity of each AWS resource, a total, a terminal table
//! ([`Estimate::render_table`]) and a status summary ([`Estimate::summary`]). [`load_manifests`] reads
//! the kinds from YAML files so they can be priced before `kubectl apply`.
//!
//! The model is the corrected one of `shared/aws-reference/COST-MODEL.md` (see [`model`] for what each
//! line counts); the default prices are that document's us-east-1 list prices (see [`prices`]); every
//! other input is an [`Assumptions`] field with its default and its reason. Money is `f64`: these are
//! estimates, and only the display rounds.

pub mod assumptions;
pub mod backfill;
mod error;
pub mod estimate;
pub mod manifests;
pub mod model;
pub mod plan;
pub mod prices;
mod report;
mod table;

pub use assumptions::{
    Assumptions, InClusterAssumptions, LambdaAssumptions, SnsAssumptions, SqsAssumptions, ViewAssumptions,
};
pub use error::CostError;
pub use estimate::{Component, Estimate, Line, Unit};
pub use manifests::load_manifests;
pub use model::{WRITES, estimate};
pub use prices::Prices;
pub use report::report;

#[cfg(test)]
mod tests;
