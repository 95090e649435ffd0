//! The `Database` kind (PostgreSQL primary and streaming replicas). This crate is its pure half:
//! it decides from what the observers read, and does no IO.
//!
//! Slice so far (issue 9): the document and its validation, and the replication assessment — the
//! subtlest decision of the kind, where the popular exporters are known to be wrong
//! (postgres_exporter #385: an idle primary reads as a growing lag; #977: a disconnected replica
//! whose receive and replay positions are equal reads as 0 s behind). Registration in the
//! manifest registry, the observers, gates, maintenance and backups come next.

pub mod maintenance;
pub mod replication;
pub mod retention;
pub mod spec;
pub mod validate;

pub use spec::DatabaseDocument;
