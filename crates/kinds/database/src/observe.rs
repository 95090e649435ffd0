//! What the observers read from each server, as plain data: the input of every decision of the
//! kind. A server that could not be read is an `Err` with the reason, never an empty value.

use std::collections::BTreeMap;

use serde::Serialize;
use time::OffsetDateTime;

use crate::replication::{PrimaryObs, ReplicaObs};

/// Cheap facts of one server, read every pass.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerObs {
    /// `server_version`, e.g. `15.10 (Debian 15.10-0+deb12u1)`.
    pub version: String,
    /// `pg_is_in_recovery()`.
    pub in_recovery: bool,
    /// Client backends of `pg_stat_activity` by `state` (`active`, `idle`, `idle in transaction`...).
    pub connections: BTreeMap<String, u64>,
    /// Age of the oldest open transaction, in seconds; None when none is open.
    pub longest_transaction_seconds: Option<f64>,
    /// Who holds that transaction: `user@application (pid N): state`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub longest_transaction: Option<String>,
    /// `pg_database_size(current_database())`.
    pub size_bytes: u64,
}

impl ServerObs {
    pub fn total_connections(&self) -> u64 {
        self.connections.values().sum()
    }
}

/// A replication slot on the primary (`pg_replication_slots`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotRow {
    pub name: String,
    pub active: bool,
    /// `wal_status`: `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: String,
}

/// The primary: its facts, its replication view and its slots.
#[derive(Clone, Debug, PartialEq)]
pub struct PrimaryRead {
    pub server: ServerObs,
    pub replication: PrimaryObs,
    pub slots: Vec<SlotRow>,
}

/// One replica as declared (`server` is its `host:port`) and what it said.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaRead {
    pub server: String,
    pub obs: Result<ReplicaFacts, String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaFacts {
    pub server: ServerObs,
    /// Its replay state; `replay.name` is the name the primary lists it under.
    pub replay: ReplicaObs,
    /// The slot its WAL receiver uses, if any (`pg_stat_wal_receiver.slot_name`).
    pub slot: Option<String>,
}

/// A statement of `pg_stat_statements`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Statement {
    pub query: String,
    pub calls: u64,
    pub mean_ms: f64,
    pub total_ms: f64,
}

/// A table's size and health (`pg_stat_user_tables`, `pg_total_relation_size`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TableHealth {
    /// `schema.table`.
    pub name: String,
    pub total_bytes: u64,
    pub live: u64,
    pub dead: u64,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_vacuum: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_autovacuum: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_analyze: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_autoanalyze: Option<OffsetDateTime>,
}

impl TableHealth {
    pub fn dead_ratio(&self) -> f64 {
        self.stats().dead_ratio()
    }

    pub fn stats(&self) -> crate::maintenance::TableStats {
        crate::maintenance::TableStats {
            name: self.name.clone(),
            live: self.live,
            dead: self.dead,
        }
    }
}

/// The slower statistics, read on `statsInterval` (default 5 min).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlowStats {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Top 10 by mean time; `Err` says why there are none (the extension is not installed).
    #[serde(serialize_with = "ser_statements")]
    pub statements: Result<Vec<Statement>, String>,
    /// The 10 largest tables.
    pub largest: Vec<TableHealth>,
    /// Every user table, for dead tuples and vacuum (not serialized: `largest` and `deadTuples`
    /// are what a reader wants).
    #[serde(skip)]
    pub tables: Vec<TableHealth>,
}

fn ser_statements<S: serde::Serializer>(v: &Result<Vec<Statement>, String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Ok(list) => list.serialize(s),
        Err(e) => e.serialize(s),
    }
}

/// Everything read from one Database in one pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub at: OffsetDateTime,
    /// The primary's `host:port`.
    pub primary_server: String,
    pub primary: Result<PrimaryRead, String>,
    pub replicas: Vec<ReplicaRead>,
    /// The newest slow statistics (kept across passes until refreshed).
    pub stats: Option<SlowStats>,
}
