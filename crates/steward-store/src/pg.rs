//! The PostgreSQL backend.
//!
//! The `postgres` crate's blocking client drives a tokio runtime of its own, which panics when
//! it is used from inside another runtime, and steward's callers are async. So each store
//! handle owns one std thread that owns the connection; every call sends that thread a job and
//! waits for its answer. Calls through one handle are serialised, like SQLite's mutex.
//!
//! Semantics match the SQLite backend statement for statement. Where SQLite's single-writer
//! lock made read-then-write sequences atomic, each such transaction here first takes a
//! self-conflicting table lock (`SHARE ROW EXCLUSIVE`): writers queue, readers are never
//! blocked. For events this is also what keeps the change counter honest for followers: a
//! `seq` is handed out and committed under the same lock, so no transaction can commit a lower
//! `seq` after a follower has seen a higher one.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use postgres::{Client, Config, GenericClient, NoTls, Row, Statement};
use steward_plan::rollout::Revision;
use steward_plan::status::{NewEvent, ResourceStatus};

use crate::events::{event_columns, events_query};
use crate::sql::{Access, Cell, Cells, Db, DbError, Dialect, Param, Retry};
use crate::{encode_revision, merge_status, pg_schema, EventFilter, RawEvent, StoreError, REVISIONS_KEPT};

/// Connection attempts per call before it fails; the pauses between them double from
/// [`CONNECT_BACKOFF`], so a call gives up after roughly 4 × [`CONNECT_TIMEOUT`] plus 0.7 s.
const CONNECT_ATTEMPTS: u32 = 4;
const CONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// Used when the URL sets no `connect_timeout`: without one a dead host hangs a call for the
/// kernel's SYN retry time (minutes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Bounds a call on a connection whose peer vanished (unacknowledged data); keepalives find a
/// silent one. Without both, a query on a half-open socket waits forever.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_RETRIES: u32 = 3;
/// Server-side bounds: a statement (including a wait for a table lock) never runs longer.
/// Everything here is an indexed probe; reaching these means something else is wrong.
const SESSION_OPTIONS: &str = "-c statement_timeout=30000 -c lock_timeout=10000 \
    -c idle_in_transaction_session_timeout=60000";

const FOLD_UPDATE_SQL: &str = concat!(
    "UPDATE steward_events
     SET count = count + 1,
         first_seen = LEAST(first_seen, $2),
         last_seen = GREATEST(last_seen, $2),
         seq = $3
     WHERE id = $1
     RETURNING ",
    event_columns!()
);

const INSERT_EVENT_SQL: &str = concat!(
    "INSERT INTO steward_events
        (seq, type, reason, message, object, count, first_seen, last_seen)
     VALUES ($1, $2, $3, $4, $5, 1, $6, $6)
     RETURNING ",
    event_columns!()
);

const CHANGED_SINCE_SQL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM steward_events WHERE seq > $1 ORDER BY seq ASC"
);

/// Whether `url` names a PostgreSQL database rather than a SQLite file.
pub(crate) fn is_postgres_url(url: &str) -> bool {
    let lower = url.get(..13).unwrap_or(url).to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// `url` with the password (in the user info or a `password=` parameter) replaced by `***`,
/// for messages and [`crate::Store::path`].
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let (scheme, rest) = url.split_at(scheme_end);
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.find(':') {
                Some(colon) => format!("{}:***{host}", &userinfo[..colon]),
                None => authority.to_string(),
            }
        }
        None => authority.to_string(),
    };
    let tail = match tail.find('?') {
        Some(q) => {
            let (path, query) = tail.split_at(q + 1);
            let params: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{path}{}", params.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}{authority}{tail}")
}

