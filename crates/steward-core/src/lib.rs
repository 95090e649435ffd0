//! steward's shared vocabulary, used by every kind's pure planner, the store, the controller and
//! the API. No IO, no clock reads, no client crates: the dependency graph proves that deciding
//! does no IO.
//!
//! - [`ObjectRef`] names one object of one [`Kind`] (`Service/taxcollector-web`).
//! - [`Observation`] is what an observer saw: `Known(T)` or `Unknown { reason }` — never "absent"
//!   because a read failed.
//! - [`Requeue`] is when a reconciler wants to look at its object again.
//! - [`WaitingOn`] is a typed "not now", including a dependency on another object.
//! - [`Reason`] is why the Stack, its Services and their rollouts recorded an event; whether
//!   the event is a Warning follows from it.
//! - [`status`] holds conditions, statuses and events (Kubernetes shapes).

pub mod status;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Every kind steward knows. Adding a kind adds a variant here and a line in the registry
/// (`steward-kinds`); nothing else matches on kinds by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// The whole desired state: owns its services and their stack-wide rollout.
    Stack,
    Service,
    Schedule,
    /// A rollout of one generation (events only: `Rollout/7`).
    Rollout,
    /// A Swarm overlay network the stack owns.
    Network,
    /// A named volume's driver and options.
    Volume,
    /// A Swarm secret steward made (versioned name) from a `valueFrom`.
    Secret,
    /// A Swarm config steward made.
    Config,
    /// A PostgreSQL primary and its streaming replicas.
    Database,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Stack,
        Kind::Service,
        Kind::Schedule,
        Kind::Rollout,
        Kind::Network,
        Kind::Volume,
        Kind::Secret,
        Kind::Config,
        Kind::Database,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Stack => "Stack",
            Kind::Service => "Service",
            Kind::Schedule => "Schedule",
            Kind::Rollout => "Rollout",
            Kind::Network => "Network",
            Kind::Volume => "Volume",
            Kind::Secret => "Secret",
            Kind::Config => "Config",
            Kind::Database => "Database",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown kind {s:?}; expected one of {}",
                    Kind::ALL.map(Kind::as_str).join(", ")
                )
            })
    }
}

/// One object: `Kind/name`. This is the identity used in events, statuses, the work queue and
/// the CLI (`steward describe Schedule/db-backup`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct ObjectRef {
    pub kind: Kind,
    pub name: String,
}

impl ObjectRef {
    pub fn new(kind: Kind, name: impl Into<String>) -> Self {
        Self {
            kind,
            name: name.into(),
        }
    }
    pub fn service(name: impl Into<String>) -> Self {
        Self::new(Kind::Service, name)
    }
    pub fn stack(name: impl Into<String>) -> Self {
        Self::new(Kind::Stack, name)
    }
    pub fn schedule(name: impl Into<String>) -> Self {
        Self::new(Kind::Schedule, name)
    }
    pub fn database(name: impl Into<String>) -> Self {
        Self::new(Kind::Database, name)
    }
    pub fn rollout(generation: u64) -> Self {
        Self::new(Kind::Rollout, generation.to_string())
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

impl From<ObjectRef> for String {
    fn from(o: ObjectRef) -> String {
        o.to_string()
    }
}

impl TryFrom<String> for ObjectRef {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl FromStr for ObjectRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, name) = s
            .split_once('/')
            .ok_or_else(|| format!("expected KIND/NAME (e.g. Schedule/db-backup), got {s:?}"))?;
        if name.is_empty() {
            return Err(format!("expected KIND/NAME, got {s:?}: the name is empty"));
        }
        Ok(ObjectRef::new(kind.parse()?, name))
    }
}

impl PartialEq<str> for ObjectRef {
    /// Compares with the `Kind/name` text (tests and string-keyed maps).
    fn eq(&self, other: &str) -> bool {
        other
            .split_once('/')
            .is_some_and(|(k, n)| k == self.kind.as_str() && n == self.name)
    }
}

