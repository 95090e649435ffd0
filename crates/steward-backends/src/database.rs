//! PostgreSQL observers for the Database kind: what the primary and each replica say about
//! replication, read with the blocking client (run it off the async runtime). A server that
//! cannot be read is an `Err`, which the kind reports as Unknown, never as absent.

use std::time::Duration;

use postgres::{Client, Config, NoTls};
use steward_database::replication::{parse_lsn, PrimaryObs, ReplicaObs, SenderRow};

/// How long a connection attempt may take: an unreachable server must not hold a pass.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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
    let client = cfg.connect(NoTls).map_err(|source| DatabaseError::Query {
        server: server.clone(),
        what: "the connection",
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
