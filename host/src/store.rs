//! Storage: one [`Store`] over SQLite (the embedded default) or PostgreSQL,
//! with the same behaviour on both.
//!
//! Built on sqlx's `Any` driver so every query is written once; the SQL is
//! portable (`$n` placeholders, `BIGINT` milliseconds for time, `TEXT` JSON).
//! Where the backends must differ — migrations, and `FOR UPDATE SKIP LOCKED`
//! when leasing work on PostgreSQL — [`Backend`] says which is in use.
//! Errors are [`StoreError`]: a unique-key conflict is told apart from other
//! database failures.
//!
//! On a SQLite file, the writes that commit together (see [`Writes`]) are
//! stored by a writer thread on a connection of its own (rusqlite, on the
//! same SQLite library as sqlx), running the same statements ([`exec`])
//! back to back instead of one thread round trip each, and made durable by
//! a flusher thread while the writer goes on ([`writer`]).

mod audit;
mod cache;
mod delivery;
mod escalations;
mod events;
mod exec;
mod integrations;
mod messages;
mod plugins;
mod tenants;
mod writer;
mod writes;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::RngExt;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

pub use audit::{AuditEntry, AuditRow};
pub use cache::TTL as CACHE_TTL;
pub use escalations::{EscalationFilter, NoteRow};
pub use events::{EventRow, NewEvent};
pub use integrations::PlatformOrderRow;
pub use messages::{
    AttemptRow, DecisionRow, EscalationRow, FactsQuery, HistoryRow, LeaseRoom, MessageFilter,
    MessageRow, NewEscalation, NewMessage, PolicyFacts,
};
pub use plugins::{InstallRow, PluginDigest, PluginRow};
pub use tenants::{ApiKeyRow, TemplateRow, TenantRow};
pub use writes::{Committed, Count, NewDecision, Stored, Writes};

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, one file, WAL.
    Sqlite,
    /// PostgreSQL, shareable by several `tidings` processes.
    Postgres,
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no supported database.
    #[error("unsupported database URL `{0}`: use sqlite://path or postgres://…")]
    UnsupportedUrl(String),
    /// A unique key already exists.
    #[error("already exists: {0}")]
    Conflict(String),
    /// A stored document could not be read back.
    #[error("corrupt stored value in {what}: {message}")]
    Corrupt {
        /// Which column.
        what: &'static str,
        /// What failed.
        message: String,
    },
    /// Running migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A database error on the SQLite writer thread.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The transaction that also held these writes failed.
    #[error("storing writes failed: {0}")]
    Batch(String),
    /// Flushing committed transactions to disk failed.
    #[error("syncing the database to disk failed: {0}")]
    Sync(std::io::Error),
}

impl StoreError {
    fn from_insert(err: sqlx::Error, what: &str) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(what.to_owned())
            }
            _ => StoreError::Database(err),
        }
    }
}

/// Storage handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite files: the group commit of the write-ahead log.
    wal: Option<Arc<WalSync>>,
    /// SQLite: writers take turns here rather than in SQLite's busy
    /// handler, which sleeps 1, 2, 5, 10 … ms between tries.
    writer: Option<Arc<tokio::sync::Mutex<()>>>,
    /// What the pipeline reads for every event and message.
    cached: Arc<Cached>,
    /// SQLite files: the thread that stores [`Writes`] in batches.
    batch_writer: Option<Arc<writer::Writer>>,
}

/// Short-lived copies of per-tenant rows (see [`cache`]).
#[derive(Debug, Default)]
struct Cached {
    tenants: cache::TenantCache<Option<TenantRow>>,
    installs: cache::TenantCache<Vec<InstallRow>>,
    channels: cache::TenantCache<Vec<(String, String, i64)>>,
    templates: cache::TenantCache<Vec<TemplateRow>>,
    /// API keys found, by key hash.
    keys: cache::TenantCache<ApiKeyRow>,
}

impl Cached {
    fn forget(&self, tenant_id: &str) {
        self.tenants.forget(tenant_id);
        self.installs.forget(tenant_id);
        self.channels.forget(tenant_id);
        self.templates.forget(tenant_id);
    }
}

/// A turn to write (SQLite), released before the flush.
type WriteTurn = Option<tokio::sync::OwnedMutexGuard<()>>;