impl PartialEq<&str> for ObjectRef {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

/// Why an event about the Stack, one of its Services or a Rollout was recorded (PascalCase, as
/// Kubernetes' reasons). The text is part of the interface: users, notifiers and tests read it.
/// The Schedule kind has reasons of its own (`steward_schedule::Reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Reason {
    // The desired state and its source.
    DesiredStateChanged,
    Applied,
    InvalidRevision,
    InvalidDesiredState,
    SourceRecovered,
    ForcePushed,
    PathMissing,
    SourceUnavailable,
    // The backend and leadership.
    BackendUnavailable,
    BackendRecovered,
    LeadershipAcquired,
    LeadershipLost,
    // Writes to services.
    Created,
    Updated,
    DriftCorrected,
    Adopted,
    RollbackIssued,
    Pruned,
    CreateFailed,
    UpdateFailed,
    RemoveFailed,
    Converged,
    // Services steward leaves alone, and Swarm's own update failures.
    ConflictUnowned,
    ConflictOtherStack,
    ConflictNotReplicated,
    ModeChangeRefused,
    Orphaned,
    UpdatePaused,
    RollbackPaused,
    // Rollouts.
    RolloutStarted,
    RolloutSuperseded,
    RolloutUpdating,
    RolloutVerifying,
    RolloutVerified,
    RolloutComplete,
    AnalysisInconclusive,
    RollingBack,
    RolledBack,
    ManualRollback,
    PreDeployStarted,
    PreDeploySucceeded,
    PreDeployComplete,
    PreDeployFailed,
    PreDeployStartFailed,
}

