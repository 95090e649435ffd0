//! The desired state of every kind, read from manifest files.
//!
//! [`registry`] is the one place that lists the kinds: adding a kind means adding its crate under
//! `crates/kinds/` and its lines there. [`load_paths`] reads files and directories,
//! [`parse_sources`] parses already-read text (pure), [`json_schema`] is the committed schema.

mod load;
pub mod registry;

pub use load::*;
pub use registry::json_schema;
