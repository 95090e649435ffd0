//! The status and event vocabulary now lives in `steward-core`; re-exported for the Service kind.
pub use steward_core::status::*;
