//! The parts a run starts: `tidings serve` (the release binary), a fresh
//! PostgreSQL database, an SMTP sink that only counts. Each is stopped or
//! dropped when its guard is dropped.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::http::Conn;

/// The operator key of every service a run starts.
pub const OPERATOR_KEY: &str = "load-operator-key-0123456789abcdef";

/// The workspace root (where `target/` and `plugins/` are).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A free loopback port.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Which database a service uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

impl Db {
    pub fn name(self) -> &'static str {
        match self {
            Db::Sqlite => "SQLite",
            Db::Postgres => "PostgreSQL",
        }
    }
}

/// A database for one run: a fresh SQLite file in the run directory or a
/// fresh PostgreSQL database, dropped afterwards.
pub struct Database {
    pub url: String,
    pg_name: Option<String>,
}

/// The PostgreSQL server the run uses (`TIDINGS_LOAD_POSTGRES` overrides).
fn pg_admin_url() -> String {
    std::env::var("TIDINGS_LOAD_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn psql(sql: &str) -> anyhow::Result<()> {
    let out = Command::new("psql")
        .arg(pg_admin_url())
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .context("run psql")?;
    if !out.status.success() {
        bail!("psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl Database {
    pub fn create(db: Db, dir: &Path, tag: &str) -> anyhow::Result<Self> {
        match db {
            Db::Sqlite => Ok(Self {
                url: format!("sqlite://{}", dir.join(format!("{tag}.db")).display()),
                pg_name: None,
            }),
            Db::Postgres => {
                let name = format!("tidings_load_{}_{tag}", std::process::id()).replace('-', "_");
                psql(&format!("DROP DATABASE IF EXISTS {name}"))?;
                psql(&format!("CREATE DATABASE {name}"))?;
                let admin = pg_admin_url();
                let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
                Ok(Self {
                    url: format!("{base}/{name}"),
                    pg_name: Some(name),
                })
            }
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name
            && let Err(err) = psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        {
            eprintln!("warning: {err}");
        }
    }
}

/// How to start a service.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub database_url: String,
    pub dir: PathBuf,
    pub cache_dir: PathBuf,
    pub smtp: Option<SocketAddr>,
}

/// A running `tidings serve`, killed when dropped.
pub struct Service {
    pub addr: SocketAddr,
    child: Child,
}

impl Service {
    pub async fn start(options: &ServeOptions) -> anyhow::Result<Self> {
        let binary = root().join("target/release/tidings");
        if !binary.exists() {
            bail!(
                "{} is missing: cargo build --release -p tidings-host",
                binary.display()
            );
        }
        let addr = free_addr()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(options.dir.join("serve.log"))?;
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .args(["--database-url", &options.database_url])
            .args(["--listen", &addr.to_string()])
            .args(["--operator-key", OPERATOR_KEY])
            .arg("--outbox")
            .arg(options.dir.join("outbox"))
            .arg("--cache-dir")
            .arg(&options.cache_dir)
            .current_dir(&options.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(smtp) = options.smtp {
            command.args(["--smtp-url", &format!("smtp://{smtp}")]);
        }
        let child = command.spawn().context("start tidings serve")?;
        let mut service = Self { addr, child };
        let started = Instant::now();
        let mut conn = Conn::new(addr);
        loop {
            if let Ok(r) = conn.request("GET", "/healthz", &[], b"").await
                && r.status == 200
            {
                return Ok(service);
            }
            if let Some(status) = service.child.try_wait()? {
                bail!(
                    "tidings serve exited with {status}; see {}",
                    options.dir.join("serve.log").display()
                );
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("tidings serve did not answer /healthz within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time the service has used so far, all its threads, user and
    /// system.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        process_cpu_time(&format!("/proc/{}/stat", self.pid()))
    }

    /// Resident memory now and at its peak, in bytes (`VmRSS`, `VmHWM`).
    pub fn memory(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .map_or(0, |kib| kib * 1024)
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }

    /// How many messages the transport has accepted (the `sent` counter of
    /// `/metrics`, summed over tenants and channels).
    pub async fn sent(&self, conn: &mut Conn) -> anyhow::Result<u64> {
        self.counter(conn, |l| {
            l.starts_with("tidings_messages_total{") && l.contains("status=\"sent\"")
        })
        .await
    }

    /// Messages the event worker handed straight to the message worker
    /// (`tidings_messages_handed_over_total`), without a lease from the table.
    pub async fn handed_over(&self, conn: &mut Conn) -> anyhow::Result<u64> {
        self.counter(conn, |l| {
            l.starts_with("tidings_messages_handed_over_total ")
        })
        .await
    }

    /// The sum of the `/metrics` samples whose lines `select` picks.
    async fn counter(&self, conn: &mut Conn, select: impl Fn(&str) -> bool) -> anyhow::Result<u64> {
        let response = conn.request("GET", "/metrics", &[], b"").await?;
        let text = String::from_utf8_lossy(&response.body);
        Ok(text
            .lines()
            .filter(|l| select(l))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An SMTP server (aiosmtpd) that accepts every message and only counts.
pub struct SmtpSink {
    pub addr: SocketAddr,
    count_file: PathBuf,
    child: Child,
}

const SINK: &str = r#"
import asyncio, sys, threading, time
from aiosmtpd.controller import Controller

count = 0
class Count:
    async def handle_DATA(self, server, session, envelope):
        global count
        count += 1
        return "250 OK"

host, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
controller = Controller(Count(), hostname=host, port=port)
controller.start()
print("ready", flush=True)
while True:
    time.sleep(0.1)
    with open(out + ".tmp", "w") as f:
        f.write(str(count))
    import os
    os.replace(out + ".tmp", out)
"#;

impl SmtpSink {
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let addr = free_addr()?;
        let script = dir.join("smtp_sink.py");
        std::fs::write(&script, SINK)?;
        let count_file = dir.join("smtp_count");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .arg(&count_file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start python3 (aiosmtpd: python3 -m pip install aiosmtpd)")?;
        let mut ready = String::new();
        use std::io::BufRead as _;
        std::io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut ready)?;
        if ready.trim() != "ready" {
            let _ = child.kill();
            bail!("the SMTP sink did not start (is aiosmtpd installed?)");
        }
        Ok(Self {
            addr,
            count_file,
            child,
        })
    }

    /// Messages received so far (as of the sink's last write, ≤ 100 ms ago).
    pub fn count(&self) -> u64 {
        std::fs::read_to_string(&self.count_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tenant made through the operator API; returns (tenant id, merchant key).
pub async fn create_tenant(conn: &mut Conn, name: &str) -> anyhow::Result<(String, String)> {
    let (status, tenant) = conn
        .call(
            "POST",
            "/v1/tenants",
            OPERATOR_KEY,
            Some(&json!({ "name": name, "timezone": "Europe/Rome", "default_locale": "en" })),
        )
        .await?;
    if status != 201 {
        bail!("create tenant: {status} {tenant}");
    }
    let id = tenant["id"].as_str().context("tenant id")?.to_owned();
    let (status, key) = conn
        .call(
            "POST",
            &format!("/v1/tenants/{id}/keys"),
            OPERATOR_KEY,
            Some(&json!({ "scope": "merchant" })),
        )
        .await?;
    if status != 201 {
        bail!("create key: {status} {key}");
    }
    Ok((id, key["key"].as_str().context("key")?.to_owned()))
}

/// Upload a component with `key` (a tenant's own, or the operator's:
/// shared); returns the plugin id.
pub async fn upload_plugin(conn: &mut Conn, key: &str, bytes: &[u8]) -> anyhow::Result<String> {
    let auth = format!("Bearer {key}");
    let r = conn
        .request(
            "POST",
            "/v1/plugins",
            &[
                ("authorization", &auth),
                ("content-type", "application/wasm"),
            ],
            bytes,
        )
        .await?;
    let body = r.json();
    if r.status != 201 {
        bail!("upload plugin: {} {body}", r.status);
    }
    Ok(body["id"].as_str().context("plugin id")?.to_owned())
}

pub async fn install(
    conn: &mut Conn,
    key: &str,
    plugin_id: &str,
    config: &Value,
) -> anyhow::Result<()> {
    let (status, body) = conn
        .call(
            "POST",
            &format!("/v1/plugins/{plugin_id}/install"),
            key,
            Some(&json!({ "config": config })),
        )
        .await?;
    if !(200..300).contains(&status) {
        bail!("install: {status} {body}");
    }
    Ok(())
}

/// Put every template of `plugins/standard-lifecycle/templates`.
pub async fn upload_templates(conn: &mut Conn, key: &str) -> anyhow::Result<usize> {
    let dir = root().join("plugins/standard-lifecycle/templates");
    let mut count = 0;
    for locale in std::fs::read_dir(&dir)?.flatten() {
        if !locale.path().is_dir() {
            continue;
        }
        let locale_name = locale.file_name().to_string_lossy().into_owned();
        for file in std::fs::read_dir(locale.path())?.flatten() {
            let file_name = file.file_name().to_string_lossy().into_owned();
            let Some(stem) = file_name.strip_suffix(".jinja") else {
                continue;
            };
            let (name, channel) = stem.rsplit_once('.').context("name.channel.jinja")?;
            let parts = tidings_host::render::parse_parts(&std::fs::read_to_string(file.path())?)
                .map_err(|e| anyhow::anyhow!("{file_name}: {e}"))?;
            let (status, body) = conn
                .call(
                    "PUT",
                    &format!("/v1/templates/{name}/{channel}/{locale_name}"),
                    key,
                    Some(&serde_json::to_value(parts)?),
                )
                .await?;
            if status != 200 {
                bail!("template {file_name}: {status} {body}");
            }
            count += 1;
        }
    }
    Ok(count)
}

/// A plugin component built by `make plugins`.
pub fn component(name: &str) -> anyhow::Result<Vec<u8>> {
    let path = root().join(format!("target/wasm32-wasip2/plugin/{name}.wasm"));
    std::fs::read(&path).with_context(|| format!("{} (run `make plugins`)", path.display()))
}

/// `bytes` with a custom section appended: another sha256, the same
/// behaviour (as a merchant's own build of an agency plugin would be).
pub fn with_custom_section(bytes: &[u8], tag: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"tidings-load";
    let mut payload = Vec::new();
    leb(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0);
    leb(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

/// A sample event (`tests/fixtures/events/<kind>.json`) with its own event
/// and order id.
pub fn event(template: &Value, n: usize, run: &str) -> Vec<u8> {
    let mut event = template.clone();
    event["id"] = json!(format!("evt_{run}_{n}"));
    event["order"]["id"] = json!(format!("ord_{run}_{n}"));
    event["order"]["number"] = json!(format!("#{n}"));
    event.to_string().into_bytes()
}

pub fn fixture(kind: &str) -> anyhow::Result<Value> {
    let path = root().join(format!("tests/fixtures/events/{kind}.json"));
    Ok(serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?,
    )?)
}

/// CPU time a process has used so far, all its threads, user and system,
/// from its `/proc/PID/stat` (in the kernel's `USER_HZ` ticks, which are
/// 1/100 s on Linux). `/proc/self/stat` is the load generator's own.
pub fn process_cpu_time(stat_path: &str) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(stat_path)?;
    // The command name, in parentheses, may hold spaces: count fields
    // from after it. utime and stime are fields 14 and 15 of the line.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("unexpected /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(i)
            .context("short /proc/PID/stat")?
            .parse::<u64>()?)
    };
    // Field 3 (the state) is the first after the name.
    let ticks = tick(14 - 3)? + tick(15 - 3)?;
    Ok(Duration::from_millis(ticks * 10))
}

/// The whole machine's CPU ticks so far, all cores: (idle, total), from the
/// first line of `/proc/stat`. Idle counts `idle` and `iowait`.
pub fn machine_ticks() -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // user nice system idle iowait irq softirq steal (guest time is
    // already counted in user).
    let total = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    Ok((idle, total))
}
