//! PostgreSQL observers for the Database kind: what the primary and each replica say about
//! replication, read with the blocking client (run it off the async runtime). A server that
//! cannot be read is an `Err`, which the kind reports as Unknown, never as absent.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use postgres::{Client, Config, NoTls};
use steward_database::observe::{
    Observation, PrimaryRead, ReplicaFacts, ReplicaRead, ServerObs, SlotRow, SlowStats, Statement, TableHealth,
};
use steward_database::replication::{parse_lsn, PrimaryObs, ReplicaObs, SenderRow};
use steward_database::DatabaseState;
use time::OffsetDateTime;

/// How long a connection attempt may take: an unreachable server must not hold a pass.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The session's bounds on every statement steward sends (see [`connect`]).
const SESSION_BOUNDS: &str = "SET statement_timeout = '30s'; SET lock_timeout = '5s'";

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("invalid URL {url:?}")]
    Url {
        url: String,
        #[source]
        source: postgres::Error,
    },
    #[error("PostgreSQL at {server} unreachable or refused {what}")]
    Query {
        server: String,
        what: &'static str,
        #[source]
        source: postgres::Error,
    },
    #[error("PostgreSQL at {server} returned an unreadable {what}: {value:?}")]
    Value {
        server: String,
        what: &'static str,
        value: String,
    },
}

