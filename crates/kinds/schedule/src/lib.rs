//! The `Schedule` kind: the operations calendar (backups, cleanups, reports) as desired state.
//!
//! - [`spec`]: the document (serde + JSON Schema) and [`validate`]: its checks, with `file:line:col`.
//! - [`cron`]: cron expressions in an IANA time zone, with explicit daylight-saving rules.
//! - [`model`]: the planner's view of a validated schedule.
//! - [`plan`]: the pure planner — what is due, catch-up after downtime, concurrency, timeouts,
//!   retries, history — and the status it implies.
//! - [`run`]: a run as the store keeps it.
//!
//! Observing job services and carrying out a plan is the controller's (behind the
//! [`plan::Input`] / [`plan::Plan`] seam); this crate does no IO and reads no clock.

pub mod cron;
mod display;
pub mod model;
pub mod plan;
mod planner;
pub mod run;
pub mod spec;
mod status;
pub mod validate;

pub use cron::{CronError, CronSchedule};
pub use model::{JobState, ScheduleState};
pub use plan::{plan, Input, JobObs, Plan};
pub use run::{Outcome, Run, Trigger};
pub use spec::{ScheduleDocument, ScheduleSpec};
