//! The planner: `plan(&Desired, &Observed) -> Plan`, and the status it implies.
//!
//! Pure and synchronous: this crate depends on no client, runtime or clock. Inputs are gathered
//! by the controller before planning; the executor carries out the plan's actions verbatim.

pub mod assess;
pub mod event;
pub mod model;
pub mod objects;
pub mod plan;
pub mod rollout;
pub mod stack;
pub mod stack_status;
pub mod status;
pub mod task;

pub use event::Event;
pub use model::*;
pub use plan::*;
pub use stack::{pipeline, Planned};
