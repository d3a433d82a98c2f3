//! The SQLite batch writer: one connection of its own, on a thread of its
//! own, that stores [`Writes`] in batches, each in one transaction with its
//! statements run back to back (see [`super::exec`]), and a second thread
//! that makes them durable.
//!
//! The writer thread takes the store's write turn itself, like every other
//! SQLite writer of the process, and gives it back as soon as the batch is
//! committed: no task has to be scheduled between taking the turn and
//! writing, or between committing and giving it back. Whatever was queued
//! while it waited for the turn goes into the batch. The flusher thread
//! then runs one `fdatasync` of the write-ahead log for every batch
//! committed since its last one and answers their callers, while the
//! writer goes on with the next batch.

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use tokio::sync::oneshot;

use super::writes::{Applied, Writes, store_all};
use super::{StoreError, flush_log};

/// Who waits for a `Writes` to be stored and flushed.
type Answer = oneshot::Sender<Result<Applied, StoreError>>;

// Only tests have the small variant, and they send few jobs.
#[cfg_attr(test, allow(clippy::large_enum_variant))]
enum Job {
    /// Store these writes in the next batch.
    Store(Writes, Answer),
    /// Run this on the connection, without the write turn (tests).
    #[cfg(test)]
    Run(Box<dyn FnOnce(&mut rusqlite::Connection) + Send>),
}

/// Handle to the writer thread; the threads end when it is dropped.
#[derive(Debug)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Open `database` (it exists: the pool created it) on a new thread
    /// that writes during `turn`, and flush its log at `wal` on another.
    pub(super) fn open(
        database: &Path,
        wal: PathBuf,
        turn: Arc<tokio::sync::Mutex<()>>,
    ) -> Result<Self, StoreError> {
        let mut conn = rusqlite::Connection::open(database)?;
        // As the pool's connections (`Store::connect`).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.set_prepared_statement_cache_capacity(64);
        let (jobs, incoming) = mpsc::channel::<Job>();
        let (committed, to_flush) = mpsc::channel::<Committed>();
        let started =
            |e: std::io::Error| StoreError::Batch(format!("cannot start the SQLite writer: {e}"));
        std::thread::Builder::new()
            .name("tidings-sqlite-flush".into())
            .spawn(move || flush_and_answer(&wal, &to_flush))
            .map_err(started)?;
        std::thread::Builder::new()
            .name("tidings-sqlite-writer".into())
            .spawn(move || write_batches(&mut conn, &incoming, &turn, &committed))
            .map_err(started)?;
        Ok(Self { jobs })
    }

    /// Store `writes` in the next batch; answers once they are durable.
    /// If the writer thread has stopped, `writes` are given back unstored.
    pub(super) fn store(
        &self,
        writes: Writes,
    ) -> Result<impl Future<Output = Result<Applied, StoreError>> + use<>, Writes> {
        let (answer, answered) = oneshot::channel();
        match self.jobs.send(Job::Store(writes, answer)) {
            Ok(()) => Ok(async move {
                answered.await.unwrap_or_else(|_| {
                    Err(StoreError::Batch(
                        "the SQLite writer stopped mid-way".into(),
                    ))
                })
            }),
            Err(mpsc::SendError(Job::Store(writes, _))) => Err(writes),
            #[cfg(test)]
            Err(mpsc::SendError(Job::Run(_))) => unreachable!("a store job was sent"),
        }
    }

    /// Run `job` on the writer's connection and return what it returns.
    #[cfg(test)]
    pub(super) async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut rusqlite::Connection) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let (done, result) = oneshot::channel();
        let job = Box::new(move |conn: &mut rusqlite::Connection| {
            let _ = done.send(job(conn));
        });
        self.jobs
            .send(Job::Run(job))
            .map_err(|_| StoreError::Batch("the SQLite writer has stopped".into()))?;
        result
            .await
            .map_err(|_| StoreError::Batch("the SQLite writer stopped mid-way".into()))
    }
}

/// `job` on `conn`, or `None` if it panicked: then the transaction it left
/// open is rolled back, and the thread goes on with the next job.
pub(super) fn rolled_back_on_panic<T>(
    conn: &mut rusqlite::Connection,
    job: impl FnOnce(&mut rusqlite::Connection) -> T,
) -> Option<T> {
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(conn)));
    if ran.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    ran.ok()
}

/// A committed batch's answers, waiting for the flush.
type Committed = Vec<(Answer, Result<Applied, StoreError>)>;

/// The writer thread: each batch of what is queued, in the write turn.
fn write_batches(
    conn: &mut rusqlite::Connection,
    incoming: &mpsc::Receiver<Job>,
    turn: &tokio::sync::Mutex<()>,
    committed: &mpsc::Sender<Committed>,
) {
    let mut next = None;
    loop {
        let Some(job) = next.take().or_else(|| incoming.recv().ok()) else {
            return;
        };
        let (writes, answer) = match job {
            Job::Store(writes, answer) => (writes, answer),
            #[cfg(test)]
            Job::Run(job) => {
                // Its caller is told it ended without an answer.
                let _ = rolled_back_on_panic(conn, job);
                continue;
            }
        };
        let held = turn.blocking_lock();
        let (mut batch, mut answers) = (vec![writes], vec![answer]);
        // What was queued while the turn was taken joins this batch.
        while let Ok(job) = incoming.try_recv() {
            match job {
                Job::Store(writes, answer) => {
                    batch.push(writes);
                    answers.push(answer);
                }
                #[cfg(test)]
                other => {
                    next = Some(other);
                    break;
                }
            }
        }
        let outcomes = store_all(conn, &batch);
        drop(held);
        if committed
            .send(answers.into_iter().zip(outcomes).collect())
            .is_err()
        {
            return;
        }
    }
}

/// The flusher thread: one flush of the log for every committed batch
/// waiting, then their answers.
fn flush_and_answer(wal: &Path, to_flush: &mpsc::Receiver<Committed>) {
    let mut inode = None;
    while let Ok(mut batch) = to_flush.recv() {
        while let Ok(more) = to_flush.try_recv() {
            batch.extend(more);
        }
        let flushed = flush_log(wal, inode);
        if let Ok(known) = &flushed {
            inode = *known;
        }
        for (answer, outcome) in batch {
            let _ = answer.send(match (&flushed, outcome) {
                (Ok(_), outcome) => outcome,
                (Err(e), Ok(_)) => Err(StoreError::Batch(format!(
                    "stored, but the log could not be flushed: {e}"
                ))),
                (Err(_), failed) => failed,
            });
        }
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
        let turn = Arc::new(tokio::sync::Mutex::new(()));
        let writer = Writer::open(&file, dir.join("w.db-wal"), turn).expect("open");

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