impl Reason {
    pub const ALL: [Reason; 44] = [
        Reason::DesiredStateChanged,
        Reason::Applied,
        Reason::InvalidRevision,
        Reason::InvalidDesiredState,
        Reason::SourceRecovered,
        Reason::ForcePushed,
        Reason::PathMissing,
        Reason::SourceUnavailable,
        Reason::BackendUnavailable,
        Reason::BackendRecovered,
        Reason::LeadershipAcquired,
        Reason::LeadershipLost,
        Reason::Created,
        Reason::Updated,
        Reason::DriftCorrected,
        Reason::Adopted,
        Reason::RollbackIssued,
        Reason::Pruned,
        Reason::CreateFailed,
        Reason::UpdateFailed,
        Reason::RemoveFailed,
        Reason::Converged,
        Reason::ConflictUnowned,
        Reason::ConflictOtherStack,
        Reason::ConflictNotReplicated,
        Reason::ModeChangeRefused,
        Reason::Orphaned,
        Reason::UpdatePaused,
        Reason::RollbackPaused,
        Reason::RolloutStarted,
        Reason::RolloutSuperseded,
        Reason::RolloutUpdating,
        Reason::RolloutVerifying,
        Reason::RolloutVerified,
        Reason::RolloutComplete,
        Reason::AnalysisInconclusive,
        Reason::RollingBack,
        Reason::RolledBack,
        Reason::ManualRollback,
        Reason::PreDeployStarted,
        Reason::PreDeploySucceeded,
        Reason::PreDeployComplete,
        Reason::PreDeployFailed,
        Reason::PreDeployStartFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::DesiredStateChanged => "DesiredStateChanged",
            Reason::Applied => "Applied",
            Reason::InvalidRevision => "InvalidRevision",
            Reason::InvalidDesiredState => "InvalidDesiredState",
            Reason::SourceRecovered => "SourceRecovered",
            Reason::ForcePushed => "ForcePushed",
            Reason::PathMissing => "PathMissing",
            Reason::SourceUnavailable => "SourceUnavailable",
            Reason::BackendUnavailable => "BackendUnavailable",
            Reason::BackendRecovered => "BackendRecovered",
            Reason::LeadershipAcquired => "LeadershipAcquired",
            Reason::LeadershipLost => "LeadershipLost",
            Reason::Created => "Created",
            Reason::Updated => "Updated",
            Reason::DriftCorrected => "DriftCorrected",
            Reason::Adopted => "Adopted",
            Reason::RollbackIssued => "RollbackIssued",
            Reason::Pruned => "Pruned",
            Reason::CreateFailed => "CreateFailed",
            Reason::UpdateFailed => "UpdateFailed",
            Reason::RemoveFailed => "RemoveFailed",
            Reason::Converged => "Converged",
            Reason::ConflictUnowned => "ConflictUnowned",
            Reason::ConflictOtherStack => "ConflictOtherStack",
            Reason::ConflictNotReplicated => "ConflictNotReplicated",
            Reason::ModeChangeRefused => "ModeChangeRefused",
            Reason::Orphaned => "Orphaned",
            Reason::UpdatePaused => "UpdatePaused",
            Reason::RollbackPaused => "RollbackPaused",
            Reason::RolloutStarted => "RolloutStarted",
            Reason::RolloutSuperseded => "RolloutSuperseded",
            Reason::RolloutUpdating => "RolloutUpdating",
            Reason::RolloutVerifying => "RolloutVerifying",
            Reason::RolloutVerified => "RolloutVerified",
            Reason::RolloutComplete => "RolloutComplete",
            Reason::AnalysisInconclusive => "AnalysisInconclusive",
            Reason::RollingBack => "RollingBack",
            Reason::RolledBack => "RolledBack",
            Reason::ManualRollback => "ManualRollback",
            Reason::PreDeployStarted => "PreDeployStarted",
            Reason::PreDeploySucceeded => "PreDeploySucceeded",
            Reason::PreDeployComplete => "PreDeployComplete",
            Reason::PreDeployFailed => "PreDeployFailed",
            Reason::PreDeployStartFailed => "PreDeployStartFailed",
        }
    }

    /// Warnings are what a person should look at: refused input, unreachable backends, lost
    /// leadership, failed writes, services left alone, and rollouts going backwards. Notifiers
    /// send only these unless asked for all.
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            Reason::InvalidRevision
                | Reason::InvalidDesiredState
                | Reason::ForcePushed
                | Reason::PathMissing
                | Reason::SourceUnavailable
                | Reason::BackendUnavailable
                | Reason::LeadershipLost
                | Reason::DriftCorrected
                | Reason::RollbackIssued
                | Reason::CreateFailed
                | Reason::UpdateFailed
                | Reason::RemoveFailed
                | Reason::ConflictUnowned
                | Reason::ConflictOtherStack
                | Reason::ConflictNotReplicated
                | Reason::ModeChangeRefused
                | Reason::Orphaned
                | Reason::UpdatePaused
                | Reason::RollbackPaused
                | Reason::AnalysisInconclusive
                | Reason::RollingBack
                | Reason::RolledBack
                | Reason::ManualRollback
                | Reason::PreDeployFailed
                | Reason::PreDeployStartFailed
        )
    }

    pub fn event_type(self) -> status::EventType {
        if self.is_warning() {
            status::EventType::Warning
        } else {
            status::EventType::Normal
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Reason {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// What an observer saw of one object's backend. `Unknown` means the read failed: a planner
/// must never treat it as absent (no scale-down, delete, prune, renewal or rollback on it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Observation<T> {
    Known(T),
    Unknown { reason: String },
}

impl<T> Observation<T> {
    pub fn unknown(reason: impl Into<String>) -> Self {
        Observation::Unknown { reason: reason.into() }
    }
    pub fn known(&self) -> Option<&T> {
        match self {
            Observation::Known(t) => Some(t),
            Observation::Unknown { .. } => None,
        }
    }
    pub fn is_known(&self) -> bool {
        matches!(self, Observation::Known(_))
    }
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Observation<U> {
        match self {
            Observation::Known(t) => Observation::Known(f(t)),
            Observation::Unknown { reason } => Observation::Unknown { reason },
        }
    }
    pub fn as_ref(&self) -> Observation<&T> {
        match self {
            Observation::Known(t) => Observation::Known(t),
            Observation::Unknown { reason } => Observation::Unknown { reason: reason.clone() },
        }
    }
}

/// When a reconciler wants to look at its object again (kube-rs `Action`). The scheduler keeps
/// the earliest request per object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// Only when a trigger (event, file change, commit) concerns the object.
    Never,
    After(Duration),
    /// Exactly at this wall-clock instant (a cron instant, a certificate window).
    At(OffsetDateTime),
}

impl Requeue {
    /// The earlier of two requests (`Never` loses to anything).
    pub fn min(self, other: Requeue, now: OffsetDateTime) -> Requeue {
        match (self.delay(now), other.delay(now)) {
            (None, _) => other,
            (_, None) => self,
            (Some(a), Some(b)) => {
                if a <= b {
                    self
                } else {
                    other
                }
            }
        }
    }

    /// How long from `now` until the requested look (zero when already due); `None` for never.
    pub fn delay(self, now: OffsetDateTime) -> Option<Duration> {
        match self {
            Requeue::Never => None,
            Requeue::After(d) => Some(d),
            Requeue::At(t) => Some(Duration::try_from(t - now).unwrap_or(Duration::ZERO)),
        }
    }
}

/// Why an action was not taken now. Ends up in status conditions and events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum WaitingOn {
    /// Another object must be ready first (a Database's replication lag holds a rollout).
    Dependency { object: ObjectRef, reason: String },
    /// The backend this object lives in could not be read.
    Backend { backend: String, reason: String },
    /// A time in the future (the next cron instant, a retry backoff).
    Time {
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

impl fmt::Display for WaitingOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitingOn::Dependency { object, reason } => write!(f, "waiting on {object}: {reason}"),
            WaitingOn::Backend { backend, reason } => write!(f, "{backend} could not be read: {reason}"),
            WaitingOn::Time { at } => write!(f, "waiting until {}", rfc3339(*at)),
        }
    }
}

