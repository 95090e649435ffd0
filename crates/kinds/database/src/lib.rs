//! The `Database` kind (PostgreSQL primary and streaming replicas). This crate is its pure half:
//! it decides from what the observers read, and does no IO.
//!
//! - `spec`, `validate`: the document and its checks; `model`: the reconciler's view of it.
//! - `observe`: what the observers read (plain data); `replication`: the lag from both ends, where
//!   the popular exporters are known to be wrong (postgres_exporter #385: an idle primary reads as
//!   a growing lag; #977: a disconnected replica whose receive and replay positions are equal
//!   reads as 0 s behind).
//! - `status`: conditions, the one-view report and the deploy gate.
//! - `maintenance`, `retention`, `backup`: what maintenance does next, which backups are kept,
//!   and what is recorded of each backup and restore test.
//!
//! The IO is elsewhere: `steward_backends::{database, pg_backup, pg_maintenance}` read and act,
//! `steward_controller::database` runs the reconciler.

pub mod backup;
pub mod maintenance;
pub mod model;
pub mod observe;
pub mod plan;
pub mod reason;
pub mod replication;
pub mod retention;
pub mod spec;
pub mod status;
pub mod validate;

pub use model::{DatabaseState, Task};
pub use reason::Reason;
pub use spec::{DatabaseDocument, DatabaseEntry};
