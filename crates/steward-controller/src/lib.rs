//! The loop: gather inputs, plan, execute, record. Triggers only wake the loop; every pass
//! re-reads everything and is idempotent.

mod backoff;
mod pass;
mod prepare;
mod rollouts;
mod run;

pub use backoff::Backoff;
pub use pass::{Controller, PassOutcome, META_PATHS, META_ROLLOUT};
pub use prepare::{desired_hash, prepare, PrepareError};
pub use run::{run, RunOptions};
