//! Leader election among controllers sharing one PostgreSQL store.
//!
//! Exactly one controller acts on Swarm at a time; the others serve the read API and stand
//! by. The rule for callers:
//!
//! - run reconcile passes (and every store write they make) only while
//!   [`Leadership::is_leader`] is true; a standby only reads;
//! - immediately before each write to Swarm, call [`Leadership::confirm`] and skip the write
//!   when it returns false.
//!
//! How: holding a session-level advisory lock on a dedicated connection makes a controller
//! the holder. When that session ends for any reason (process killed, connection cut, backend
//! terminated) PostgreSQL drops the lock at once, and a standby gets it at its next attempt,
//! within [`RETRY_PERIOD`]. The new holder immediately bumps the fencing `epoch` in the
//! `steward_leader` row and records its backend pid there; [`Leadership::confirm`] re-checks
//! on that very session that the row still carries this holder's epoch and pid, so from that
//! moment a previous leader's confirm fails.
//!
//! Two controllers never both see `is_leader()` true: a leader calls itself leader only while
//! its last successful renewal is less than [`VALIDITY`] old (measured on its own monotonic
//! clock from before it sent the renewal), and a new holder starts calling itself leader only
//! once the previous holder's last renewal (`renewed_at`, on the database's clock) is
//! [`VALIDITY`] old. A leader that stepped down cleanly marks the row, so its successor does
//! not wait. Renewals come every [`RETRY_PERIOD`], so a standby leads 1–3 s after the
//! leader's session died (at most [`RETRY_PERIOD`] + [`VALIDITY`] when its own attempt comes
//! late).
//!
//! A leader that is alive but stuck (a frozen process, a half-open connection PostgreSQL has
//! not noticed) still holds the lock, but stops renewing `renewed_at`; once that is older than
//! [`LEASE_DURATION`], a standby terminates the backend that holds the lock (found in
//! `pg_locks`, not trusted from the row) and takes over. The stuck leader had stopped calling
//! itself leader long before.
//!
//! No fencing can stop a write that a paused leader had already confirmed and sends after it
//! resumes; Swarm's own optimistic concurrency (a service update carries the version it was
//! read at) is what rejects such a late write.
//!
//! The timings are controller-runtime's leader-election defaults (lease 15 s, renew deadline
//! 10 s, retry period 2 s), so operators used to Kubernetes controllers find what they expect;
//! [`VALIDITY`] is much shorter than the renew deadline because here a failed renewal has
//! already lost the lock (the session is closed), so there is nothing to hold on to for longer.
//!
//! With a SQLite store there is one controller per file by construction: it always leads, at
//! epoch 1.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postgres::{Client, Config, NoTls};

use crate::pg::Target;
use crate::{Store, StoreError};

/// The session advisory lock whose holder leads (visible in `pg_locks` as classid
/// 0x73747764, objid 1). Chosen once and never changed: ASCII "stwd" in the high half, so that
/// other software sharing the database uses the same number only by accident; the low half
/// says what is locked (2 is the schema migration).
pub const LOCK_KEY: i64 = 0x7374_7764_0000_0001;

/// How long after its last renewal a stuck holder's lock may be taken from it.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// The longest one election round trip (connect, statement, unacknowledged TCP data) may
/// take before it counts as failed.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the leader renews and a standby tries to acquire.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// How long one successful renewal lets a leader call itself leader: the next renewal is due
/// one retry period later, and may take up to a second more.
pub const VALIDITY: Duration = Duration::from_millis(RETRY_PERIOD.as_millis() as u64 + 1000);
/// After terminating a stuck holder's session, how soon to try for the lock again (the
/// backend needs a moment to exit and release it).
const AFTER_TAKEOVER_RETRY: Duration = Duration::from_millis(200);

/// How long [`Leadership::confirm`] waits for the election thread (which may be in the middle
/// of a renewal) before answering false.
const CONFIRM_TIMEOUT: Duration = RETRY_PERIOD;

/// This controller's place in the election. Cheap to query; `Sync`, so one instance can be
/// shared by every task of a controller.
pub struct Leadership {
    inner: Inner,
}

enum Inner {
    /// SQLite.
    Sole,
    Elected {
        state: Arc<State>,
        requests: Option<mpsc::Sender<Request>>,
        thread: Option<JoinHandle<()>>,
    },
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Sole => f.debug_struct("Leadership").field("sole", &true).finish(),
            Inner::Elected { state, .. } => f
                .debug_struct("Leadership")
                .field("holder", &state.holder)
                .field("leader", &self.is_leader())
                .field("epoch", &self.epoch())
                .finish(),
        }
    }
}

/// What the election thread publishes.
struct State {
    holder: String,
    leading: AtomicBool,
    epoch: AtomicU64,
    /// Milliseconds after `since` at which the last successful renewal was sent.
    renewed_ms: AtomicU64,
    since: Instant,
}

