//! Density: many tenants, each with an installed plugin, in one process.
//!
//! Most tenants install one of the three bundled plugins, uploaded once by
//! the operator as shared plugins, each with its own config (as merchants
//! installing an agency's plugin do); `unique` tenants upload their own
//! component (a bundled one with a custom section appended: another
//! sha256, compiled and cached separately). Measures the service's resident
//! memory after setup and after one decision (a dry run) per tenant; then
//! restarts the service — in-process caches cold, the precompiled on-disk
//! cache warm — and times the first decision of tenants whose plugin is not
//! loaded yet against their warm ones; and times upload-to-active of a new
//! component.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::http::Conn;
use crate::service::{self, Database, Db, OPERATOR_KEY, ServeOptions, Service};

#[derive(Debug, Clone)]
pub struct Options {
    pub tenants: usize,
    pub unique: usize,
    pub concurrency: usize,
    pub cold_samples: usize,
}

#[derive(Debug)]
pub struct Tenant {
    pub key: String,
    pub plugin: String,
    pub unique: bool,
}

/// How many dry runs after the first one make the warm baseline.
pub const WARM_RUNS: usize = 5;

/// One cold tenant: its first dry run after the restart, and the median of
/// the [`WARM_RUNS`] after it.
#[derive(Debug)]
pub struct Cold {
    pub what: String,
    pub first: Duration,
    pub warm: Duration,
    pub decision_us: u64,
}

#[derive(Debug)]
pub struct Report {
    pub tenants: usize,
    pub unique: usize,
    pub setup: Duration,
    pub decisions: Duration,
    pub rss_start: u64,
    pub rss_setup: (u64, u64),
    pub rss_decided: (u64, u64),
    pub rss_restart: u64,
    pub rss_restart_cold: u64,
    pub cold: Vec<Cold>,
    pub upload: Duration,
    pub install: Duration,
    pub first_dry_run: Duration,
}

const BUNDLED: [&str; 3] = ["standard_lifecycle", "vip_concierge", "configurable"];

/// The config tenant `n` installs plugin `which` with.
fn config(which: usize, n: usize) -> Value {
    match (which, n % 3) {
        (0, 0) => json!({}),
        (0, 1) => json!({ "vip_threshold_minor": 10_000 + (n % 50) * 100 }),
        (0, _) => json!({ "sms": false, "feedback_delay_days": 1 + n % 7 }),
        (1, 0) => json!({}),
        (1, _) => json!({ "vip_tag": "gold", "vip_threshold_minor": 30_000 }),
        _ => json!({ "rules": { "order_created": [
            { "channel": "email", "template": "order-confirmation" }
        ] } }),
    }
}

async fn dry_run(
    conn: &mut Conn,
    tenant: &Tenant,
    event: &Value,
) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let (status, body) = conn
        .call(
            "POST",
            &format!("/v1/plugins/{}/dry-run", tenant.plugin),
            &tenant.key,
            Some(&json!({ "event": event })),
        )
        .await?;
    let elapsed = started.elapsed();
    if status != 200 || body["outcome"].get("fault").is_some() {
        bail!("dry run: {status} {body}");
    }
    Ok((elapsed, body["usage"]["wall_time_us"].as_u64().unwrap_or(0)))
}

/// The first dry run of `tenant`, whose plugin is not loaded, and the
/// median of the next [`WARM_RUNS`]. A `GET` of the plugin comes first, so
/// that the first dry run does not also read the caller's API key from the
/// database (the others find it cached): the difference is the plugin's
/// load and its first decision, as the event worker (which reads no API
/// key) would pay it. A single second run as the baseline made the
/// difference as noisy as one round trip (once below zero); the median of
/// several is not.
async fn cold_sample(
    conn: &mut Conn,
    tenant: &Tenant,
    event: &Value,
    what: String,
) -> anyhow::Result<Cold> {
    let path = format!("/v1/plugins/{}", tenant.plugin);
    let (status, body) = conn.call("GET", &path, &tenant.key, None).await?;
    if status != 200 {
        bail!("GET {path}: {status} {body}");
    }
    let (first, _) = dry_run(conn, tenant, event).await?;
    let mut warm = Vec::with_capacity(WARM_RUNS);
    for _ in 0..WARM_RUNS {
        warm.push(dry_run(conn, tenant, event).await?);
    }
    warm.sort();
    let (warm, decision_us) = warm[WARM_RUNS / 2];
    Ok(Cold {
        what,
        first,
        warm,
        decision_us,
    })
}

/// How many times the service is restarted for cold samples of the shared
/// plugins (one each per restart).
pub const SHARED_RESTARTS: usize = 5;

/// In a service just restarted: warm the process itself (connections, the
/// first request's allocations) on the first shared plugin, then take one
/// cold sample of each other shared plugin.
async fn shared_samples(
    conn: &mut Conn,
    tenants: &[Tenant],
    shared: &[String],
    event: &Value,
) -> anyhow::Result<Vec<Cold>> {
    let warm = tenants
        .iter()
        .find(|t| !t.unique && t.plugin == shared[0])
        .context("a tenant of the first shared plugin")?;
    dry_run(conn, warm, event).await?;
    dry_run(conn, warm, event).await?;
    let mut cold = Vec::new();
    for (which, plugin) in shared.iter().enumerate().skip(1) {
        let tenant = tenants
            .iter()
            .find(|t| &t.plugin == plugin)
            .context("a tenant of each shared plugin")?;
        let what = format!("shared {}", BUNDLED[which]);
        cold.push(cold_sample(conn, tenant, event, what).await?);
    }
    Ok(cold)
}

