//! End to end: order events over HTTP into `tidings serve`, out through a
//! real transport (the file transport, or SMTP to a local server).
//!
//! - Full speed: `connections` keep-alive connections post `events`
//!   `order_created` events (each its own order, one email each) as fast as
//!   the service acknowledges; the clock runs from the first POST until the
//!   service has handed the last message to the transport (`/metrics`
//!   `sent` counter; checked against the files or the SMTP server's count).
//!   It also reports the messages handed over per second while the POSTs
//!   were still coming and after the last was answered: whether delivery
//!   keeps up during a burst or waits for it to end.
//! - Fixed rate: `rate` events/s for `secs` seconds, open loop: each request
//!   has a scheduled send time and is sent then whatever the earlier ones
//!   are doing; its latency runs from the scheduled time to the 202, so a
//!   stall counts against every request it delays (no coordinated omission).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;
use tokio::sync::Mutex;

use crate::http::Conn;
use crate::service::{
    self, Database, Db, ServeOptions, Service, SmtpSink, machine_ticks, process_cpu_time,
};
use crate::stats::Latencies;

/// Where messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    File,
    Smtp,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::File => "file",
            Transport::Smtp => "SMTP (aiosmtpd)",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub events: usize,
    pub connections: usize,
    pub rate: usize,
    pub secs: u64,
    pub configs: Vec<(Db, Transport)>,
}

/// One full-speed run.
#[derive(Debug)]
pub struct Throughput {
    pub db: Db,
    pub transport: Transport,
    pub events: usize,
    /// First POST to last 202.
    pub ingest: Duration,
    /// First POST to the last message handed to the transport.
    pub end_to_end: Duration,
    /// Messages handed to the transport by the time the last POST was
    /// answered: how far delivery kept up while the door was busy.
    pub sent_while_posting: u64,
    pub acks: Latencies,
    /// Messages the transport's far side has (files, or SMTP receipts).
    pub delivered: u64,
    /// The service's CPU time (all threads) from the first POST to the last
    /// message handed over.
    pub cpu: Duration,
    /// Messages the event worker handed straight to the message worker.
    pub handed_over: u64,
    /// This load generator's own CPU time over the same span.
    pub load_cpu: Duration,
    /// The share of the machine's CPU time (all cores) that was idle over
    /// the same span.
    pub idle: f64,
}

/// One fixed-rate run.
#[derive(Debug)]
pub struct Rate {
    pub db: Db,
    pub transport: Transport,
    pub rate: usize,
    pub secs: u64,
    pub acks: Latencies,
    pub errors: usize,
    /// Achieved send rate.
    pub offered: f64,
    /// Messages handed to the transport by the end of the sending window,
    /// and how long after it the last one was.
    pub sent_in_window: u64,
    pub drain: Option<Duration>,
    /// Messages the event worker handed straight to the message worker.
    pub handed_over: u64,
}

/// A service set up for the run: one tenant with standard-lifecycle
/// installed, its templates, and no quiet hours.
struct Setup {
    service: Service,
    key: String,
    smtp: Option<SmtpSink>,
    _db: Database,
}

async fn setup(
    dir: &Path,
    cache_dir: &Path,
    db: Db,
    transport: Transport,
    tag: &str,
) -> anyhow::Result<Setup> {
    let run_dir = dir.join(tag);
    std::fs::create_dir_all(&run_dir)?;
    let database = Database::create(db, &run_dir, tag)?;
    let smtp = match transport {
        Transport::File => None,
        Transport::Smtp => Some(SmtpSink::start(&run_dir)?),
    };
    let service = Service::start(&ServeOptions {
        database_url: database.url.clone(),
        dir: run_dir.clone(),
        cache_dir: cache_dir.to_owned(),
        smtp: smtp.as_ref().map(|s| s.addr),
    })
    .await?;
    let mut conn = Conn::new(service.addr);
    let (_, key) = service::create_tenant(&mut conn, "load shop").await?;
    let plugin =
        service::upload_plugin(&mut conn, &key, &service::component("standard_lifecycle")?).await?;
    service::install(&mut conn, &key, &plugin, &json!({})).await?;
    service::upload_templates(&mut conn, &key).await?;
    let (status, body) = conn
        .call(
            "PUT",
            "/v1/settings",
            &key,
            Some(&json!({ "policy": { "quiet_hours": {} } })),
        )
        .await?;
    if status != 200 {
        bail!("settings: {status} {body}");
    }
    Ok(Setup {
        service,
        key,
        smtp,
        _db: database,
    })
}

fn bodies(count: usize, run: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let template = service::fixture("order_created")?;
    Ok((0..count)
        .map(|n| service::event(&template, n, run))
        .collect())
}

