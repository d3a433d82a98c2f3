//! The `tidings` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tidings_sdk::types::Timestamp;

use crate::decide::{Limits, Runtime, RuntimeConfig};
use crate::runner::{self, Report, RunnerError};

/// Tidings: a WebAssembly plugin host for e-commerce notification rules.
#[derive(Debug, Parser)]
#[command(name = "tidings", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Develop and inspect rule plugins locally, under the production limits.
    #[command(subcommand)]
    Plugin(PluginCommand),
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
