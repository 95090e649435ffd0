//! Observers and executors, one module per system. Each observer reports `Unknown` when its
//! system cannot be read; each executor carries out a planned action exactly as planned.

pub mod database;
pub mod git;
pub mod jobs;
pub mod networks;
pub mod notify;
pub mod pg_backup;
pub mod pg_maintenance;
pub mod probe;
pub mod prometheus;
mod raw;
pub mod service_spec;
pub mod swarm;
mod task_spec;
