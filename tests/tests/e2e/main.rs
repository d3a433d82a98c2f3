//! End-to-end tests: real components under the real runtime, and the CLI as a
//! process.

/// `on_both_backends!(a, b)`: each `async fn a(db: Db)` of the module
/// becomes a test on SQLite (`sqlite::a`) and one on PostgreSQL
/// (`postgres::a`); the module imports `Db`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Db::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Db::Postgres).await;
                }
            )*
        }
    };
}

mod channels;
mod delivery;
mod hostile;
mod humans;
mod logs;
mod plugins;
mod policy;
mod providers;
mod runner;
mod service;
mod smtp;
mod stdio;
mod webhooks;
mod workers;