/// Group commit for SQLite. Connections commit with `synchronous = NORMAL`
/// — into the write-ahead log, in order, without waiting for the disk — and
/// every store method that writes on the pool (leases aside) calls
/// [`Store::durable`] before it returns (the batch writer's flusher thread
/// does the same for its batches): one `fdatasync` of the log makes every commit that finished
/// before it durable, so concurrent writers share one flush instead of
/// taking one each while holding SQLite's write lock. What a method has
/// written is on disk when it returns, as with `synchronous = FULL`
/// (checkpoints sync the log before and the database file after, so a
/// commit already moved out of the log is durable too).
#[derive(Debug)]
struct WalSync {
    /// The database file's `-wal` log.
    path: PathBuf,
    /// Commits asking to be durable so far.
    requested: AtomicU64,
    /// All requests up to this one are durable.
    synced: AtomicU64,
    /// One flush at a time; holds the log's inode last flushed (a new log
    /// file also needs its directory entry flushed).
    flushing: tokio::sync::Mutex<Option<u64>>,
}

impl WalSync {
    async fn wait(&self) -> Result<(), StoreError> {
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut inode = self.flushing.lock().await;
        if self.synced.load(Ordering::SeqCst) >= ticket {
            // A flush that began after this commit has finished.
            return Ok(());
        }
        let upto = self.requested.load(Ordering::SeqCst);
        let (path, known) = (self.path.clone(), *inode);
        let flushed = tokio::task::spawn_blocking(move || flush_log(&path, known))
            .await
            .map_err(|e| StoreError::Sync(std::io::Error::other(e.to_string())))?
            .map_err(StoreError::Sync)?;
        *inode = flushed;
        self.synced.store(upto, Ordering::SeqCst);
        Ok(())
    }
}

