//! The work queue: one entry per object, the earliest requested time wins (kube-rs'
//! `scheduler`). Triggers and reconcilers ask for an object to be looked at by a time; the loop
//! sleeps until the earliest entry and reconciles what is due.

use std::collections::HashMap;

use steward_core::{ObjectRef, Requeue};
use time::OffsetDateTime;
use tokio::time::Instant;

#[derive(Debug, Default)]
pub struct Scheduler {
    due: HashMap<ObjectRef, Instant>,
}

impl Scheduler {
    /// Asks for `object` to be reconciled at `at`; an earlier request already queued stands.
    pub fn schedule(&mut self, object: ObjectRef, at: Instant) {
        self.due.entry(object).and_modify(|t| *t = (*t).min(at)).or_insert(at);
    }

    /// Queues a reconciler's requeue request (`Never` queues nothing). `now_wall` is the wall
    /// time matching `now`: a `Requeue::At` is a wall-clock instant (a cron instant).
    pub fn requeue(&mut self, object: ObjectRef, requeue: Requeue, now: Instant, now_wall: OffsetDateTime) {
        if let Some(d) = requeue.delay(now_wall) {
            self.schedule(object, now + d);
        }
    }

    /// When the earliest entry is due.
    pub fn next(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }

    /// Takes every entry due at `now`, in due order (then by object, for determinism).
    pub fn pop_due(&mut self, now: Instant) -> Vec<ObjectRef> {
        let mut ready: Vec<(Instant, ObjectRef)> = self
            .due
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(o, t)| (*t, o.clone()))
            .collect();
        ready.sort();
        for (_, o) in &ready {
            self.due.remove(o);
        }
        ready.into_iter().map(|(_, o)| o).collect()
    }

    /// Forgets an object (it left the desired state).
    pub fn forget(&mut self, object: &ObjectRef) {
        self.due.remove(object);
    }

    pub fn is_queued(&self, object: &ObjectRef) -> bool {
        self.due.contains_key(object)
    }

    pub fn len(&self) -> usize {
        self.due.len()
    }

    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn earliest_request_wins_and_entries_are_deduplicated() {
        let mut s = Scheduler::default();
        let now = Instant::now();
        let a = ObjectRef::schedule("a");
        s.schedule(a.clone(), now + Duration::from_secs(10));
        s.schedule(a.clone(), now + Duration::from_secs(3));
        s.schedule(a.clone(), now + Duration::from_secs(7));
        assert_eq!(s.len(), 1);
        assert_eq!(s.next(), Some(now + Duration::from_secs(3)));
        assert!(s.pop_due(now + Duration::from_secs(2)).is_empty());
        assert_eq!(s.pop_due(now + Duration::from_secs(3)), vec![a.clone()]);
        assert!(s.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn due_objects_come_out_in_due_order() {
        let mut s = Scheduler::default();
        let now = Instant::now();
        s.schedule(ObjectRef::schedule("late"), now + Duration::from_millis(20));
        s.schedule(ObjectRef::stack("demo"), now + Duration::from_millis(10));
        s.schedule(ObjectRef::schedule("later"), now + Duration::from_secs(60));
        tokio::time::advance(Duration::from_millis(25)).await;
        assert_eq!(
            s.pop_due(Instant::now()),
            vec![ObjectRef::stack("demo"), ObjectRef::schedule("late")]
        );
        assert_eq!(s.next(), Some(now + Duration::from_secs(60)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_requeue_at_a_wall_instant_wakes_exactly_then() {
        let mut s = Scheduler::default();
        let now = Instant::now();
        let wall = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let o = ObjectRef::schedule("db-backup");
        s.requeue(
            o.clone(),
            Requeue::At(wall + time::Duration::milliseconds(1500)),
            now,
            wall,
        );
        assert_eq!(s.next(), Some(now + Duration::from_millis(1500)));
        s.requeue(o.clone(), Requeue::Never, now, wall);
        assert_eq!(s.len(), 1, "Never queues nothing and removes nothing");
        s.forget(&o);
        assert!(s.next().is_none());
    }
}
