//! The planning core: spec in, desired AWS topology out. Pure: no I/O, every decision unit-tested.

pub mod error;
mod fan_out;
pub mod function;
pub mod iam;
pub mod job;
pub mod lambdas;
pub mod log;
pub mod names;
pub mod push;
pub mod routing;
pub mod topology;
pub mod versions;
pub mod view;

pub use error::{CodeError, PlanError};
pub use fan_out::{ResolvedFanOut, StreamReaders, resolve_fan_out};

/// No views: the `views`/`siblings` argument of a plan that has none (a log without readers, a view alone).
pub const NO_VIEWS: &[crate::crd::MaterializedView] = &[];
