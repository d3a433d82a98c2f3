//! The statements of a [`Writes`](super::Writes), written once and run
//! either on a sqlx connection (PostgreSQL, and SQLite outside the batch
//! writer) or on the SQLite writer thread's own connection.
//!
//! A batch of writes is a few dozen small statements. Through sqlx each one
//! is a round trip to its connection's worker thread, and on a busy machine
//! each round trip waits for that thread to be scheduled: the write turn was
//! held ~100 µs per statement. On the writer thread they run back to back.

use std::future::Future;

use super::{EventRow, StoreError};

/// A bound value: text or integer, either of them possibly NULL.
#[derive(Debug, Clone, Copy)]
pub(super) enum Arg<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::Text(v)
    }
}

impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Arg::Text(v.as_deref())
    }
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}

/// Where the statements of writes run. SQL uses `$n` placeholders, bound
/// from `args[n - 1]`.
pub(super) trait Exec {
    /// Run one statement; returns how many rows it changed.
    async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, StoreError>;

    /// The event a query selecting the event's columns finds (exactly one).
    async fn fetch_event(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<EventRow, StoreError>;
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    args: &[Arg<'q>],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for arg in args {
        query = match *arg {
            Arg::Text(v) => query.bind(v),
            Arg::Int(v) => query.bind(v),
        };
    }
    query
}

impl Exec for sqlx::AnyConnection {
    async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        let query = bind_all(sqlx::query(sql), args);
        Ok(query.execute(&mut *self).await?.rows_affected())
    }

    async fn fetch_event(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<EventRow, StoreError> {
        let row = bind_all(sqlx::query(sql), args)
            .fetch_one(&mut *self)
            .await?;
        Ok(sqlx::FromRow::from_row(&row)?)
    }
}

/// The SQLite writer thread's connection, inside its transaction.
pub(super) struct Direct<'c>(pub(super) &'c rusqlite::Connection);

impl Direct<'_> {
    /// `sql` prepared (or found in the connection's cache) with `args` bound
    /// by their `$n` names, as sqlx binds them.
    fn prepare(
        &self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<rusqlite::CachedStatement<'_>, StoreError> {
        let mut statement = self.0.prepare_cached(sql)?;
        for index in 1..=statement.parameter_count() {
            let n = statement
                .parameter_name(index)
                .and_then(|name| name.strip_prefix('$'))
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| StoreError::Batch(format!("unsupported parameter in {sql}")))?;
            match args.get(n - 1) {
                Some(Arg::Text(v)) => statement.raw_bind_parameter(index, v)?,
                Some(Arg::Int(v)) => statement.raw_bind_parameter(index, v)?,
                None => statement.raw_bind_parameter(index, rusqlite::types::Null)?,
            }
        }
        Ok(statement)
    }
}

impl Exec for Direct<'_> {
    async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        let mut statement = self.prepare(sql, args)?;
        Ok(statement.raw_execute()? as u64)
    }

    async fn fetch_event(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<EventRow, StoreError> {
        let mut statement = self.prepare(sql, args)?;
        let mut rows = statement.raw_query();
        let row = rows
            .next()?
            .ok_or(StoreError::Sqlite(rusqlite::Error::QueryReturnedNoRows))?;
        // By name, as sqlx's `FromRow` reads them.
        Ok(EventRow {
            id: row.get("id")?,
            tenant_id: row.get("tenant_id")?,
            external_id: row.get("external_id")?,
            idempotency_key: row.get("idempotency_key")?,
            order_id: row.get("order_id")?,
            kind: row.get("kind")?,
            occurred_at: row.get("occurred_at")?,
            received_at: row.get("received_at")?,
            body: row.get("body")?,
            status: row.get("status")?,
        })
    }
}

/// The output of `future`, which must be ready at once: the writer thread
/// runs the same `async` statements as the sqlx path, but on [`Direct`],
/// whose methods never wait.
pub(super) fn ready<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut context) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => unreachable!("statements on the writer thread never wait"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_binds_by_placeholder_number_like_sqlx() {
        let conn = rusqlite::Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE t (a TEXT, b INTEGER, c TEXT, d INTEGER)")
            .expect("table");
        let mut direct = Direct(&conn);
        // Out of order, repeated, and NULLs of both kinds.
        let changed = ready(direct.execute(
            "INSERT INTO t (a, b, c, d) VALUES ($2, $1, $2, $3)",
            &[5.into(), "x".into(), Arg::Int(None)],
        ))
        .expect("insert");
        assert_eq!(changed, 1);
        ready(direct.execute(
            "INSERT INTO t (a, b, c, d) VALUES ($1, $2, $3, $4)",
            &[Arg::Text(None), 7.into(), "y".into(), 8.into()],
        ))
        .expect("insert");
        let rows: Vec<(Option<String>, i64, String, Option<i64>)> = conn
            .prepare("SELECT a, b, c, d FROM t ORDER BY b")
            .expect("select")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("read");
        assert_eq!(
            rows,
            vec![
                (Some("x".into()), 5, "x".into(), None),
                (None, 7, "y".into(), Some(8)),
            ]
        );
        let changed =
            ready(direct.execute("UPDATE t SET d = $1 WHERE b > $2", &[1.into(), 0.into()]))
                .expect("update");
        assert_eq!(changed, 2);
    }
}
