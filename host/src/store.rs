//! Storage: one [`Store`] over SQLite (the embedded default) or PostgreSQL,
//! with the same behaviour on both.
//!
//! Built on sqlx's `Any` driver so every query is written once; the SQL is
//! portable (`$n` placeholders, `BIGINT` milliseconds for time, `TEXT` JSON).
//! Where the backends must differ — migrations, and `FOR UPDATE SKIP LOCKED`
//! when leasing work on PostgreSQL — [`Backend`] says which is in use.
//! Errors are [`StoreError`]: a unique-key conflict is told apart from other
//! database failures.

mod audit;
mod delivery;
mod escalations;
mod events;
mod integrations;
mod messages;
mod plugins;
mod tenants;

use std::str::FromStr;

use rand::RngExt;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

pub use audit::{AuditEntry, AuditRow};
pub use escalations::{EscalationFilter, NoteRow};
pub use events::{EventRow, NewEvent};
pub use integrations::PlatformOrderRow;
pub use messages::{
    AttemptRow, DecisionRow, EscalationRow, MessageFilter, MessageRow, NewEscalation, NewMessage,
};
pub use plugins::{InstallRow, PluginRow};
pub use tenants::{ApiKeyRow, TemplateRow, TenantRow};

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
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // WAL lets readers proceed during a write; FULL makes a
                            // committed event survive power loss, not just a crash.
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA synchronous = FULL").await?;
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
        let store = Self { pool, backend };
        store.migrate().await?;
        Ok(store)
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

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}
