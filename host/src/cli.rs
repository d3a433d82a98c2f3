//! The `tidings` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tidings_sdk::types::Timestamp;

use crate::decide::{Limits, Runtime, RuntimeConfig};
use crate::runner::{self, Report, RunnerError};
use crate::serve::{DeliveryConfig, Role, ServeConfig};

/// Tidings: a WebAssembly plugin host for e-commerce notification rules.
#[derive(Debug, Parser)]
#[command(name = "tidings", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: the HTTP API (/v1) and the workers.
    Serve(ServeArgs),
    /// Start the service and drive a demo shop through its HTTP API, then
    /// keep serving.
    Demo(DemoArgs),
    /// Develop and inspect rule plugins locally, under the production limits.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    service: ServiceArgs,
    /// What this process runs: the API and the workers, or only one of them
    /// (several processes can share one PostgreSQL database).
    #[arg(long, env = "TIDINGS_ROLE", value_enum, default_value = "all")]
    role: Role,
}

#[derive(Debug, Args)]
struct ServiceArgs {
    /// Database: `sqlite://tidings.db` (embedded, created if missing) or
    /// `postgres://user@host:5432/db`.
    #[arg(
        long,
        env = "TIDINGS_DATABASE_URL",
        default_value = "sqlite://tidings.db"
    )]
    database_url: String,
    /// Address for the HTTP API.
    #[arg(long, env = "TIDINGS_LISTEN", default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// The operator key (creates tenants and their keys). Keep it secret.
    #[arg(long, env = "TIDINGS_OPERATOR_KEY", hide_env_values = true)]
    operator_key: Option<String>,
    /// Where the file transport writes messages (one .eml per email).
    #[arg(long, env = "TIDINGS_OUTBOX", default_value = "outbox")]
    outbox: PathBuf,
    /// Where compiled plugins are cached.
    #[arg(long, env = "TIDINGS_CACHE_DIR", default_value = ".tidings-cache")]
    cache_dir: PathBuf,
    /// Log filter, e.g. `info` or `tidings_host=debug`.
    #[arg(long, env = "TIDINGS_LOG", default_value = "info")]
    log: String,
    /// SMTP relay for email: `smtp://host:port` (plain),
    /// `smtp://host:587?tls=starttls`, or `smtps://host:465`, with optional
    /// `user:password@` (percent-encoded). Absent: email goes to the outbox
    /// as .eml files.
    #[arg(long, env = "TIDINGS_SMTP_URL", hide_env_values = true)]
    smtp_url: Option<String>,
    /// This service's public base URL (e.g. `https://tidings.example.com`):
    /// SMS/WhatsApp status callbacks are sent to it and their signatures
    /// checked against it.
    #[arg(long, env = "TIDINGS_PUBLIC_URL")]
    public_url: Option<String>,
    /// Base URL of the Twilio-compatible Messages API used for SMS and
    /// WhatsApp (each tenant sets its own account with PUT /v1/channels/sms).
    #[arg(
        long,
        env = "TIDINGS_TWILIO_API_BASE",
        default_value = "https://api.twilio.com"
    )]
    twilio_api_base: String,
    /// Let tenants' webhook and push URLs reach loopback, private,
    /// link-local and metadata addresses. Off by default: a tenant's URL
    /// must not reach inside your network. For development only.
    #[arg(long, env = "TIDINGS_ALLOW_PRIVATE_DESTINATIONS")]
    allow_private_destinations: bool,
    /// Timeout of each provider or webhook request, in milliseconds.
    #[arg(long, env = "TIDINGS_HTTP_TIMEOUT_MS", default_value_t = 10_000)]
    http_timeout_ms: u64,
    /// Seconds a worker owns a leased job; a job a dead process held is
    /// taken over after this long.
    #[arg(long, env = "TIDINGS_LEASE_SECS", default_value_t = 60)]
    lease_secs: u64,
}