impl State {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Leading, and renewed recently enough to still say so: a hung election thread cannot
    /// keep an old `true` alive.
    fn is_leader(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
            && self.elapsed_ms().saturating_sub(self.renewed_ms.load(Ordering::SeqCst)) < VALIDITY.as_millis() as u64
    }
}

enum Request {
    Confirm(mpsc::SyncSender<bool>),
}

impl Leadership {
    /// SQLite (single process by construction): always leader, epoch 1.
    ///
    /// PostgreSQL: opens a dedicated session and makes a first attempt to lead before
    /// returning, so that [`Leadership::is_leader`] is already meaningful; then a background
    /// thread renews (leader) or retries (standby) every [`RETRY_PERIOD`]. `holder` names this
    /// controller in the `steward_leader` row, e.g. `hostname:pid`.
    ///
    /// Fails only if the first connection cannot be made; later connection losses are retried
    /// in the background (as a standby).
    pub fn start(store: &Store, holder: &str) -> Result<Leadership, StoreError> {
        let Some(pg) = store.postgres() else {
            return Ok(Leadership { inner: Inner::Sole });
        };
        let target = pg.target().clone();
        let state = Arc::new(State {
            holder: holder.to_string(),
            leading: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            renewed_ms: AtomicU64::new(0),
            since: Instant::now(),
        });
        let mut elector = Elector {
            config: session_config(&target),
            target,
            state: state.clone(),
            client: None,
            holding: false,
            claim_at: None,
            retry_soon: false,
        };
        let (requests, rx) = mpsc::channel();
        let (started_tx, started) = mpsc::sync_channel(1);
        let url = elector.target.url.clone();
        let thread = std::thread::Builder::new()
            .name("steward-leader".into())
            .spawn(move || {
                let first = elector.connect();
                let ok = first.is_ok();
                if ok {
                    elector.tick();
                }
                let _ = started_tx.send(first);
                if ok {
                    elector.serve(rx);
                }
            })
            .map_err(|source| StoreError::Spawn {
                url,
                thread: "leader election",
                source,
            })?;
        let leadership = Leadership {
            inner: Inner::Elected {
                state,
                requests: Some(requests),
                thread: Some(thread),
            },
        };
        // The first connect and check are bounded by the session's connect and statement
        // timeouts; a closed channel means the thread panicked.
        match started.recv() {
            Ok(Ok(())) => Ok(leadership),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StoreError::WorkerGone {
                url: store.path().display().to_string(),
                operation: "starting leader election",
            }),
        }
    }

    /// Whether this controller leads now. An atomic read, kept current by the election thread
    /// every [`RETRY_PERIOD`]: it turns false at the first renewal after the session is lost,
    /// and at the latest [`VALIDITY`] after the last successful renewal whatever happens.
    pub fn is_leader(&self) -> bool {
        match &self.inner {
            Inner::Sole => true,
            Inner::Elected { state, .. } => state.is_leader(),
        }
    }

    /// The fencing epoch this controller acquired leadership at (0 if it never led). Each new
    /// leader's epoch is higher than every earlier one's.
    pub fn epoch(&self) -> u64 {
        match &self.inner {
            Inner::Sole => 1,
            Inner::Elected { state, .. } => state.epoch.load(Ordering::SeqCst),
        }
    }

    /// The holder name given to [`Leadership::start`] (empty for SQLite).
    pub fn holder(&self) -> &str {
        match &self.inner {
            Inner::Sole => "",
            Inner::Elected { state, .. } => &state.holder,
        }
    }

    /// The fencing check, for immediately before each write to Swarm: asks the database, on
    /// the election session itself, whether this holder's epoch is still the current one. A
    /// stale leader (session lost, or another leader since) gets false, as does any doubt (no
    /// answer within [`RETRY_PERIOD`]). Blocks for one round trip; it only reads, so it does
    /// not extend the leadership (only the renewals every [`RETRY_PERIOD`] do).
    pub fn confirm(&self) -> bool {
        let Inner::Elected { state, requests, .. } = &self.inner else {
            return true;
        };
        if !state.is_leader() {
            return false;
        }
        let (reply, answer) = mpsc::sync_channel(1);
        let sent = requests
            .as_ref()
            .is_some_and(|r| r.send(Request::Confirm(reply)).is_ok());
        sent && answer.recv_timeout(CONFIRM_TIMEOUT).unwrap_or(false) && state.is_leader()
    }
}

