//! Event statements shared by both backends.

use crate::sql::{Dialect, Param, Params, Table};
use crate::{to_nanos, EventFilter, StoreError};

/// The event columns in the order both backends' `raw_event` read them.
macro_rules! event_columns {
    () => {
        "id, type, reason, message, object, count, first_seen, last_seen, seq"
    };
}
pub(crate) use event_columns;

pub(crate) const EVENT_COLUMNS: &str = event_columns!();

/// The SQL and parameters for [`crate::Store::events`]. Without a limit the rows come oldest
/// first; with one, the `(last_seen, id)` indexes are walked from the newest end and the walk
/// stops after N rows (the caller reverses them).
pub(crate) fn events_query(
    dialect: Dialect,
    filter: &EventFilter,
    operation: &'static str,
) -> Result<(String, Vec<Param>), StoreError> {
    let mut params = Params::new(dialect);
    let mut conditions = Vec::new();
    if let Some(since) = filter.since {
        conditions.push(format!("last_seen >= {}", params.bind(to_nanos(since, operation)?)));
    }
    if let Some(object) = &filter.object {
        conditions.push(format!("object = {}", params.bind(object.as_str())));
    }
    let mut sql = format!("SELECT {EVENT_COLUMNS} FROM {}", Table::Events.name(dialect));
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    match filter.limit {
        Some(limit) => {
            let limit = params.bind(i64::try_from(limit).unwrap_or(i64::MAX));
            sql.push_str(&format!(" ORDER BY last_seen DESC, id DESC LIMIT {limit}"));
        }
        None => sql.push_str(" ORDER BY last_seen ASC, id ASC"),
    }
    Ok((sql, params.into_values()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    /// Both dialects get the same statement, apart from names and placeholders.
    #[test]
    fn one_query_two_dialects() {
        let filter = EventFilter {
            since: Some(OffsetDateTime::UNIX_EPOCH),
            object: Some("Service/a".into()),
            limit: Some(5),
        };
        let (sqlite, sqlite_params) = events_query(Dialect::Sqlite, &filter, "test").unwrap();
        let (pg, pg_params) = events_query(Dialect::Postgres, &filter, "test").unwrap();
        assert_eq!(
            sqlite,
            format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE last_seen >= ?1 AND object = ?2 \
                 ORDER BY last_seen DESC, id DESC LIMIT ?3"
            )
        );
        assert_eq!(
            pg,
            sqlite.replace("FROM events", "FROM steward_events").replace('?', "$")
        );
        assert_eq!(sqlite_params, pg_params);
        assert_eq!(
            sqlite_params,
            [Param::Int(Some(0)), Param::from("Service/a"), Param::Int(Some(5))]
        );
    }
}