impl ServiceArgs {
    fn config(&self, role: Role) -> ServeConfig {
        ServeConfig {
            database_url: self.database_url.clone(),
            listen: self.listen,
            operator_key: self.operator_key.clone(),
            outbox: self.outbox.clone(),
            cache_dir: Some(self.cache_dir.clone()),
            role,
            delivery: DeliveryConfig {
                smtp_url: self.smtp_url.clone(),
                public_url: self.public_url.clone(),
                twilio_api_base: self.twilio_api_base.clone(),
                allow_private_destinations: self.allow_private_destinations,
                http_timeout: std::time::Duration::from_millis(self.http_timeout_ms),
            },
            lease: std::time::Duration::from_secs(self.lease_secs.max(1)),
        }
    }
}

#[derive(Debug, Args)]
struct DemoArgs {
    #[command(flatten)]
    service: ServiceArgs,
    /// The standard-lifecycle component.
    #[arg(
        long,
        default_value = "target/wasm32-wasip2/plugin/standard_lifecycle.wasm"
    )]
    plugin: PathBuf,
    /// Its default templates.
    #[arg(long, default_value = "plugins/standard-lifecycle/templates")]
    templates: PathBuf,
    /// Templates of the notifications agents get (escalations, approvals).
    #[arg(long, default_value = "host/templates")]
    agent_templates: PathBuf,
    /// Stop after the demo instead of serving on.
    #[arg(long)]
    exit: bool,
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Run a plugin on order events and print each decision with its use of
    /// every sandbox limit.
    ///
    /// The decision JSON goes to stdout; the limits table and the plugin log
    /// go to stderr (or everything to stdout as one JSON report with --json).
    /// Exits non-zero if any event did not produce actions: a fault (limit
    /// hit, trap), the plugin's own rule error, or bad input.
    Run(RunArgs),
    /// Validate a component and print what its describe() returns.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The plugin component (.wasm, built with --target wasm32-wasip2).
    plugin: PathBuf,
    /// Order event JSON file, or a directory of them; repeat for several.
    #[arg(long, short, required = true)]
    event: Vec<PathBuf>,
    /// The merchant's plugin config (JSON).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// A full decision context (JSON: tenant, now, config, history,
    /// open_escalations); --config and --now override its fields.
    #[arg(long)]
    context: Option<PathBuf>,
    /// Processing time the plugin sees (RFC 3339). Default: each event's
    /// occurred_at, so runs are reproducible.
    #[arg(long)]
    now: Option<Timestamp>,
    /// Fuel (instructions) per decision.
    #[arg(long, default_value_t = Limits::default().fuel)]
    fuel: u64,
    /// Wall-clock limit per decision, in milliseconds.
    #[arg(long, default_value_t = Limits::default().wall_clock_ms)]
    timeout_ms: u64,
    /// Print one JSON report per event on stdout (decision, log, limits).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The plugin component (.wasm).
    plugin: PathBuf,
}

/// Run the CLI; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => return serve(args),
        Command::Demo(args) => return demo(args),
        Command::Plugin(PluginCommand::Run(args)) => run(args),
        Command::Plugin(PluginCommand::Check(args)) => check(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal, not in a log file or the journal.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the async runtime starts")
}