/// Where to connect, parsed once. Shared with leader election, which opens its own session.
pub(crate) struct Target {
    pub(crate) config: Config,
    pub(crate) url: String,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Target, StoreError> {
        let redacted = redact_url(url);
        let mut config: Config = url.parse().map_err(|source| StoreError::InvalidUrl {
            url: redacted.clone(),
            source,
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        if config.get_keepalives_interval().is_none() {
            config
                .keepalives(true)
                .keepalives_idle(KEEPALIVE_IDLE)
                .keepalives_interval(KEEPALIVE_INTERVAL)
                .keepalives_retries(KEEPALIVE_RETRIES);
        }
        // Ours first, so that options given in the URL override them.
        let options = match config.get_options() {
            Some(user) => format!("{SESSION_OPTIONS} {user}"),
            None => SESSION_OPTIONS.to_string(),
        };
        config.options(&options);
        if config.get_application_name().is_none() {
            config.application_name("steward");
        }
        Ok(Target { config, url: redacted })
    }
}

/// Whether `e` means the session is gone (so the next call must reconnect) rather than that
/// one statement failed.
pub(crate) fn connection_lost(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            code.code().starts_with("08")
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT
        }
        None => std::error::Error::source(e).is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some()),
    }
}

/// Why a job failed: the database said no (before the commit, or at it), or the store's own
/// checks did.
pub(crate) enum Failure {
    Pg(postgres::Error),
    /// Only a lost connection at COMMIT leaves it unknown whether the transaction took effect.
    Commit(postgres::Error),
    Store(StoreError),
}

fn commit(tx: postgres::Transaction<'_>) -> Result<(), Failure> {
    tx.commit().map_err(Failure::Commit)
}

