//! `tidings serve`: the HTTP API and the workers, wired together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::decide::{Runtime, RuntimeConfig};
use crate::dispatch::Transport;
use crate::dispatch::email::{SmtpConfigError, SmtpTransport};
use crate::dispatch::file::FileTransport;
use crate::dispatch::http::{HttpClient, HttpConfig};
use crate::dispatch::router::Dispatcher;
use crate::dispatch::twilio::TwilioTransport;
use crate::dispatch::webhook::WebhookTransport;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::schedule;
use crate::store::Store;

/// What this process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// HTTP API and workers.
    All,
    /// Only the HTTP API.
    Api,
    /// Only the workers (event processing and delivery).
    Worker,
}

/// How to run the service.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// `sqlite://file.db` or `postgres://…`.
    pub database_url: String,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The operator key, if any.
    pub operator_key: Option<String>,
    /// Where the file transport writes.
    pub outbox: PathBuf,
    /// Where compiled plugins are cached.
    pub cache_dir: Option<PathBuf>,
    /// What this process does.
    pub role: Role,
    /// How messages leave.
    pub delivery: DeliveryConfig,
    /// How long a worker owns a leased job before another may take it.
    pub lease: std::time::Duration,
}

/// The operator's delivery settings: where email goes, the provider API,
/// and what tenants' URLs may point at.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// SMTP relay URL; none: email goes to the outbox as `.eml` files.
    pub smtp_url: Option<String>,
    /// The service's public base URL: providers' status callbacks go there.
    pub public_url: Option<String>,
    /// Base URL of the Twilio-compatible Messages API.
    pub twilio_api_base: String,
    /// Let tenants' webhook and push URLs reach loopback, private and
    /// link-local addresses (development and tests only).
    pub allow_private_destinations: bool,
    /// Timeout of each provider or webhook request.
    pub http_timeout: std::time::Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            smtp_url: None,
            public_url: None,
            twilio_api_base: "https://api.twilio.com".into(),
            allow_private_destinations: false,
            http_timeout: std::time::Duration::from_secs(10),
        }
    }
}

impl DeliveryConfig {
    /// The transport for every channel, writing to `outbox` what has no
    /// provider.
    pub fn dispatcher(&self, outbox: &std::path::Path) -> Result<Dispatcher, ServeError> {
        let file = FileTransport::new(outbox);
        let email: Arc<dyn Transport> = match &self.smtp_url {
            Some(url) => Arc::new(SmtpTransport::from_url(url)?),
            None => Arc::new(file.clone()),
        };
        let client = HttpClient::new(HttpConfig {
            timeout: self.http_timeout,
            allow_private: self.allow_private_destinations,
        });
        Ok(Dispatcher::new(
            email,
            file,
            TwilioTransport::new(
                client.clone(),
                self.twilio_api_base.clone(),
                self.public_url.clone(),
            ),
            WebhookTransport::new(client),
        ))
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The database.
    #[error("database: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The plugin runtime.
    #[error(transparent)]
    Runtime(#[from] crate::decide::RuntimeError),
    /// The SMTP relay URL.
    #[error("--smtp-url: {0}")]
    Smtp(#[from] SmtpConfigError),
    /// The listener.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A started service.
pub struct Running {
    /// The address the API listens on.
    pub addr: SocketAddr,
    /// The shared state (for tests and the demo).
    pub state: AppState,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// Wait until the server task ends (it runs until the process stops).
    pub async fn wait(mut self) {
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }

    /// Stop the server and the workers.
    pub fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Start the service: connect and migrate, then start the workers and the
/// API as the role says.
pub async fn start(config: ServeConfig) -> Result<Running, ServeError> {
    let store = Store::connect(&config.database_url).await?;
    let runtime = Arc::new(Runtime::new(RuntimeConfig {
        cache_dir: config.cache_dir.clone(),
        ..RuntimeConfig::default()
    })?);
    let pipeline =
        Pipeline::new(store, runtime, Arc::new(Metrics::default())).with_lease(config.lease);
    let dispatcher = config.delivery.dispatcher(&config.outbox)?;
    let wake = pipeline.wake.clone();
    let state = AppState {
        pipeline: pipeline.clone(),
        wake: wake.clone(),
        operator_key_hash: config
            .operator_key
            .as_deref()
            .map(|k| Sha256::digest(k.as_bytes()).into()),
        public_url: config.delivery.public_url.clone(),
        config_schemas: Default::default(),
    };
    let mut tasks = Vec::new();
    if config.role != Role::Api {
        let transport: Arc<dyn Transport> = Arc::new(dispatcher);
        let owner = format!("{}-{}", std::process::id(), crate::store::new_id("w"));
        tasks.push(tokio::spawn(schedule::run_event_worker(
            pipeline.clone(),
            wake.clone(),
        )));
        tasks.push(tokio::spawn(schedule::run_message_worker(
            pipeline.clone(),
            transport,
            wake.clone(),
            owner,
        )));
        tasks.push(tokio::spawn(run_escalation_worker(pipeline.clone())));
    }
    let mut addr = config.listen;
    if config.role != Role::Worker {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Listen {
                    addr: config.listen,
                    source,
                })?;
        addr = listener.local_addr().map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })?;
        let app = http::router(state.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::error!(error = %err, "HTTP server stopped");
            }
        }));
    }
    Ok(Running { addr, state, tasks })
}

/// Moves escalation ladders and approval expiries along; the timers are rows,
/// so a restart picks up where it left off.
async fn run_escalation_worker(pipeline: Pipeline) {
    loop {
        if let Err(err) = crate::escalation::advance(&pipeline, pipeline.now()).await {
            tracing::error!(error = %err, "escalation worker failed; retrying");
        }
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
}