async fn post(conn: &mut Conn, auth: &str, body: &[u8]) -> anyhow::Result<u16> {
    Ok(conn
        .request(
            "POST",
            "/v1/events",
            &[
                ("authorization", auth),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await?
        .status)
}

/// Wait until the service has handed `count` messages to the transport;
/// returns when (None: not within `timeout`).
async fn until_sent(service: &Service, count: u64, timeout: Duration) -> Option<Instant> {
    let mut conn = Conn::new(service.addr);
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(sent) = service.sent(&mut conn).await
            && sent >= count
        {
            return Some(Instant::now());
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn delivered(setup: &Setup, dir: &Path) -> u64 {
    match &setup.smtp {
        Some(sink) => {
            // The sink writes its count every 100 ms.
            std::thread::sleep(Duration::from_millis(250));
            sink.count()
        }
        None => std::fs::read_dir(dir.join("outbox"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                    .count() as u64
            })
            .unwrap_or(0),
    }
}

pub async fn full_speed(
    dir: &Path,
    cache_dir: &Path,
    db: Db,
    transport: Transport,
    options: &Options,
) -> anyhow::Result<Throughput> {
    let tag = format!("full-{}-{}", db.name(), transport_tag(transport)).to_lowercase();
    let setup = setup(dir, cache_dir, db, transport, &tag).await?;
    let bodies = Arc::new(bodies(options.events, &tag)?);
    let auth = Arc::new(format!("Bearer {}", setup.key));
    let next = Arc::new(AtomicUsize::new(0));
    let mut conns = Vec::new();
    for _ in 0..options.connections {
        let mut conn = Conn::new(setup.service.addr);
        conn.open().await?;
        conns.push(conn);
    }
    let cpu_before = setup.service.cpu_time()?;
    let load_cpu_before = process_cpu_time("/proc/self/stat")?;
    let machine_before = machine_ticks()?;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut conn in conns {
        let (bodies, auth, next) = (bodies.clone(), auth.clone(), next.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(n) else {
                    return Ok::<_, anyhow::Error>(latencies);
                };
                let sent = Instant::now();
                let status = post(&mut conn, &auth, body).await?;
                if status != 202 {
                    bail!("POST /v1/events answered {status}");
                }
                latencies.push(sent.elapsed());
            }
        });
    }
    let mut acks = Vec::new();
    while let Some(result) = tasks.join_next().await {
        acks.extend(result??);
    }
    let ingest = start.elapsed();
    let sent_while_posting = setup
        .service
        .sent(&mut Conn::new(setup.service.addr))
        .await?;
    let done = until_sent(
        &setup.service,
        options.events as u64,
        Duration::from_secs(600),
    )
    .await
    .context("not every message was handed to the transport within 10 minutes")?;
    let end_to_end = done - start;
    let cpu = setup.service.cpu_time()? - cpu_before;
    let load_cpu = process_cpu_time("/proc/self/stat")? - load_cpu_before;
    let machine_after = machine_ticks()?;
    let idle = (machine_after.0 - machine_before.0) as f64
        / (machine_after.1 - machine_before.1).max(1) as f64;
    let handed_over = setup
        .service
        .handed_over(&mut Conn::new(setup.service.addr))
        .await?;
    let delivered = delivered(&setup, &dir.join(&tag));
    Ok(Throughput {
        db,
        transport,
        events: options.events,
        ingest,
        end_to_end,
        sent_while_posting,
        acks: Latencies::new(acks),
        delivered,
        cpu,
        handed_over,
        load_cpu,
        idle,
    })
}

fn transport_tag(t: Transport) -> &'static str {
    match t {
        Transport::File => "file",
        Transport::Smtp => "smtp",
    }
}

/// How long a fixed-rate run waits for the backlog to be delivered.
pub const DRAIN_WAIT: Duration = Duration::from_secs(120);

/// Connections the open-loop sender keeps; a request waits for a free one
/// only if all of them are busy (and that wait counts in its latency).
const RATE_CONNECTIONS: usize = 64;

pub async fn fixed_rate(
    dir: &Path,
    cache_dir: &Path,
    db: Db,
    transport: Transport,
    options: &Options,
) -> anyhow::Result<Rate> {
    let tag = format!("rate-{}-{}", db.name(), transport_tag(transport)).to_lowercase();
    let setup = setup(dir, cache_dir, db, transport, &tag).await?;
    let total = options.rate * options.secs as usize;
    let bodies = Arc::new(bodies(total, &tag)?);
    let auth = Arc::new(format!("Bearer {}", setup.key));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let rx = Arc::new(Mutex::new(rx));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..RATE_CONNECTIONS {
        let mut conn = Conn::new(setup.service.addr);
        conn.open().await?;
        let (bodies, auth, rx) = (bodies.clone(), auth.clone(), rx.clone());
        tasks.spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0usize);
            loop {
                let job = rx.lock().await.recv().await;
                let Some((n, scheduled)) = job else {
                    return (latencies, errors);
                };
                match post(&mut conn, &auth, &bodies[n]).await {
                    Ok(202) => latencies.push(scheduled.elapsed()),
                    _ => errors += 1,
                }
            }
        });
    }
    let interval = Duration::from_secs_f64(1.0 / options.rate as f64);
    let start = Instant::now() + Duration::from_millis(10);
    let mut n = 0;
    while n < total {
        let now = Instant::now();
        while n < total {
            let scheduled = start + interval * n as u32;
            if scheduled > now {
                break;
            }
            tx.send((n, scheduled)).expect("the senders wait for jobs");
            n += 1;
        }
        if n < total {
            tokio::time::sleep_until((start + interval * n as u32).into()).await;
        }
    }
    drop(tx);
    let (mut acks, mut errors) = (Vec::new(), 0);
    while let Some(result) = tasks.join_next().await {
        let (l, e) = result?;
        acks.extend(l);
        errors += e;
    }
    let window_end = Instant::now();
    let offered = total as f64 / (window_end - start).as_secs_f64();
    let mut conn = Conn::new(setup.service.addr);
    let sent_in_window = setup.service.sent(&mut conn).await?;
    let drain = until_sent(&setup.service, total as u64, DRAIN_WAIT)
        .await
        .map(|t| t - window_end);
    let handed_over = setup.service.handed_over(&mut conn).await?;
    Ok(Rate {
        db,
        transport,
        rate: options.rate,
        secs: options.secs,
        acks: Latencies::new(acks),
        errors,
        offered,
        sent_in_window,
        drain,
        handed_over,
    })
}