impl From<postgres::Error> for Failure {
    fn from(e: postgres::Error) -> Self {
        Failure::Pg(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

type Job = Box<dyn FnOnce(&mut Session) + Send>;

/// Prepared statements of the current session, by SQL text. Preparing costs a round trip;
/// every statement here runs again and again.
#[derive(Default)]
struct Statements(HashMap<String, Statement>);

impl Statements {
    fn get(&mut self, client: &mut impl GenericClient, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(st) = self.0.get(sql) {
            return Ok(st.clone());
        }
        let st = client.prepare(sql)?;
        self.0.insert(sql.to_string(), st.clone());
        Ok(st)
    }
}

/// The connection thread's state.
struct Session {
    target: Arc<Target>,
    client: Option<Client>,
    statements: Statements,
}

impl Session {
    fn ensure_connected(&mut self) -> Result<(), StoreError> {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(());
        }
        self.disconnect();
        let mut backoff = CONNECT_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.target.config.connect(NoTls) {
                Ok(client) => {
                    self.client = Some(client);
                    return Ok(());
                }
                Err(source) if attempt >= CONNECT_ATTEMPTS => {
                    return Err(StoreError::PostgresConnect {
                        url: self.target.url.clone(),
                        attempts: attempt,
                        source,
                    })
                }
                Err(_) => {
                    std::thread::sleep(backoff);
                    backoff *= 2;
                    attempt += 1;
                }
            }
        }
    }

    fn disconnect(&mut self) {
        self.client = None;
        self.statements.0.clear();
    }

    fn run<T>(
        &mut self,
        operation: &'static str,
        retry: Retry,
        f: &mut dyn FnMut(&mut Client, &mut Statements) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        let mut retried = false;
        loop {
            self.ensure_connected()?;
            let client = self.client.as_mut().expect("connected above");
            let (source, at_commit) = match f(client, &mut self.statements) {
                Ok(v) => return Ok(v),
                Err(Failure::Store(e)) => return Err(e),
                Err(Failure::Pg(e)) => (e, false),
                Err(Failure::Commit(e)) => (e, true),
            };
            if connection_lost(&source) || client.is_closed() {
                self.disconnect();
                let may_repeat = !at_commit || retry == Retry::Idempotent;
                if may_repeat && !retried {
                    retried = true;
                    continue;
                }
            } else {
                // A statement may have been invalidated (a schema change by a newer steward);
                // preparing again is cheap and rules that out.
                self.statements.0.clear();
            }
            return Err(StoreError::Postgres {
                url: self.target.url.clone(),
                operation,
                source,
            });
        }
    }
}

/// A store handle's side of its connection thread.
pub(crate) struct PgStore {
    target: Arc<Target>,
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Closing the channel ends the thread after its current job; joining makes the
        // connection closed by the time the handle is gone (a test can then drop the database).
        self.jobs.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl PgStore {
    pub(crate) fn open(url: &str) -> Result<PgStore, StoreError> {
        let target = Arc::new(Target::parse(url)?);
        let (jobs, rx) = mpsc::channel::<Job>();
        let mut session = Session {
            target: target.clone(),
            client: None,
            statements: Statements::default(),
        };
        let worker = std::thread::Builder::new()
            .name("steward-store-pg".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    // A panicking job has already lost its caller (its reply channel is
                    // dropped, which the caller reports); the session may be mid-transaction,
                    // so start the next job on a fresh one.
                    if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut session))).is_err() {
                        session.disconnect();
                    }
                }
            })
            .map_err(|source| StoreError::Spawn {
                url: target.url.clone(),
                thread: "PostgreSQL connection",
                source,
            })?;
        let store = PgStore {
            target,
            jobs: Some(jobs),
            worker: Some(worker),
        };
        let path = store.path();
        store.call("migrating the schema", Retry::Idempotent, move |client, _| {
            pg_schema::migrate(client, &path)
        })?;
        Ok(store)
    }

    pub(crate) fn redacted_url(&self) -> &str {
        &self.target.url
    }

    pub(crate) fn target(&self) -> &Arc<Target> {
        &self.target
    }

    /// Runs `f` on the connection thread and waits for its answer. No timeout of its own: the
    /// server's statement and lock timeouts and the socket's keepalive and user timeout bound
    /// every call, and giving up earlier would leave a write running that the caller was told
    /// had failed.
    fn call<T, F>(&self, operation: &'static str, retry: Retry, mut f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut Client, &mut Statements) -> Result<T, Failure> + Send + 'static,
    {
        let gone = || StoreError::WorkerGone {
            url: self.target.url.clone(),
            operation,
        };
        let (reply, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |session: &mut Session| {
            let _ = reply.send(session.run(operation, retry, &mut f));
        });
        self.jobs.as_ref().ok_or_else(gone)?.send(job).map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }

    fn path(&self) -> std::path::PathBuf {
        store_path(&self.target.url)
    }

    /// See [`crate::Store::transact`]. A write is one transaction that first takes the locked
    /// table's self-conflicting lock, so writers of that table queue while readers go on.
    pub(crate) fn transact<T, F>(&self, op: &'static str, access: Access, mut body: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Db) -> Result<T, DbError> + Send + 'static,
    {
        let path = self.path();
        let failure = move |e: DbError| match e {
            DbError::Postgres(e) => Failure::Pg(e),
            other => Failure::Store(other.into_store(&path, op)),
        };
        let retry = match access {
            Access::Read => Retry::Idempotent,
            Access::Write { retry, .. } => retry,
        };
        self.call(op, retry, move |client, statements| match access {
            Access::Read => body(&mut PgDb { client, statements }).map_err(&failure),
            Access::Write { lock, .. } => {
                let mut tx = client.transaction()?;
                tx.batch_execute(&format!(
                    "LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE",
                    lock.name(Dialect::Postgres)
                ))?;
                let value = body(&mut PgDb {
                    client: &mut tx,
                    statements,
                })
                .map_err(&failure)?;
                commit(tx)?;
                Ok(value)
            }
        })
    }

    pub(crate) fn record_event(
        &self,
        ev: &NewEvent,
        now_ns: i64,
        window_start: i64,
        op: &'static str,
    ) -> Result<RawEvent, StoreError> {
        let ev = ev.clone();
        self.call(op, Retry::AtMostOnce, move |client, st| {
            let mut tx = client.transaction()?;
            tx.batch_execute("LOCK TABLE steward_events IN SHARE ROW EXCLUSIVE MODE")?;
            let next_seq = st.get(&mut tx, "SELECT COALESCE(MAX(seq), 0) + 1 FROM steward_events")?;
            let seq: i64 = tx.query_one(&next_seq, &[])?.try_get(0)?;
            // md5(message) narrows the index probe (a long message cannot be a btree key);
            // the plain comparison makes the match exact.
            let fold = st.get(
                &mut tx,
                "SELECT id FROM steward_events
                 WHERE object = $1 AND type = $2 AND reason = $3
                   AND md5(message) = md5($4) AND message = $4 AND last_seen >= $5
                 ORDER BY last_seen DESC
                 LIMIT 1",
            )?;
            let existing = tx.query_opt(
                &fold,
                &[&ev.object, &ev.type_.as_str(), &ev.reason, &ev.message, &window_start],
            )?;
            let row = match existing {
                Some(row) => {
                    let id: i64 = row.try_get(0)?;
                    let update = st.get(&mut tx, FOLD_UPDATE_SQL)?;
                    tx.query_one(&update, &[&id, &now_ns, &seq])?
                }
                None => {
                    let insert = st.get(&mut tx, INSERT_EVENT_SQL)?;
                    tx.query_one(
                        &insert,
                        &[&seq, &ev.type_.as_str(), &ev.reason, &ev.message, &ev.object, &now_ns],
                    )?
                }
            };
            let raw = raw_event(&row)?;
            commit(tx)?;
            Ok(raw)
        })
    }

    pub(crate) fn events(&self, filter: &EventFilter, op: &'static str) -> Result<Vec<RawEvent>, StoreError> {
        let (sql, params) = events_query(Dialect::Postgres, filter, op)?;
        self.call(op, Retry::Idempotent, move |client, st| {
            let stmt = st.get(client, &sql)?;
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(Param::as_pg).collect();
            client
                .query(&stmt, &refs)?
                .iter()
                .map(|r| raw_event(r).map_err(Failure::Pg))
                .collect()
        })
    }

    pub(crate) fn events_changed_since(&self, seq: i64, op: &'static str) -> Result<Vec<RawEvent>, StoreError> {
        self.call(op, Retry::Idempotent, move |client, st| {
            let stmt = st.get(client, CHANGED_SINCE_SQL)?;
            client
                .query(&stmt, &[&seq])?
                .iter()
                .map(|r| raw_event(r).map_err(Failure::Pg))
                .collect()
        })
    }

    pub(crate) fn latest_event_seq(&self, op: &'static str) -> Result<i64, StoreError> {
        self.call(op, Retry::Idempotent, |client, st| {
            let stmt = st.get(client, "SELECT COALESCE(MAX(seq), 0) FROM steward_events")?;
            Ok(client.query_one(&stmt, &[])?.try_get(0)?)
        })
    }

    pub(crate) fn put_status(&self, status: &ResourceStatus, op: &'static str) -> Result<(), StoreError> {
        let status = status.clone();
        let path = self.path();
        self.call(op, Retry::Idempotent, move |client, st| {
            let mut tx = client.transaction()?;
            // Serialises writers of the same row, absent or not, so that the merge below
            // always sees the previous write.
            tx.batch_execute("LOCK TABLE steward_statuses IN SHARE ROW EXCLUSIVE MODE")?;
            let select = st.get(
                &mut tx,
                "SELECT status FROM steward_statuses WHERE kind = $1 AND name = $2",
            )?;
            let previous: Option<String> = tx
                .query_opt(&select, &[&status.kind, &status.name])?
                .map(|r| r.try_get(0))
                .transpose()?;
            let json = merge_status(&path, previous.as_deref(), &status, op)?;
            let upsert = st.get(
                &mut tx,
                "INSERT INTO steward_statuses (kind, name, status) VALUES ($1, $2, $3)
                 ON CONFLICT (kind, name) DO UPDATE SET status = EXCLUDED.status",
            )?;
            tx.execute(&upsert, &[&status.kind, &status.name, &json])?;
            commit(tx)?;
            Ok(())
        })
    }

    pub(crate) fn statuses(&self, op: &'static str) -> Result<Vec<String>, StoreError> {
        self.call(op, Retry::Idempotent, |client, st| {
            let stmt = st.get(client, "SELECT status FROM steward_statuses ORDER BY kind, name")?;
            client
                .query(&stmt, &[])?
                .iter()
                .map(|r| r.try_get(0).map_err(Failure::Pg))
                .collect()
        })
    }

    pub(crate) fn status(&self, kind: &str, name: &str, op: &'static str) -> Result<Option<String>, StoreError> {
        let (kind, name) = (kind.to_string(), name.to_string());
        self.call(op, Retry::Idempotent, move |client, st| {
            let stmt = st.get(
                client,
                "SELECT status FROM steward_statuses WHERE kind = $1 AND name = $2",
            )?;
            Ok(client
                .query_opt(&stmt, &[&kind, &name])?
                .map(|r| r.try_get(0))
                .transpose()?)
        })
    }

    pub(crate) fn remove_status(&self, kind: &str, name: &str) -> Result<(), StoreError> {
        let (kind, name) = (kind.to_string(), name.to_string());
        self.call("removing a status", Retry::Idempotent, move |client, st| {
            let stmt = st.get(client, "DELETE FROM steward_statuses WHERE kind = $1 AND name = $2")?;
            client.execute(&stmt, &[&kind, &name])?;
            Ok(())
        })
    }

    pub(crate) fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        self.call("reading metadata", Retry::Idempotent, move |client, st| {
            let stmt = st.get(client, "SELECT value FROM steward_meta WHERE key = $1")?;
            Ok(client.query_opt(&stmt, &[&key])?.map(|r| r.try_get(0)).transpose()?)
        })
    }

    pub(crate) fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let (key, value) = (key.to_string(), value.to_string());
        self.call("writing metadata", Retry::Idempotent, move |client, st| {
            let stmt = st.get(
                client,
                "INSERT INTO steward_meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            )?;
            client.execute(&stmt, &[&key, &value])?;
            Ok(())
        })
    }

    pub(crate) fn add_revision(&self, rev: &Revision) -> Result<u64, StoreError> {
        let rev = rev.clone();
        let path = self.path();
        self.call("writing a revision", Retry::AtMostOnce, move |client, st| {
            let mut tx = client.transaction()?;
            tx.batch_execute("LOCK TABLE steward_revisions IN SHARE ROW EXCLUSIVE MODE")?;
            let next = st.get(
                &mut tx,
                "SELECT COALESCE(MAX(number), 0) + 1 FROM steward_revisions WHERE service = $1",
            )?;
            let number: i64 = tx.query_one(&next, &[&rev.service])?.try_get(0)?;
            let json = encode_revision(&path, &rev, number as u64)?;
            let insert = st.get(
                &mut tx,
                "INSERT INTO steward_revisions
                    (service, number, spec_hash, outcome, created, revision)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )?;
            tx.execute(
                &insert,
                &[
                    &rev.service,
                    &number,
                    &rev.spec_hash,
                    &format!("{:?}", rev.outcome),
                    &rev.created_ms,
                    &json,
                ],
            )?;
            let trim = st.get(
                &mut tx,
                "DELETE FROM steward_revisions WHERE service = $1 AND number <= $2",
            )?;
            tx.execute(&trim, &[&rev.service, &(number - REVISIONS_KEPT as i64)])?;
            commit(tx)?;
            Ok(number as u64)
        })
    }

    pub(crate) fn update_revision(
        &self,
        service: &str,
        number: u64,
        outcome: &str,
        json: &str,
    ) -> Result<(), StoreError> {
        let (service, outcome, json) = (service.to_string(), outcome.to_string(), json.to_string());
        let number = number as i64;
        self.call("updating a revision outcome", Retry::Idempotent, move |client, st| {
            let stmt = st.get(
                client,
                "UPDATE steward_revisions SET outcome = $1, revision = $2
                 WHERE service = $3 AND number = $4",
            )?;
            client.execute(&stmt, &[&outcome, &json, &service, &number])?;
            Ok(())
        })
    }

    pub(crate) fn revisions(&self, service: &str) -> Result<Vec<String>, StoreError> {
        let service = service.to_string();
        self.call("reading revisions", Retry::Idempotent, move |client, st| {
            let stmt = st.get(
                client,
                "SELECT revision FROM steward_revisions WHERE service = $1 ORDER BY number DESC",
            )?;
            client
                .query(&stmt, &[&service])?
                .iter()
                .map(|r| r.try_get(0).map_err(Failure::Pg))
                .collect()
        })
    }

    pub(crate) fn revision_services(&self) -> Result<Vec<String>, StoreError> {
        self.call("listing revisions", Retry::Idempotent, |client, st| {
            let stmt = st.get(client, "SELECT DISTINCT service FROM steward_revisions")?;
            client
                .query(&stmt, &[])?
                .iter()
                .map(|r| r.try_get(0).map_err(Failure::Pg))
                .collect()
        })
    }
}