/// `fdatasync` the log at `path` (and its directory when the file is new to
/// us); returns its inode. No log: nothing is waiting in one (the last
/// connection to close checkpoints it into the synced database file).
pub(super) fn flush_log(
    path: &std::path::Path,
    known: Option<u64>,
) -> std::io::Result<Option<u64>> {
    use std::os::unix::fs::MetadataExt;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    file.sync_data()?;
    let inode = file.metadata()?.ino();
    if known != Some(inode)
        && let Some(dir) = path.parent()
    {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(Some(inode))
}

impl Store {
    /// Connect to `url` (`sqlite://file.db` or `postgres://…`), creating the
    /// SQLite file if needed, and run the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool = match backend {
            Backend::Sqlite => {
                let url = if url.contains('?') || url.contains(":memory:") {
                    url.to_owned()
                } else {
                    format!("{url}?mode=rwc")
                };
                let options = AnyConnectOptions::from_str(&url)?.disable_statement_logging();
                AnyPoolOptions::new()
                    .max_connections(8)
                    // A local file's connections do not go stale; pinging
                    // each one before use was a thread round trip per query.
                    .test_before_acquire(false)
                    .after_connect(move |conn, _| {
                        Box::pin(async move {
                            // WAL lets readers proceed during a write. A commit
                            // must survive power loss, not just a crash: FULL, or
                            // NORMAL with the group commit of `WalSync` for files.
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute(if in_memory {
                                "PRAGMA synchronous = FULL"
                            } else {
                                "PRAGMA synchronous = NORMAL"
                            })
                            .await?;
                            conn.execute("PRAGMA busy_timeout = 5000").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await?
            }
            Backend::Postgres => {
                let options = AnyConnectOptions::from_str(url)?.disable_statement_logging();
                AnyPoolOptions::new()
                    .max_connections(16)
                    .connect_with(options)
                    .await?
            }
        };
        let writer = match backend {
            Backend::Sqlite => Some(Arc::new(tokio::sync::Mutex::new(()))),
            Backend::Postgres => None,
        };
        // The writer thread only opens the file here; it first writes after
        // the migrations (below).
        let (wal, batch_writer) = match (backend, &writer) {
            (Backend::Sqlite, Some(turn)) if !in_memory => {
                let (file,): (String,) =
                    sqlx::query_as("SELECT file FROM pragma_database_list WHERE name = 'main'")
                        .fetch_one(&pool)
                        .await?;
                if file.is_empty() {
                    return Err(StoreError::UnsupportedUrl(url.to_owned()));
                }
                let wal = WalSync {
                    path: PathBuf::from(format!("{file}-wal")),
                    requested: AtomicU64::new(0),
                    synced: AtomicU64::new(0),
                    flushing: tokio::sync::Mutex::new(None),
                };
                let batch_writer = writer::Writer::open(
                    std::path::Path::new(&file),
                    wal.path.clone(),
                    turn.clone(),
                )?;
                (Some(Arc::new(wal)), Some(Arc::new(batch_writer)))
            }
            _ => (None, None),
        };
        let store = Self {
            pool,
            backend,
            wal,
            writer,
            cached: Arc::default(),
            batch_writer,
        };
        store.migrate().await?;
        store.durable(None).await?;
        Ok(store)
    }

    /// Wait for this process's turn to write (SQLite); every method that
    /// writes takes one first and gives it to [`Store::durable`].
    async fn writing(&self) -> WriteTurn {
        match &self.writer {
            Some(writer) => Some(writer.clone().lock_owned().await),
            None => None,
        }
    }

    /// End the write `turn`, then make every commit this process finished
    /// so far durable (SQLite files; PostgreSQL commits are durable
    /// already). Every method that writes calls it before returning, except
    /// the leases of events and messages: a lease lost to a power cut only
    /// lets the job be taken again sooner than its expiry would, which
    /// at-least-once processing allows anyway, and whatever is stored
    /// durably after it (the job's outcome) flushes it too.
    async fn durable(&self, turn: WriteTurn) -> Result<(), StoreError> {
        drop(turn);
        match &self.wal {
            Some(wal) => wal.wait().await,
            None => Ok(()),
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
            Backend::Postgres => {
                sqlx::migrate!("migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    /// Begin a transaction that writes: on SQLite it takes the write lock
    /// up front, since a deferred transaction that reads and then writes can
    /// fail with `SQLITE_BUSY` instead of waiting.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool, for health checks.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// `FOR UPDATE SKIP LOCKED` where the backend has it (PostgreSQL); SQLite
    /// has a single writer, so its leasing `UPDATE` is already exclusive.
    fn skip_locked(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        }
    }
}

/// A new id with a readable prefix, e.g. `msg_019a5c3e2f10b7d41c9e02aa`:
/// creation time in milliseconds then randomness, so ids sort by creation
/// time (list cursors rely on it).
pub fn new_id(prefix: &str) -> String {
    let random: [u8; 6] = rand::rng().random();
    format!("{prefix}_{:012x}{}", now_ms(), hex::encode(random))
}

/// An id derived from `parts` instead of drawn at random, ordered by `at_ms`
/// like [`new_id`]: the same parts always give the same id, so work redone
/// after a crash (an event processed again) finds what the first attempt
/// stored instead of storing it twice.
pub fn derived_id(prefix: &str, at_ms: i64, parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(parts.join("\u{1f}").as_bytes());
    format!("{prefix}_{at_ms:012x}{}", hex::encode(&digest[..6]))
}

/// The condition of an optional list filter on `column`, parameter `$n`:
/// `column = $n` when a value is given, else `$n = ''`, which holds (callers
/// bind `''` for an absent filter) and keeps the statement's parameters
/// numbered alike. The one-statement form `($n = '' OR column = $n)` reads
/// the same, but through the `OR` neither database narrows by `column` in an
/// index: filtering one order read all of the tenant's rows.
fn filter(column: &str, n: usize, value: Option<&str>) -> String {
    match value {
        Some(value) if !value.is_empty() => format!("{column} = ${n}"),
        _ => format!("${n} = ''"),
    }
}

/// `count` numbered parameters from `$first` on, for an `IN (…)` list:
/// `$3, $4, $5`.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

#[cfg(test)]
mod tests {
    use super::{filter, placeholders};

    #[test]
    fn placeholders_are_numbered_from_the_first() {
        assert_eq!(placeholders(3, 3), "$3, $4, $5");
        assert_eq!(placeholders(1, 1), "$1");
    }

    #[test]
    fn a_list_filter_is_an_indexable_equality_or_a_condition_that_holds() {
        assert_eq!(filter("order_id", 2, Some("ord_1")), "order_id = $2");
        // Absent and empty read alike: no filter, and `$2` is still bound.
        assert_eq!(filter("order_id", 2, None), "$2 = ''");
        assert_eq!(filter("order_id", 2, Some("")), "$2 = ''");
    }
}
