//! Event reasons of the Database kind (PascalCase, as Kubernetes'). A condition that changes is
//! reported under the condition's own reason (`Lagging`, `PrimaryUnreachable`, ...).

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    BackupSucceeded,
    BackupFailed,
    /// Retention deleted one of steward's own backups.
    BackupPruned,
    RestoreTestPassed,
    RestoreTestFailed,
    Archived,
    ArchiveFailed,
    Vacuumed,
    VacuumFailed,
    Reindexed,
    ReindexFailed,
    /// A deploy gate holds a Service's rollout (on the Service).
    WaitingOn,
    /// The gate that held a Service's rollout opened (on the Service).
    GateOpened,
    /// A run whose process ended before it finished was failed.
    RunAbandoned,
    /// A task whose instant is due does not start now, and why (once, when the hold begins).
    TaskHeld,
}

impl Reason {
    pub const ALL: [Reason; 15] = [
        Reason::BackupSucceeded,
        Reason::BackupFailed,
        Reason::BackupPruned,
        Reason::RestoreTestPassed,
        Reason::RestoreTestFailed,
        Reason::Archived,
        Reason::ArchiveFailed,
        Reason::Vacuumed,
        Reason::VacuumFailed,
        Reason::Reindexed,
        Reason::ReindexFailed,
        Reason::WaitingOn,
        Reason::GateOpened,
        Reason::RunAbandoned,
        Reason::TaskHeld,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BackupSucceeded => "BackupSucceeded",
            Reason::BackupFailed => "BackupFailed",
            Reason::BackupPruned => "BackupPruned",
            Reason::RestoreTestPassed => "RestoreTestPassed",
            Reason::RestoreTestFailed => "RestoreTestFailed",
            Reason::Archived => "Archived",
            Reason::ArchiveFailed => "ArchiveFailed",
            Reason::Vacuumed => "Vacuumed",
            Reason::VacuumFailed => "VacuumFailed",
            Reason::Reindexed => "Reindexed",
            Reason::ReindexFailed => "ReindexFailed",
            Reason::WaitingOn => "WaitingOn",
            Reason::GateOpened => "GateOpened",
            Reason::RunAbandoned => "RunAbandoned",
            Reason::TaskHeld => "TaskHeld",
        }
    }

    /// Warning events are the ones a person should look at (and are sent to notifiers).
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            Reason::BackupFailed
                | Reason::RestoreTestFailed
                | Reason::ArchiveFailed
                | Reason::VacuumFailed
                | Reason::ReindexFailed
                | Reason::WaitingOn
                | Reason::RunAbandoned
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_listed_once_with_its_own_name() {
        let names: std::collections::BTreeSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
        for r in Reason::ALL {
            assert_eq!(format!("{r:?}"), r.as_str());
        }
    }
}
