//! A [`TestService`]: the real HTTP router, pipeline and store on SQLite or
//! PostgreSQL, driven without sockets (`tower::ServiceExt::oneshot`), with
//! the workers stepped by the test instead of running on timers.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use rand::RngExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tidings_host::decide::{Runtime, RuntimeConfig};
use tidings_host::http::{self, AppState};
use tidings_host::metrics::Metrics;
use tidings_host::pipeline::Pipeline;
use tidings_host::schedule;
use tidings_host::serve::DeliveryConfig;
use tidings_host::store::Store;
use tower::ServiceExt;

/// The operator key of every test service.
pub const OPERATOR_KEY: &str = "tdg_test_operator_key";
/// The public base URL the test service believes it has: providers' status
/// callbacks are signed over it.
pub const PUBLIC_URL: &str = "http://tidings.test";

/// Where PostgreSQL tests connect to create their own database.
pub fn postgres_admin_url() -> String {
    std::env::var("TIDINGS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// A fresh SQLite file.
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres,
}

/// A service under test.
pub struct TestService {
    /// Shared state (store, pipeline).
    pub state: AppState,
    /// The API.
    pub router: Router,
    /// The outbox the file transport writes to.
    pub outbox: PathBuf,
    /// The database URL (to start a second service on the same data).
    pub database_url: String,
    dir: PathBuf,
    postgres_db: Option<String>,
    clock_offset_ms: Arc<AtomicI64>,
    /// How `deliver` sends: by default SMTP-less (email to the outbox), with
    /// loopback destinations allowed; tests point it at their servers.
    pub delivery: DeliveryConfig,
}

impl std::fmt::Debug for TestService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestService")
            .field("database_url", &self.database_url)
            .finish_non_exhaustive()
    }
}

fn unique(prefix: &str) -> String {
    let n: u64 = rand::rng().random();
    format!("{prefix}_{}_{n:016x}", std::process::id())
}

/// Compiled plugins are shared by every test service of the run.
pub fn cache_dir() -> PathBuf {
    std::env::temp_dir().join(format!("tidings-test-cache-{}", std::process::id()))
}

impl TestService {
    /// A fresh service on a fresh database.
    pub async fn new(db: Db) -> Self {
        let dir = std::env::temp_dir().join(unique("tidings-test"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (database_url, postgres_db) = match db {
            Db::Sqlite => (
                format!("sqlite://{}", dir.join("tidings.db").display()),
                None,
            ),
            Db::Postgres => {
                let name = unique("tidings_test");
                let admin = postgres_admin_url();
                let pool = sqlx::postgres::PgPool::connect(&admin)
                    .await
                    .expect("PostgreSQL must be running on 127.0.0.1:5432 (see README, Testing)");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&pool)
                    .await
                    .expect("create the test database");
                pool.close().await;
                let base = admin
                    .rsplit_once('/')
                    .map_or(admin.as_str(), |(b, _)| b)
                    .to_owned();
                (format!("{base}/{name}"), Some(name))
            }
        };
        let mut service = Self::open(&database_url, dir).await;
        service.postgres_db = postgres_db;
        service
    }

    /// Another service (another "process") on the same database and outbox.
    pub async fn reopen(&self) -> Self {
        let mut other = Self::open(&self.database_url, self.dir.clone()).await;
        // Only the first owns the cleanup.
        other.dir = PathBuf::new();
        other
    }

    async fn open(database_url: &str, dir: PathBuf) -> Self {
        let store = Store::connect(database_url).await.expect("the store opens");
        let runtime = Arc::new(
            Runtime::new(RuntimeConfig {
                cache_dir: Some(cache_dir()),
                ..RuntimeConfig::default()
            })
            .expect("the runtime starts"),
        );
        let clock_offset_ms = Arc::new(AtomicI64::new(0));
        let offset = clock_offset_ms.clone();
        let pipeline = Pipeline::new(store, runtime, Arc::new(Metrics::default())).with_clock(
            Arc::new(move || {
                let now = jiff::Timestamp::now().as_millisecond() + offset.load(Ordering::SeqCst);
                jiff::Timestamp::from_millisecond(now).expect("a sane test clock")
            }),
        );
        let state = AppState {
            wake: pipeline.wake.clone(),
            pipeline,
            operator_key_hash: Some(Sha256::digest(OPERATOR_KEY.as_bytes()).into()),
            public_url: Some(PUBLIC_URL.to_owned()),
            config_schemas: Default::default(),
        };
        Self {
            router: http::router(state.clone()),
            state,
            outbox: dir.join("outbox"),
            database_url: database_url.to_owned(),
            dir,
            postgres_db: None,
            clock_offset_ms,
            delivery: DeliveryConfig {
                public_url: Some(PUBLIC_URL.to_owned()),
                // Test providers and endpoints listen on loopback.
                allow_private_destinations: true,
                http_timeout: std::time::Duration::from_secs(2),
                ..DeliveryConfig::default()
            },
        }
    }

    /// Move the pipeline's clock forward by `minutes` (no sleeping).
    pub fn advance_clock(&self, minutes: i64) {
        self.advance_clock_secs(minutes * 60);
    }

    /// Move the pipeline's clock forward by `secs` seconds (no sleeping).
    pub fn advance_clock_secs(&self, secs: i64) {
        self.clock_offset_ms
            .fetch_add(secs * 1_000, Ordering::SeqCst);
    }

    /// Run the escalation worker once, at the pipeline's time.
    pub async fn run_escalations(&self) -> usize {
        tidings_host::escalation::advance(&self.state.pipeline, self.state.pipeline.now())
            .await
            .expect("escalations advance")
    }

    /// Upload the host's agent notification templates (`host/templates`).
    pub async fn agent_templates(&self, key: &str) -> usize {
        self.upload_templates(key, "../host/templates").await
    }

    /// Send a request; returns the status and the JSON body (null if none).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.call_raw(method, path, key, &[], bytes).await
    }

