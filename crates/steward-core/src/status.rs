//! Status and event vocabulary shared by the planner, the store and the API.
//!
//! Shapes follow Kubernetes conventions: conditions carry type, status, reason, message,
//! lastTransitionTime and observedGeneration; events carry type, reason, message, object,
//! count and first/last seen.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Condition types steward reports for every resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ConditionType {
    Ready,
    Progressing,
    Degraded,
    /// Database: every replica streams and is within `thresholds.replicationLag`.
    ReplicationHealthy,
    /// Database: the newest backup is younger than its schedule's period plus a margin, and the
    /// last restore test passed.
    BackupHealthy,
    /// Database: tables over the vacuum thresholds wait for the maintenance window.
    MaintenanceDue,
    /// Database: a replica could be promoted now (streaming, caught up, in recovery, its slot
    /// healthy). Promotion itself stays a human decision.
    FailoverReady,
}

impl ConditionType {
    /// The conditions every kind reports.
    pub const ALL: [ConditionType; 3] = [Self::Ready, Self::Progressing, Self::Degraded];
    /// What a Database reports.
    pub const DATABASE: [ConditionType; 5] = [
        Self::Ready,
        Self::ReplicationHealthy,
        Self::BackupHealthy,
        Self::MaintenanceDue,
        Self::FailoverReady,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Progressing => "Progressing",
            Self::Degraded => "Degraded",
            Self::ReplicationHealthy => "ReplicationHealthy",
            Self::BackupHealthy => "BackupHealthy",
            Self::MaintenanceDue => "MaintenanceDue",
            Self::FailoverReady => "FailoverReady",
        }
    }
}

/// `True`, `False`, or `Unknown` when the backend could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn from_bool(b: bool) -> Self {
        if b {
            Self::True
        } else {
            Self::False
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: ConditionType,
    pub status: ConditionStatus,
    /// PascalCase, machine-readable.
    pub reason: String,
    pub message: String,
    #[serde(with = "time::serde::rfc3339")]
    pub last_transition_time: OffsetDateTime,
    pub observed_generation: u64,
}

/// What steward last saw and decided about one resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    pub kind: String,
    pub name: String,
    pub conditions: Vec<Condition>,
    /// `None` when the backend could not be read.
    pub desired_replicas: Option<u64>,
    pub running_replicas: Option<u64>,
    pub image: Option<String>,
    /// Generation of the desired state this status was computed against.
    pub observed_generation: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub last_reconcile: OffsetDateTime,
    /// Source revision (git commit, `1a2b3c4 'subject' (author)`) of the desired state in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_revision: Option<String>,
    /// Newest source revision tried; differs from `applied_revision` when it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempted_revision: Option<String>,
    /// What only this kind has (a Schedule's last and next run times, its active run), as the
    /// kind's own JSON object. Absent for services and stacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl ResourceStatus {
    /// The status of a kind that runs no tasks of its own (no replicas, image or source
    /// revision): a Network, a Database.
    pub fn without_tasks(
        kind: &str,
        name: &str,
        conditions: Vec<Condition>,
        generation: u64,
        now: OffsetDateTime,
        details: Option<serde_json::Value>,
    ) -> Self {
        ResourceStatus {
            kind: kind.into(),
            name: name.into(),
            conditions,
            desired_replicas: None,
            running_replicas: None,
            image: None,
            observed_generation: generation,
            last_reconcile: now,
            applied_revision: None,
            attempted_revision: None,
            details,
        }
    }

    pub fn condition(&self, t: ConditionType) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == t)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// An event as produced by the controller, before it is stored (and possibly folded).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    #[serde(rename = "type")]
    pub type_: EventType,
    /// PascalCase reason, e.g. `DriftCorrected`.
    pub reason: String,
    pub message: String,
    /// `Kind/name`, e.g. `Service/taxcollector-web`.
    pub object: String,
}

/// A stored event. Similar events (same object, type, reason and message) are folded into one
/// record whose `count` grows and whose `last_seen` moves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    pub id: i64,
    #[serde(rename = "type")]
    pub type_: EventType,
    pub reason: String,
    pub message: String,
    pub object: String,
    pub count: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
}