/// The stand-in for a file path in the errors shared with SQLite.
fn store_path(redacted_url: &str) -> std::path::PathBuf {
    Path::new(redacted_url).to_path_buf()
}

/// Column order: [`crate::events::EVENT_COLUMNS`].
fn raw_event(row: &Row) -> Result<RawEvent, postgres::Error> {
    Ok(RawEvent {
        id: row.try_get(0)?,
        type_: row.try_get(1)?,
        reason: row.try_get(2)?,
        message: row.try_get(3)?,
        object: row.try_get(4)?,
        count: row.try_get(5)?,
        first_seen: row.try_get(6)?,
        last_seen: row.try_get(7)?,
        seq: row.try_get(8)?,
    })
}

/// [`Db`] on a client or on a transaction of the connection thread's session.
struct PgDb<'a, C: GenericClient> {
    client: &'a mut C,
    statements: &'a mut Statements,
}

impl<C: GenericClient> Db for PgDb<'_, C> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, params: &[Param]) -> Result<u64, DbError> {
        let stmt = self.statements.get(self.client, sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(Param::as_pg).collect();
        Ok(self.client.execute(&stmt, &refs)?)
    }

    fn query(&mut self, sql: &str, params: &[Param]) -> Result<Vec<Cells>, DbError> {
        let stmt = self.statements.get(self.client, sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(Param::as_pg).collect();
        let rows = self.client.query(&stmt, &refs)?;
        Ok(rows.iter().map(cells).collect::<Result<Vec<_>, _>>()?)
    }
}