/// The time source of everything that decides. Production reads the system clock; tests pass a
/// fixed or stepped one.
pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// RFC 3339 text of a time (UTC as given), for messages and JSON.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_refs_round_trip() {
        let o: ObjectRef = "Schedule/db-backup".parse().unwrap();
        assert_eq!(o, ObjectRef::schedule("db-backup"));
        assert_eq!(o.to_string(), "Schedule/db-backup");
        assert_eq!("service/web".parse::<ObjectRef>().unwrap(), ObjectRef::service("web"));
        assert!("Bogus/x".parse::<ObjectRef>().unwrap_err().contains("unknown kind"));
        assert!("Service/".parse::<ObjectRef>().is_err());
        assert!("web".parse::<ObjectRef>().unwrap_err().contains("KIND/NAME"));
        let json = serde_json_like(&o);
        assert_eq!(json, "Schedule/db-backup");
    }

    fn serde_json_like(o: &ObjectRef) -> String {
        String::from(o.clone())
    }

    #[test]
    fn earliest_requeue_wins() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let at = Requeue::At(now + time::Duration::seconds(5));
        let after = Requeue::After(Duration::from_secs(10));
        assert_eq!(at.min(after, now), at);
        assert_eq!(after.min(at, now), at);
        assert_eq!(Requeue::Never.min(after, now), after);
        assert_eq!(after.min(Requeue::Never, now), after);
        assert_eq!(
            Requeue::At(now - time::Duration::seconds(3)).delay(now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn unknown_is_not_absent() {
        let o: Observation<u32> = Observation::unknown("engine unreachable");
        assert!(!o.is_known());
        assert_eq!(o.known(), None);
        assert_eq!(Observation::Known(3).map(|x| x * 2), Observation::Known(6));
    }

    #[test]
    fn object_refs_compare_with_their_text() {
        assert_eq!(ObjectRef::service("web"), "Service/web");
        assert_eq!(ObjectRef::rollout(7), "Rollout/7");
        assert!(ObjectRef::stack("web") != "Service/web");
        assert!(ObjectRef::service("web") != "Service/web2");
        assert!(ObjectRef::service("web") != "web");
    }

    #[test]
    fn reasons_are_their_pascal_case_names() {
        let mut seen = std::collections::BTreeSet::new();
        for r in Reason::ALL {
            // The text is the variant's name: what users, notifiers and tests read.
            assert_eq!(r.as_str(), format!("{r:?}"));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
            assert!(seen.insert(r.as_str()), "{r} twice in Reason::ALL");
        }
        assert_eq!(Reason::RolledBack, "RolledBack");
    }

    #[test]
    fn the_event_type_follows_from_the_reason() {
        use status::EventType::{Normal, Warning};
        let warnings = [
            Reason::InvalidRevision,
            Reason::BackendUnavailable,
            Reason::LeadershipLost,
            Reason::DriftCorrected,
            Reason::RollbackIssued,
            Reason::UpdateFailed,
            Reason::Orphaned,
            Reason::RolledBack,
            Reason::ManualRollback,
            Reason::PreDeployStartFailed,
        ];
        let normal = [
            Reason::DesiredStateChanged,
            Reason::Applied,
            Reason::BackendRecovered,
            Reason::LeadershipAcquired,
            Reason::Created,
            Reason::Updated,
            Reason::Adopted,
            Reason::Pruned,
            Reason::Converged,
            Reason::RolloutStarted,
            Reason::RolloutSuperseded,
            Reason::RolloutComplete,
            Reason::PreDeployComplete,
        ];
        for r in warnings {
            assert_eq!(r.event_type(), Warning, "{r}");
        }
        for r in normal {
            assert_eq!(r.event_type(), Normal, "{r}");
        }
    }
}
