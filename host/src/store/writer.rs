//! The SQLite batch writer: one connection of its own, on a thread of its
//! own, that stores each batch of [`Writes`](super::Writes) in one
//! transaction with its statements run back to back (see [`super::exec`]).
//!
//! It writes only during the store's write turn, like every other SQLite
//! writer of the process, and with the same settings as the pool's
//! connections.

use std::path::Path;
use std::sync::mpsc;

use super::StoreError;

type Job = Box<dyn FnOnce(&mut rusqlite::Connection) + Send>;

/// Handle to the writer thread; the thread ends when it is dropped.
#[derive(Debug)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Open `database` (it exists: the pool created it) on a new thread.
    pub(super) fn open(database: &Path) -> Result<Self, StoreError> {
        let mut conn = rusqlite::Connection::open(database)?;
        // As the pool's connections (`Store::connect`).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.set_prepared_statement_cache_capacity(64);
        let (jobs, incoming) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("tidings-sqlite-writer".into())
            .spawn(move || {
                while let Ok(job) = incoming.recv() {
                    // A job that panics has its transaction rolled back (and
                    // its caller told it ended without an answer); the
                    // thread goes on with the next one.
                    let ran =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut conn)));
                    if ran.is_err() && !conn.is_autocommit() {
                        let _ = conn.execute_batch("ROLLBACK");
                    }
                }
            })
            .map_err(|e| StoreError::Batch(format!("cannot start the SQLite writer: {e}")))?;
        Ok(Self { jobs })
    }

    /// Run `job` on the writer's connection and return what it returns.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut rusqlite::Connection) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = done.send(job(conn));
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Batch("the SQLite writer has stopped".into()))?;
        result
            .await
            .map_err(|_| StoreError::Batch("the SQLite writer stopped mid-way".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_that_panics_is_rolled_back_and_the_writer_goes_on() {
        let dir = std::env::temp_dir().join(super::super::new_id("tidings-writer-test"));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("w.db");
        rusqlite::Connection::open(&file)
            .and_then(|c| c.execute_batch("CREATE TABLE t (v INTEGER)"))
            .expect("table");
        let writer = Writer::open(&file).expect("open");

        let failed = writer
            .run(|conn| {
                conn.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (1)")
                    .expect("insert");
                panic!("a bug in the middle of a transaction");
            })
            .await;
        assert!(failed.is_err(), "the caller is told");
        let count = writer
            .run(|conn| {
                conn.execute_batch("INSERT INTO t VALUES (2)")?;
                conn.query_row("SELECT COUNT(*), SUM(v) FROM t", [], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })
            })
            .await
            .expect("the writer still runs")
            .expect("query");
        assert_eq!(count, (1, 2), "the panicked job's insert was rolled back");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