/// A row as backend-neutral cells, by each column's declared type.
fn cells(row: &Row) -> Result<Cells, postgres::Error> {
    (0..row.len())
        .map(|i| {
            let int = |v: Option<i64>| v.map_or(Cell::Null, Cell::Int);
            Ok(match *row.columns()[i].type_() {
                Type::INT8 => int(row.try_get(i)?),
                Type::INT4 => int(row.try_get::<_, Option<i32>>(i)?.map(i64::from)),
                Type::INT2 => int(row.try_get::<_, Option<i16>>(i)?.map(i64::from)),
                // Text, or a type the store never declares, which `try_get` refuses.
                _ => row.try_get::<_, Option<String>>(i)?.map_or(Cell::Null, Cell::Text),
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Cells::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_recognised_and_redacted() {
        assert!(is_postgres_url("postgres://h/db"));
        assert!(is_postgres_url("PostgreSQL://h/db"));
        assert!(!is_postgres_url("/var/lib/steward/state.db"));
        assert!(!is_postgres_url("postgres"));
        assert_eq!(
            redact_url("postgres://steward:s3cret@db:5432/steward?sslmode=disable"),
            "postgres://steward:***@db:5432/steward?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgresql://u@h/d?password=s3cret&application_name=x"),
            "postgresql://u@h/d?password=***&application_name=x"
        );
        assert_eq!(redact_url("postgres://h"), "postgres://h");
        assert_eq!(
            redact_url("postgres://a:b@h?password=c"),
            "postgres://a:***@h?password=***"
        );
    }

    #[test]
    fn invalid_url_error_never_shows_the_password() {
        let err = Target::parse("postgres://u:s3cret@h:notaport/d")
            .err()
            .expect("invalid");
        let mut text = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("postgres://u:***@h:notaport/d"), "{text}");
    }
}