/// `host:port` of a URL, for messages (never the password: the kind refuses one in a URL).
fn server_of(cfg: &Config) -> String {
    let host = cfg.get_hosts().first().map_or("?".to_string(), |h| match h {
        postgres::config::Host::Tcp(h) => h.clone(),
        postgres::config::Host::Unix(p) => p.display().to_string(),
    });
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// Connects with `password` from the environment of the controller (never from the URL).
pub fn connect(url: &str, password: Option<&str>) -> Result<(Client, String), DatabaseError> {
    let mut cfg: Config = url.parse().map_err(|source| DatabaseError::Url {
        url: url.to_string(),
        source,
    })?;
    cfg.connect_timeout(CONNECT_TIMEOUT);
    cfg.application_name("steward");
    if let Some(p) = password {
        cfg.password(p);
    }
    let server = server_of(&cfg);
    let mut client = cfg.connect(NoTls).map_err(|source| DatabaseError::Query {
        server: server.clone(),
        what: "the connection",
        source,
    })?;
    // Every steward statement is bounded: an observation waits neither on a table lock nor on a
    // stuck server for long (the maintenance tasks set their own bounds around each statement).
    // SET rather than startup options, which connection poolers refuse.
    client
        .batch_execute(SESSION_BOUNDS)
        .map_err(|source| DatabaseError::Query {
            server: server.clone(),
            what: "the session settings",
            source,
        })?;
    Ok((client, server))
}

fn lsn(server: &str, what: &'static str, v: Option<String>) -> Result<Option<u64>, DatabaseError> {
    v.map(|s| {
        parse_lsn(&s).ok_or_else(|| DatabaseError::Value {
            server: server.to_string(),
            what,
            value: s,
        })
    })
    .transpose()
}

/// The primary's view: recovery state, current WAL position, its senders.
pub fn observe_primary(c: &mut Client, server: &str) -> Result<PrimaryObs, DatabaseError> {
    let q = |what| {
        move |source| DatabaseError::Query {
            server: server.to_string(),
            what,
            source,
        }
    };
    let row = c
        .query_one(
            "SELECT pg_is_in_recovery(), \
             CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END",
            &[],
        )
        .map_err(q("the recovery state"))?;
    let in_recovery: bool = row.get(0);
    let current = lsn(server, "current WAL position", row.get(1))?.unwrap_or(0);
    let rows = c
        .query(
            "SELECT coalesce(application_name, client_addr::text, ''), coalesce(state, ''), replay_lsn::text, \
             extract(epoch FROM replay_lag)::float8 FROM pg_stat_replication",
            &[],
        )
        .map_err(q("pg_stat_replication"))?;
    let mut senders = Vec::new();
    for r in rows {
        senders.push(SenderRow {
            name: r.get(0),
            state: r.get(1),
            replay_lsn: lsn(server, "replay position", r.get(2))?,
            replay_lag_secs: r.get(3),
        });
    }
    Ok(PrimaryObs {
        in_recovery,
        current_lsn: current,
        senders,
    })
}

/// A replica's own view; `name` is how the primary lists it (application_name).
pub fn observe_replica(c: &mut Client, server: &str, name: &str) -> Result<ReplicaObs, DatabaseError> {
    let row = c
        .query_one(
            "SELECT pg_is_in_recovery(), pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, \
             extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8, \
             CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END",
            &[],
        )
        .map_err(|source| DatabaseError::Query {
            server: server.to_string(),
            what: "the replay state",
            source,
        })?;
    Ok(ReplicaObs {
        name: name.to_string(),
        in_recovery: row.get(0),
        receive_lsn: lsn(server, "receive position", row.get(1))?,
        replay_lsn: lsn(server, "replay position", row.get(2))?,
        last_replay_age_secs: row.get(3),
        replay_paused: row.get(4),
    })
}

/// One query for a server's cheap facts: version, recovery, size, client connections by state
/// and the oldest open transaction (our own connection excluded).
const SERVER_FACTS: &str = "SELECT current_setting('server_version'), pg_is_in_recovery(), \
     pg_database_size(current_database()), \
     (SELECT coalesce(json_object_agg(s, n)::text, '{}') FROM \
        (SELECT coalesce(state, 'unknown') AS s, count(*) AS n FROM pg_stat_activity \
         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() GROUP BY 1) c), \
     (SELECT extract(epoch FROM now() - xact_start)::float8 FROM pg_stat_activity \
      WHERE xact_start IS NOT NULL AND backend_type = 'client backend' AND pid <> pg_backend_pid() \
      ORDER BY xact_start LIMIT 1), \
     (SELECT coalesce(usename, '?') || '@' || coalesce(application_name, '') || ' (pid ' || pid || '): ' || \
             coalesce(state, '') FROM pg_stat_activity \
      WHERE xact_start IS NOT NULL AND backend_type = 'client backend' AND pid <> pg_backend_pid() \
      ORDER BY xact_start LIMIT 1)";

fn query_err<'a>(server: &'a str, what: &'static str) -> impl Fn(postgres::Error) -> DatabaseError + 'a {
    move |source| DatabaseError::Query {
        server: server.to_string(),
        what,
        source,
    }
}

/// Version, role, connections by state, the longest transaction, the database's size.
pub fn observe_server(c: &mut Client, server: &str) -> Result<ServerObs, DatabaseError> {
    let row = c
        .query_one(SERVER_FACTS, &[])
        .map_err(query_err(server, "the server's facts"))?;
    let size: i64 = row.get(2);
    let json: String = row.get(3);
    let connections: BTreeMap<String, u64> = serde_json::from_str(&json).map_err(|_| DatabaseError::Value {
        server: server.to_string(),
        what: "connection counts",
        value: json.clone(),
    })?;
    Ok(ServerObs {
        version: row.get(0),
        in_recovery: row.get(1),
        size_bytes: size.max(0) as u64,
        connections,
        longest_transaction_seconds: row.get(4),
        longest_transaction: row.get(5),
    })
}

/// Physical replication slots of the primary.
pub fn observe_slots(c: &mut Client, server: &str) -> Result<Vec<SlotRow>, DatabaseError> {
    let rows = c
        .query(
            "SELECT slot_name::text, active, coalesce(wal_status, '') FROM pg_replication_slots \
             WHERE slot_type = 'physical' ORDER BY 1",
            &[],
        )
        .map_err(query_err(server, "pg_replication_slots"))?;
    Ok(rows
        .iter()
        .map(|r| SlotRow {
            name: r.get(0),
            active: r.get(1),
            wal_status: r.get(2),
        })
        .collect())
}

/// `application_name=...` of a libpq connection string, if set.
fn application_name(conninfo: &str) -> Option<String> {
    conninfo.split_whitespace().find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "application_name").then(|| v.trim_matches('\'').to_string())
    })
}