impl Drop for Leadership {
    /// Steps down: the session closes, so a standby takes over at its next attempt instead of
    /// waiting for a lease to run out.
    fn drop(&mut self) {
        if let Inner::Elected {
            state,
            requests,
            thread,
        } = &mut self.inner
        {
            state.leading.store(false, Ordering::SeqCst);
            requests.take();
            if let Some(thread) = thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// The store's connection settings, tightened for the election session.
fn session_config(target: &Target) -> Config {
    let mut config = target.config.clone();
    config
        .connect_timeout(RETRY_PERIOD)
        .tcp_user_timeout(RENEW_DEADLINE)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(2))
        .keepalives_interval(Duration::from_secs(1))
        .keepalives_retries(2)
        .application_name("steward-leader");
    // After the store's own options, so these win.
    let ours = format!(
        "-c statement_timeout={} -c lock_timeout={}",
        RENEW_DEADLINE.as_millis(),
        RETRY_PERIOD.as_millis()
    );
    let options = match config.get_options() {
        Some(existing) => format!("{existing} {ours}"),
        None => ours,
    };
    config.options(&options);
    config
}

/// The election thread.
struct Elector {
    target: Arc<Target>,
    config: Config,
    state: Arc<State>,
    client: Option<Client>,
    /// This session holds the advisory lock (and has bumped the epoch).
    holding: bool,
    /// Holding, but the previous holder may still believe it leads until then.
    claim_at: Option<Instant>,
    /// A stuck holder's session was just terminated: try again for the lock soon.
    retry_soon: bool,
}

impl Elector {
    fn serve(&mut self, requests: mpsc::Receiver<Request>) {
        let mut next_tick = Instant::now() + RETRY_PERIOD;
        loop {
            let due = self.claim_at.map_or(next_tick, |at| at.min(next_tick));
            let wait = due.saturating_duration_since(Instant::now());
            match requests.recv_timeout(wait) {
                Ok(Request::Confirm(reply)) => {
                    let ok = self.confirm();
                    let _ = reply.send(ok);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.step_down();
                    return;
                }
            }
            // Checked after every request too: a steady stream of confirms must not starve
            // renewal.
            let now = Instant::now();
            let renewal_due = now >= next_tick;
            if renewal_due || self.claim_at.is_some_and(|at| now >= at) {
                self.tick();
                let now = Instant::now();
                // A fixed cadence, not "a period after the last one ended": the next renewal
                // is due one period after this one however long it took, which VALIDITY
                // counts on. A tick made early to claim leadership leaves the cadence alone.
                if renewal_due {
                    next_tick += RETRY_PERIOD;
                    if next_tick <= now {
                        next_tick = now + RETRY_PERIOD;
                    }
                }
                if std::mem::take(&mut self.retry_soon) {
                    next_tick = next_tick.min(now + AFTER_TAKEOVER_RETRY);
                }
            }
        }
    }

    fn connect(&mut self) -> Result<(), StoreError> {
        match self.config.connect(NoTls) {
            Ok(client) => {
                self.client = Some(client);
                Ok(())
            }
            Err(source) => Err(StoreError::PostgresConnect {
                url: self.target.url.clone(),
                attempts: 1,
                source,
            }),
        }
    }

    /// One renewal (holder) or acquisition attempt (standby).
    fn tick(&mut self) {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            // A new session cannot hold the old session's lock.
            self.lose();
            self.client = None;
            if self.connect().is_err() {
                return;
            }
        }
        let result = if self.holding { self.renew() } else { self.try_acquire() };
        if result.is_err() {
            self.lose();
            // Closing the session releases the lock if PostgreSQL still thinks we hold it,
            // so a standby is not kept waiting for the lease. A statement error on a live
            // session gets the same treatment: what the session holds is then unknown.
            self.client = None;
        }
    }

    /// Bumps `renewed_at` if the row still names this session at our epoch, and starts
    /// leading once the handover wait is over. Zero rows means another holder was elected
    /// (we were fenced off): let go of the lock too.
    fn renew(&mut self) -> Result<(), postgres::Error> {
        let sent_at = self.state.elapsed_ms();
        let epoch = self.state.epoch.load(Ordering::SeqCst) as i64;
        let client = self.client.as_mut().expect("connected");
        let rows = client.execute(
            "UPDATE steward_leader SET renewed_at = now()
             WHERE id = 1 AND epoch = $1 AND holder_pid = pg_backend_pid()",
            &[&epoch],
        )?;
        if rows != 1 {
            client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])?;
            self.lose();
            return Ok(());
        }
        self.state.renewed_ms.store(sent_at, Ordering::SeqCst);
        if self.claim_at.is_some_and(|at| Instant::now() >= at) {
            self.claim_at = None;
            self.state.leading.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    fn try_acquire(&mut self) -> Result<(), postgres::Error> {
        let sent_at = self.state.elapsed_ms();
        let client = self.client.as_mut().expect("connected");
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])?
            .try_get(0)?;
        if !got {
            self.retry_soon = take_over_expired(client)?;
            return Ok(());
        }
        self.holding = true;
        // Seconds since the previous holder's last renewal, on the database's clock; none
        // for the first leader ever.
        let previous_age: Option<f64> = client
            .query_opt(
                "SELECT EXTRACT(EPOCH FROM now() - renewed_at)::float8
                 FROM steward_leader WHERE id = 1",
                &[],
            )?
            .map(|row| row.try_get(0))
            .transpose()?;
        // Holding the lock, this session alone may write the row: bump the epoch so that
        // every earlier leader's confirm fails from now on.
        let epoch: i64 = client
            .query_one(
                "INSERT INTO steward_leader
                    (id, epoch, holder, holder_pid, acquired_at, renewed_at)
                 VALUES (1, 1, $1, pg_backend_pid(), now(), now())
                 ON CONFLICT (id) DO UPDATE SET
                    epoch = steward_leader.epoch + 1,
                    holder = EXCLUDED.holder,
                    holder_pid = EXCLUDED.holder_pid,
                    acquired_at = EXCLUDED.acquired_at,
                    renewed_at = EXCLUDED.renewed_at
                 RETURNING epoch",
                &[&self.state.holder],
            )?
            .try_get(0)?;
        self.state.epoch.store(epoch as u64, Ordering::SeqCst);
        self.state.renewed_ms.store(sent_at, Ordering::SeqCst);
        let wait = previous_age
            .map(|age| VALIDITY.as_secs_f64() - age)
            .filter(|wait| *wait > 0.0)
            .map(Duration::from_secs_f64);
        match wait {
            Some(wait) => self.claim_at = Some(Instant::now() + wait),
            None => self.state.leading.store(true, Ordering::SeqCst),
        }
        Ok(())
    }

    /// The fencing check. Read-only: a successor's handover wait is measured from the last
    /// renewal, and must not be stretched by every write.
    fn confirm(&mut self) -> bool {
        if !self.state.leading.load(Ordering::SeqCst) {
            return false;
        }
        let Some(client) = self.client.as_mut().filter(|c| !c.is_closed()) else {
            return false;
        };
        let epoch = self.state.epoch.load(Ordering::SeqCst) as i64;
        match client.query_opt(
            "SELECT 1 FROM steward_leader WHERE id = 1 AND epoch = $1 AND holder_pid = pg_backend_pid()",
            &[&epoch],
        ) {
            Ok(row) => row.is_some(),
            Err(_) => {
                self.lose();
                self.client = None;
                false
            }
        }
    }

    fn lose(&mut self) {
        self.state.leading.store(false, Ordering::SeqCst);
        self.holding = false;
        self.claim_at = None;
    }

    /// Marks the row as not renewed since 1970, so the successor need not wait out
    /// [`VALIDITY`]: this controller has stopped acting before it lets go of the lock.
    fn step_down(&mut self) {
        let was_holding = self.holding;
        self.lose();
        if let (true, Some(client)) = (was_holding, self.client.as_mut()) {
            let epoch = self.state.epoch.load(Ordering::SeqCst) as i64;
            let _ = client.execute(
                "UPDATE steward_leader SET renewed_at = to_timestamp(0)
                 WHERE id = 1 AND epoch = $1 AND holder_pid = pg_backend_pid()",
                &[&epoch],
            );
            let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]);
        }
        self.client = None;
    }
}