fn serve(args: ServeArgs) -> ExitCode {
    init_logging(&args.service.log);
    let config = args.service.config(args.role);
    tokio_runtime().block_on(async move {
        match crate::serve::start(config.clone()).await {
            Ok(running) => {
                tracing::info!(
                    addr = %running.addr,
                    database = %redact(&config.database_url),
                    outbox = %config.outbox.display(),
                    role = ?config.role,
                    "tidings is serving"
                );
                if config.operator_key.is_none() {
                    tracing::warn!("no operator key: set TIDINGS_OPERATOR_KEY to create tenants");
                }
                tokio::select! {
                    () = running.wait() => {}
                    _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
                }
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        }
    })
}

fn demo(args: DemoArgs) -> ExitCode {
    init_logging(&format!(
        "warn,{}",
        args.service.log.replace("info", "warn")
    ));
    let operator_key = args
        .service
        .operator_key
        .clone()
        .unwrap_or_else(crate::http::new_key);
    let mut config = args.service.config(Role::All);
    config.operator_key = Some(operator_key.clone());
    tokio_runtime().block_on(async move {
        let running = match crate::serve::start(config.clone()).await {
            Ok(running) => running,
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::FAILURE;
            }
        };
        let demo = crate::demo::Demo {
            base: format!("http://{}", running.addr),
            operator_key,
            plugin: args.plugin.clone(),
            templates: args.templates.clone(),
            agent_templates: args.agent_templates.clone(),
            outbox: config.outbox.clone(),
        };
        let result = tokio::task::spawn_blocking(move || demo.run()).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                eprintln!("error: the demo failed: {err}");
                return ExitCode::FAILURE;
            }
            Err(err) => {
                eprintln!("error: the demo failed: {err}");
                return ExitCode::FAILURE;
            }
        }
        if args.exit {
            return ExitCode::SUCCESS;
        }
        println!(
            "\nStill serving on http://{} — press Ctrl-C to stop.",
            running.addr
        );
        tokio::select! {
            () = running.wait() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        ExitCode::SUCCESS
    })
}

/// A database URL without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn runtime() -> Result<Runtime, RunnerError> {
    Ok(Runtime::new(RuntimeConfig::default())?)
}

fn run(args: RunArgs) -> Result<ExitCode, RunnerError> {
    let config = args
        .config
        .as_deref()
        .map(runner::read_config)
        .transpose()?;
    let base = args
        .context
        .as_deref()
        .map(runner::read_context)
        .transpose()?;
    let events = runner::expand_event_paths(&args.event)?
        .iter()
        .map(|path| Ok((path.clone(), runner::read_event(path)?)))
        .collect::<Result<Vec<_>, RunnerError>>()?;

    let runtime = runtime()?;
    let plugin = runner::load_plugin(&runtime, &args.plugin)?;
    let limits = Limits {
        fuel: args.fuel,
        wall_clock_ms: args.timeout_ms,
        ..runtime.default_limits().clone()
    };

    let mut all_ok = true;
    for (path, event) in &events {
        let ctx = runner::context_for(event, base.as_ref(), config.as_ref(), args.now);
        let result = runtime.evaluate(&plugin, event, &ctx, &limits);
        let report = Report::new(&plugin, event, result, &limits, runtime.engine_limits());
        all_ok &= report.succeeded();
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("reports serialise")
            );
            continue;
        }
        eprintln!(
            "== {} ({}) with {}",
            path.display(),
            report.event_kind,
            report.plugin
        );
        println!(
            "{}",
            serde_json::to_string_pretty(&report.decision()).expect("decisions serialise")
        );
        for line in &report.log {
            eprintln!("  log [{} {:?}] {}", line.level, line.source, line.message);
        }
        if let Some(fault) = &report.fault {
            eprintln!("  FAULT: {fault}");
        }
        if let Some(e) = &report.rule_error {
            eprintln!("  RULE ERROR: {e}");
        }
        eprint!("{}", report.limits_table());
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn check(args: CheckArgs) -> Result<ExitCode, RunnerError> {
    let runtime = runtime()?;
    let plugin = runner::load_plugin(&runtime, &args.plugin)?;
    let limit = runtime.engine_limits().component_bytes;
    let report = serde_json::json!({
        "ok": true,
        "plugin": plugin.id(),
        "contract": format!("tidings:notify@{}", plugin.contract_version()),
        "size_bytes": plugin.size(),
        "size_limit_bytes": limit,
        "imports": plugin.imports(),
        "bump_alloc": plugin.bump_alloc(),
        "describe": {
            "name": plugin.info().name,
            "version": plugin.info().version,
            "handles": plugin.info().handles,
            "config_schema": serde_json::from_str::<serde_json::Value>(&plugin.info().config_schema)
                .unwrap_or(serde_json::Value::Null),
        },
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).expect("reports serialise")
    );
    Ok(ExitCode::SUCCESS)
}