pub async fn run(dir: &Path, options: &Options) -> anyhow::Result<Report> {
    let dir = dir.join("density");
    std::fs::create_dir_all(&dir)?;
    let cache_dir = dir.join("cache");
    let database = Database::create(Db::Sqlite, &dir, "density")?;
    let serve = ServeOptions {
        database_url: database.url.clone(),
        dir: dir.clone(),
        cache_dir: cache_dir.clone(),
        smtp: None,
    };
    let service = Service::start(&serve).await?;
    let rss_start = service.memory()?.0;
    let components: Vec<Vec<u8>> = BUNDLED
        .iter()
        .map(|name| service::component(name))
        .collect::<anyhow::Result<_>>()?;
    let components = Arc::new(components);

    let setup_started = Instant::now();
    let mut conn = Conn::new(service.addr);
    let mut shared = Vec::new();
    for bytes in components.iter() {
        shared.push(service::upload_plugin(&mut conn, OPERATOR_KEY, bytes).await?);
    }
    let shared = Arc::new(shared);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..options.concurrency {
        let (next, shared, components) = (next.clone(), shared.clone(), components.clone());
        let (addr, total, unique) = (service.addr, options.tenants, options.unique);
        tasks.spawn(async move {
            let mut conn = Conn::new(addr);
            let mut made = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return Ok::<_, anyhow::Error>(made);
                }
                let (_, key) = service::create_tenant(&mut conn, &format!("shop {n}")).await?;
                let which = n % BUNDLED.len();
                let is_unique = n < unique;
                let plugin = if is_unique {
                    let bytes = service::with_custom_section(&components[which], &format!("{n}"));
                    service::upload_plugin(&mut conn, &key, &bytes).await?
                } else {
                    shared[which].clone()
                };
                service::install(&mut conn, &key, &plugin, &config(which, n)).await?;
                made.push((
                    n,
                    Tenant {
                        key,
                        plugin,
                        unique: is_unique,
                    },
                ));
            }
        });
    }
    let mut tenants = Vec::new();
    while let Some(result) = tasks.join_next().await {
        tenants.extend(result??);
    }
    tenants.sort_by_key(|(n, _)| *n);
    let tenants: Arc<Vec<Tenant>> = Arc::new(tenants.into_iter().map(|(_, t)| t).collect());
    let setup = setup_started.elapsed();
    let rss_setup = service.memory()?;
    eprintln!(
        "density: {} tenants set up in {:.1} s",
        tenants.len(),
        setup.as_secs_f64()
    );

    let event = Arc::new(service::fixture("order_created")?);
    let decisions_started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..options.concurrency {
        let (next, tenants, event, addr) =
            (next.clone(), tenants.clone(), event.clone(), service.addr);
        tasks.spawn(async move {
            let mut conn = Conn::new(addr);
            while let Some(tenant) = tenants.get(next.fetch_add(1, Ordering::Relaxed)) {
                dry_run(&mut conn, tenant, &event).await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let decisions = decisions_started.elapsed();
    let rss_decided = service.memory()?;
    drop(service);

    // Restarted: nothing loaded in this process, the compiled artifacts on disk.
    let mut service = Service::start(&serve).await?;
    let rss_restart = service.memory()?.0;
    let mut conn = Conn::new(service.addr);
    let mut cold = shared_samples(&mut conn, &tenants, &shared, &event).await?;
    for (n, tenant) in tenants
        .iter()
        .enumerate()
        .filter(|(_, t)| t.unique)
        .take(options.cold_samples)
    {
        let what = format!("own {}", BUNDLED[n % BUNDLED.len()]);
        cold.push(cold_sample(&mut conn, tenant, &event, what).await?);
    }
    let rss_restart_cold = service.memory()?.0;
    // A shared plugin is cold only once per process: more samples of it
    // take more restarts. The last service goes on to upload-to-active.
    for _ in 1..SHARED_RESTARTS {
        drop(service);
        service = Service::start(&serve).await?;
        conn = Conn::new(service.addr);
        cold.extend(shared_samples(&mut conn, &tenants, &shared, &event).await?);
    }

    // Upload-to-active: a component this host has never seen (compiled now).
    let (_, key) = service::create_tenant(&mut conn, "new shop").await?;
    let bytes = service::with_custom_section(&components[0], "upload-to-active");
    let started = Instant::now();
    let plugin = service::upload_plugin(&mut conn, &key, &bytes).await?;
    let upload = started.elapsed();
    service::install(&mut conn, &key, &plugin, &json!({})).await?;
    let install = started.elapsed() - upload;
    let tenant = Tenant {
        key,
        plugin,
        unique: true,
    };
    dry_run(&mut conn, &tenant, &event).await?;
    let first_dry_run = started.elapsed() - upload - install;
    drop(service);
    drop(database);
    Ok(Report {
        tenants: options.tenants,
        unique: options.unique,
        setup,
        decisions,
        rss_start,
        rss_setup,
        rss_decided,
        rss_restart,
        rss_restart_cold,
        cold,
        upload,
        install,
        first_dry_run,
    })
}
