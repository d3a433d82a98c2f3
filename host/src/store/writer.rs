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
                    job(&mut conn);
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
