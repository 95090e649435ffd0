//! Which of steward's own backups are kept: the newest of each of the last `daily` days, `weekly`
//! ISO weeks and `monthly` months that have a backup (restic's and borg's `--keep-*` semantics),
//! and always the newest verified backup and the newest taken before a deploy (what a bad
//! migration is undone from, however many backups came after it that day). Files steward did not make are not in the input, so they
//! are never deleted; an unreadable list is the caller's `Unknown`, and nothing is deleted then.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use time::{Date, OffsetDateTime};

use crate::spec::Retention;

/// One backup steward made (a row of its store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupRecord {
    pub id: u64,
    pub file: String,
    pub taken_at: OffsetDateTime,
    /// The calendar day it was taken on, in the backup schedule's time zone.
    pub local_date: Date,
    /// The last restore test of this file passed.
    pub verified: bool,
    /// Taken by a rollout's `backupBefore`.
    pub pre_deploy: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum KeptAs {
    Daily,
    Weekly,
    Monthly,
    /// Never deleted, whatever the counts say.
    NewestVerified,
    /// The newest backup taken before a deploy: never deleted, whatever the counts say.
    NewestPreDeploy,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Kept backups by id, with every reason each is kept for.
    pub keep: BTreeMap<u64, BTreeSet<KeptAs>>,
    /// Ids to delete, newest first.
    pub delete: Vec<u64>,
}

pub fn decide(backups: &[BackupRecord], policy: &Retention) -> Decision {
    let mut sorted: Vec<&BackupRecord> = backups.iter().collect();
    sorted.sort_by(|a, b| b.taken_at.cmp(&a.taken_at).then(b.id.cmp(&a.id)));
    let mut keep: BTreeMap<u64, BTreeSet<KeptAs>> = BTreeMap::new();
    let mut bucket = |key: &dyn Fn(&BackupRecord) -> (i32, u32), count: u32, why: KeptAs| {
        let mut seen = BTreeSet::new();
        for b in &sorted {
            if seen.len() as u32 >= count {
                break;
            }
            // Newest first: the first backup of a bucket is its newest.
            if seen.insert(key(b)) {
                keep.entry(b.id).or_default().insert(why);
            }
        }
    };
    bucket(
        &|b| (b.local_date.year(), b.local_date.ordinal() as u32),
        policy.daily,
        KeptAs::Daily,
    );
    bucket(
        &|b| {
            let (y, w, _) = b.local_date.to_iso_week_date();
            (y, w as u32)
        },
        policy.weekly,
        KeptAs::Weekly,
    );
    bucket(
        &|b| (b.local_date.year(), b.local_date.month() as u32),
        policy.monthly,
        KeptAs::Monthly,
    );
    if let Some(v) = sorted.iter().find(|b| b.verified) {
        keep.entry(v.id).or_default().insert(KeptAs::NewestVerified);
    }
    if let Some(p) = sorted.iter().find(|b| b.pre_deploy) {
        keep.entry(p.id).or_default().insert(KeptAs::NewestPreDeploy);
    }
    let delete = sorted
        .iter()
        .filter(|b| !keep.contains_key(&b.id))
        .map(|b| b.id)
        .collect();
    Decision { keep, delete }
}