/// Terminates the backend holding the leader lock if the leader row has not been renewed for
/// [`LEASE_DURATION`]. The backend must both hold the lock (`pg_locks`) and be the one the
/// row names: a pid that PostgreSQL has since given to an unrelated session is never touched,
/// nor is a new holder that has the lock but has not written the row yet. Acquisition itself is
/// left to the next attempt. Needs the right to signal that backend (same role, or
/// `pg_signal_backend`); without it the stuck leader is only replaced once PostgreSQL notices
/// that its connection is dead.
/// Returns whether a backend was terminated.
fn take_over_expired(client: &mut Client) -> Result<bool, postgres::Error> {
    let class_id = LOCK_KEY >> 32;
    let obj_id = LOCK_KEY & 0xffff_ffff;
    let lease_secs = LEASE_DURATION.as_secs_f64();
    let terminated = client.query(
        "SELECT pg_terminate_backend(l.pid)
         FROM pg_locks l, steward_leader s
         WHERE l.locktype = 'advisory'
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND l.classid::bigint = $1 AND l.objid::bigint = $2 AND l.objsubid = 1
           AND l.granted
           AND l.pid <> pg_backend_pid()
           AND s.id = 1
           AND s.holder_pid = l.pid
           AND s.renewed_at < now() - make_interval(secs => $3)",
        &[&class_id, &obj_id, &lease_secs],
    )?;
    Ok(terminated.iter().any(|row| row.get::<_, bool>(0)))
}
