//! The `Network` kind: Swarm networks the stack owns (overlay by default), which its services
//! join by name.
//!
//! - [`spec`]: the document (serde + JSON Schema) and [`validate`]: its checks, with `file:line:col`.
//! - [`model`]: the planner's view of a desired network and of one Swarm reports.
//! - [`plan`]: the pure planner — create what is missing, hold what Docker cannot change in
//!   place, prune what is no longer desired — and its `display()` for `steward plan`.
//!
//! Reading networks and carrying out a plan is the backend's and the controller's; this crate
//! does no IO.

pub mod model;
pub mod plan;
pub mod spec;
pub mod validate;

pub use model::{DesiredNetwork, ObservedNetwork};
pub use plan::{plan, Action, Decision, Entry, Hold, Input, Plan, Reason};
pub use spec::{NetworkDocument, NetworkEntry, NetworkSpec};
