//! steward's desired-state vocabulary: validated values, the document reader (positions, field
//! paths), and the `Service` and `Stack` documents with their validation.
//!
//! No network, no async. Reading a whole desired state of every kind is `steward-manifest`'s
//! (the registry of kinds); this crate is what every kind's document is built from.

mod condition;
pub mod document;
mod service;
mod task;
mod task_validate;
mod types;
mod values;

pub use condition::Condition;
pub use document::*;
pub use service::*;
pub use task::*;
pub use task_validate::validate_task;
pub use types::*;
pub use values::*;

/// Label keys steward writes on what it owns. Users may not set keys under this prefix.
pub const RESERVED_LABEL_PREFIX: &str = "steward.io/";