    /// Send a request with raw bytes and extra headers.
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::from(body)).expect("valid request"))
            .await
            .expect("the router answers");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    /// Create a tenant and a merchant key; returns (tenant id, key).
    pub async fn tenant(&self, name: &str, settings: Value) -> (String, String) {
        let (status, tenant) = self
            .call(
                Method::POST,
                "/v1/tenants",
                Some(OPERATOR_KEY),
                Some(json!({ "name": name, "timezone": "Europe/Rome", "default_locale": "en", "settings": settings })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{tenant}");
        let id = tenant["id"].as_str().expect("tenant id").to_owned();
        let key = self.key(&id, "merchant").await;
        (id, key)
    }

    /// A new key of `scope` for `tenant_id`.
    pub async fn key(&self, tenant_id: &str, scope: &str) -> String {
        let (status, key) = self
            .call(
                Method::POST,
                &format!("/v1/tenants/{tenant_id}/keys"),
                Some(OPERATOR_KEY),
                Some(json!({ "scope": scope })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
        key["key"].as_str().expect("key").to_owned()
    }

    /// Upload a component; returns its plugin id.
    pub async fn upload(&self, key: &str, path: &str) -> String {
        let bytes = std::fs::read(path).expect("guest built");
        let (status, plugin) = self
            .call_raw(
                Method::POST,
                "/v1/plugins",
                Some(key),
                &[("content-type", "application/wasm")],
                bytes,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{plugin}");
        plugin["id"].as_str().expect("plugin id").to_owned()
    }

    /// Upload and install a component with `config`; returns its plugin id.
    pub async fn install(&self, key: &str, path: &str, config: Value) -> String {
        let id = self.upload(key, path).await;
        let (status, body) = self
            .call(
                Method::POST,
                &format!("/v1/plugins/{id}/install"),
                Some(key),
                Some(json!({ "config": config })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        id
    }

    /// Upload the bundled default templates of standard-lifecycle.
    pub async fn default_templates(&self, key: &str) -> usize {
        self.upload_templates(key, "../plugins/standard-lifecycle/templates")
            .await
    }

    async fn upload_templates(&self, key: &str, relative: &str) -> usize {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative);
        let mut count = 0;
        for locale in std::fs::read_dir(&dir).expect("templates dir").flatten() {
            if !locale.path().is_dir() {
                continue;
            }
            let locale_name = locale.file_name().to_string_lossy().into_owned();
            for file in std::fs::read_dir(locale.path())
                .expect("locale dir")
                .flatten()
            {
                let file_name = file.file_name().to_string_lossy().into_owned();
                let Some(stem) = file_name.strip_suffix(".jinja") else {
                    continue;
                };
                let (name, channel) = stem.rsplit_once('.').expect("name.channel.jinja");
                let parts = tidings_host::render::parse_parts(
                    &std::fs::read_to_string(file.path()).expect("read"),
                )
                .expect("valid template file");
                let (status, body) = self
                    .call(
                        Method::PUT,
                        &format!("/v1/templates/{name}/{channel}/{locale_name}"),
                        Some(key),
                        Some(serde_json::to_value(parts).expect("parts")),
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{file_name}: {body}");
                count += 1;
            }
        }
        count
    }

    /// Post an event; returns the response.
    pub async fn post_event(
        &self,
        key: &str,
        event: &tidings_sdk::types::OrderEvent,
    ) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/v1/events",
            Some(key),
            Some(serde_json::to_value(event).expect("event")),
        )
        .await
    }

    /// Run the event worker until no event is waiting.
    pub async fn process_events(&self) {
        while schedule::process_some_events(&self.state.pipeline, &self.state.wake)
            .await
            .expect("events process")
            > 0
        {}
    }

    /// Run the message worker until nothing is due.
    pub async fn deliver(&self) {
        let transport = self
            .delivery
            .dispatcher(&self.outbox)
            .expect("the delivery settings are valid");
        while schedule::deliver_due(&self.state.pipeline, &transport, "test-worker")
            .await
            .expect("messages deliver")
            > 0
        {}
    }

    /// Process events, then deliver what is due.
    pub async fn run_workers(&self) {
        self.process_events().await;
        self.deliver().await;
    }

    /// The tenant's messages for an order, oldest first.
    pub async fn messages(&self, key: &str, order_id: &str) -> Vec<Value> {
        let (status, body) = self
            .call(
                Method::GET,
                &format!("/v1/messages?order_id={order_id}&limit=500"),
                Some(key),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let mut items = body["items"].as_array().cloned().unwrap_or_default();
        items.reverse();
        items
    }
}

impl Drop for TestService {
    fn drop(&mut self) {
        if let Some(name) = self.postgres_db.take() {
            let admin = postgres_admin_url();
            // Drop runs outside async code; use a short-lived runtime on a thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async move {
                    let pool = sqlx::postgres::PgPool::connect(&admin).await.ok()?;
                    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&pool)
                        .await
                        .ok()
                })
            })
            .join();
        }
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
