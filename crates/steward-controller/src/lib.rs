//! The loop: gather inputs, plan, execute, record. Triggers only wake the loop; every pass
//! re-reads everything and is idempotent.

mod backoff;
mod pass;
mod prepare;
mod run;

pub use backoff::Backoff;
pub use pass::{Controller, PassOutcome};
pub use prepare::{prepare, PrepareError};
pub use run::{run, RunOptions};