/// How the primary lists this replica (the `application_name` its WAL receiver connects with:
/// from `pg_stat_wal_receiver`, else `primary_conninfo`, else `cluster_name`, else PostgreSQL's
/// default `walreceiver`) and the slot it streams from.
pub fn observe_receiver(c: &mut Client, server: &str) -> Result<(String, Option<String>), DatabaseError> {
    let row = c
        .query_one(
            "SELECT (SELECT conninfo FROM pg_stat_wal_receiver LIMIT 1), \
                    (SELECT slot_name::text FROM pg_stat_wal_receiver LIMIT 1), \
                    current_setting('primary_conninfo', true), current_setting('cluster_name', true)",
            &[],
        )
        .map_err(query_err(server, "pg_stat_wal_receiver"))?;
    let receiver: Option<String> = row.get(0);
    let conninfo: Option<String> = row.get(2);
    let cluster: Option<String> = row.get(3);
    let name = receiver
        .as_deref()
        .and_then(application_name)
        .or_else(|| conninfo.as_deref().and_then(application_name))
        .or(cluster.filter(|c| !c.is_empty()))
        .unwrap_or_else(|| "walreceiver".to_string());
    Ok((name, row.get(1)))
}

/// The slower statistics: top statements by mean time, table sizes, dead tuples, last vacuums.
/// A missing `pg_stat_statements` is said in `statements`, not an error.
pub fn observe_stats(c: &mut Client, server: &str, now: OffsetDateTime) -> Result<SlowStats, DatabaseError> {
    let statements = c
        .query(
            "SELECT query, calls, mean_exec_time, total_exec_time FROM pg_stat_statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             ORDER BY mean_exec_time DESC LIMIT 10",
            &[],
        )
        .map(|rows| {
            rows.iter()
                .map(|r| Statement {
                    query: r.get(0),
                    calls: r.get::<_, i64>(1).max(0) as u64,
                    mean_ms: r.get(2),
                    total_ms: r.get(3),
                })
                .collect()
        })
        .map_err(|e| match e.as_db_error() {
            Some(d) => format!(
                "pg_stat_statements unavailable: {} (it needs shared_preload_libraries and CREATE EXTENSION pg_stat_statements)",
                d.message()
            ),
            None => format!("pg_stat_statements unreadable: {e}"),
        });
    let ts = |v: Option<f64>| v.and_then(|s| OffsetDateTime::from_unix_timestamp_nanos((s * 1e9) as i128).ok());
    let rows = c
        .query(
            // pg_total_relation_size waits for a lock on the table: one the application holds
            // exclusively (LOCK TABLE, a long ALTER) is sized from the catalog instead, so that a
            // locked table never stalls the observation.
            "SELECT s.schemaname || '.' || s.relname, \
             CASE WHEN EXISTS (SELECT 1 FROM pg_locks l WHERE l.relation = s.relid AND l.mode = 'AccessExclusiveLock') \
               THEN c.relpages::bigint * current_setting('block_size')::bigint \
               ELSE pg_total_relation_size(s.relid) END, \
             s.n_live_tup, s.n_dead_tup, \
             extract(epoch FROM s.last_vacuum)::float8, extract(epoch FROM s.last_autovacuum)::float8, \
             extract(epoch FROM s.last_analyze)::float8, extract(epoch FROM s.last_autoanalyze)::float8 \
             FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid",
            &[],
        )
        .map_err(query_err(server, "pg_stat_user_tables"))?;
    let tables: Vec<TableHealth> = rows
        .iter()
        .map(|r| TableHealth {
            name: r.get(0),
            total_bytes: r.get::<_, i64>(1).max(0) as u64,
            live: r.get::<_, i64>(2).max(0) as u64,
            dead: r.get::<_, i64>(3).max(0) as u64,
            last_vacuum: ts(r.get(4)),
            last_autovacuum: ts(r.get(5)),
            last_analyze: ts(r.get(6)),
            last_autoanalyze: ts(r.get(7)),
        })
        .collect();
    let mut largest = tables.clone();
    largest.sort_by(|a, b| b.total_bytes.cmp(&a.total_bytes).then(a.name.cmp(&b.name)));
    largest.truncate(10);
    Ok(SlowStats {
        at: now,
        statements,
        largest,
        tables,
    })
}

/// Connections kept across passes, by URL: a pass costs its queries, not a connection
/// handshake per server. A connection that fails a query is dropped and made again next pass.
#[derive(Default)]
pub struct Observer {
    clients: HashMap<String, (Client, String)>,
}

