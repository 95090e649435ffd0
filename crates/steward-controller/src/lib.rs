//! The loop: gather inputs, plan, execute, record. Triggers only wake the loop; every pass
//! re-reads everything and is idempotent.

mod backoff;
pub mod database;
pub mod metrics;
mod network;
mod pass;
mod prepare;
mod rollouts;
mod run;
pub mod schedule;
#[cfg(test)]
mod schedule_tests;
pub mod scheduler;

pub use backoff::Backoff;
pub use network::plan_networks;
pub use pass::{
    retained_objects, Controller, PassOutcome, SourceRevision, META_PATHS, META_ROLLOUT, META_SOURCE_APPLIED,
    META_SOURCE_APPLIED_DESCRIBE, META_SOURCE_ATTEMPTED, META_SOURCE_ATTEMPTED_DESCRIBE,
};
pub use prepare::{desired_hash, generation_hash, prepare, prepare_all, PrepareError, Prepared};
pub use run::{run, AfterDatabase, AfterPass, AfterSchedule, RunOptions};

/// A request from outside the loop (HTTP API, git webhook) to look again now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// Reconcile now (`POST /api/v1/sync`).
    Sync,
    /// Fetch the git source, then reconcile (a push webhook).
    Fetch,
}