impl Observer {
    fn with<T>(
        &mut self,
        url: &str,
        password: Option<&str>,
        f: impl FnOnce(&mut Client, &str) -> Result<T, DatabaseError>,
    ) -> Result<T, DatabaseError> {
        let (client, server) = match self.clients.remove(url) {
            Some(c) if !c.0.is_closed() => c,
            _ => connect(url, password)?,
        };
        let mut entry = (client, server);
        let out = f(&mut entry.0, &entry.1);
        if out.is_ok() {
            self.clients.insert(url.to_string(), entry);
        }
        out
    }

    /// Reads one Database: every server in parallel (one thread each), the slow statistics
    /// from the primary when `want_stats`, else `stats` carried over.
    pub fn observe(
        &mut self,
        db: &DatabaseState,
        stats: Option<SlowStats>,
        want_stats: bool,
        now: OffsetDateTime,
    ) -> Observation {
        let password = db.password.as_deref();
        let primary_url = db.spec.primary.clone();
        let mut primary_conn = self.clients.remove(&primary_url);
        let mut replica_conns: Vec<(String, Option<(Client, String)>)> = db
            .spec
            .replicas
            .iter()
            .map(|u| (u.clone(), self.clients.remove(u)))
            .collect();
        let (primary, replicas) = std::thread::scope(|s| {
            let p = s.spawn(|| {
                let mut o = Observer::default();
                if let Some(c) = primary_conn.take() {
                    o.clients.insert(primary_url.clone(), c);
                }
                let r = o.with(&primary_url, password, |c, server| {
                    let facts = observe_server(c, server)?;
                    let replication = observe_primary(c, server)?;
                    let slots = observe_slots(c, server)?;
                    // The slow statistics failing (a table lock outlasting lock_timeout) keeps
                    // the last ones: the primary itself answered.
                    let fresh = if want_stats {
                        observe_stats(c, server, now)
                            .inspect_err(|e| {
                                tracing::warn!(server, error = %crate::swarm::error_chain(e), "statistics unread; the last ones are kept")
                            })
                            .ok()
                    } else {
                        None
                    };
                    Ok((
                        PrimaryRead {
                            server: facts,
                            replication,
                            slots,
                        },
                        fresh,
                    ))
                });
                (r, o.clients.remove(&primary_url))
            });
            let rs: Vec<_> = replica_conns
                .iter_mut()
                .map(|(url, conn)| {
                    let url = url.clone();
                    let conn = conn.take();
                    s.spawn(move || {
                        let mut o = Observer::default();
                        if let Some(c) = conn {
                            o.clients.insert(url.clone(), c);
                        }
                        let r = o.with(&url, password, |c, server| {
                            let facts = observe_server(c, server)?;
                            let (name, slot) = observe_receiver(c, server)?;
                            let replay = observe_replica(c, server, &name)?;
                            Ok(ReplicaFacts {
                                server: facts,
                                replay,
                                slot,
                            })
                        });
                        (url.clone(), r, o.clients.remove(&url))
                    })
                })
                .collect();
            let p = p.join().expect("observer thread");
            let rs: Vec<_> = rs.into_iter().map(|h| h.join().expect("observer thread")).collect();
            (p, rs)
        });
        let (primary, conn) = primary;
        if let Some(c) = conn {
            self.clients.insert(db.spec.primary.clone(), c);
        }
        let mut stats = stats;
        let primary = primary
            .map(|(read, fresh)| {
                if let Some(f) = fresh {
                    stats = Some(f);
                }
                read
            })
            .map_err(|e| crate::swarm::error_chain(&e));
        let replicas = replicas
            .into_iter()
            .map(|(url, r, conn)| {
                if let Some(c) = conn {
                    self.clients.insert(url.clone(), c);
                }
                ReplicaRead {
                    server: DatabaseState::server_of(&url),
                    obs: r.map_err(|e| crate::swarm::error_chain(&e)),
                }
            })
            .collect();
        Observation {
            at: now,
            primary_server: DatabaseState::server_of(&db.spec.primary),
            primary,
            replicas,
            stats,
        }
    }
}
