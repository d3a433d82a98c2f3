//! `tidings-load`: end-to-end throughput, ingest latency and tenant density
//! of `tidings serve` (the release binary), on SQLite and PostgreSQL, with
//! the file transport and a local SMTP server.
//!
//! ```text
//! tidings-load [all|e2e|density] [--events N] [--connections N] [--rate N]
//!              [--secs N] [--tenants N] [--unique N] [--quick]
//!              [--only sqlite-file,...] [--keep] [--write BENCHMARKS.md]
//! ```
//! Prints markdown tables; `--write` also replaces the generated tables of
//! the "End to end" and "Density" sections of that file.

mod density;
mod e2e;
mod http;
mod report;
mod service;
mod stats;

use anyhow::{Context as _, bail};

use crate::e2e::Transport;
use crate::service::Db;

struct Args {
    what: String,
    e2e: e2e::Options,
    density: density::Options,
    write: Option<std::path::PathBuf>,
    /// Leave the run's files in place instead of deleting them.
    keep: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        what: "all".into(),
        e2e: e2e::Options {
            events: 3_000,
            connections: 32,
            rate: 1_000,
            secs: 10,
            configs: vec![
                (Db::Sqlite, Transport::File),
                (Db::Sqlite, Transport::Smtp),
                (Db::Postgres, Transport::File),
                (Db::Postgres, Transport::Smtp),
            ],
        },
        density: density::Options {
            tenants: 10_000,
            unique: 50,
            concurrency: 16,
            cold_samples: 20,
        },
        write: None,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "all" | "e2e" | "density" => args.what = arg.clone(),
            "--events" => args.e2e.events = value()?.parse()?,
            "--connections" => args.e2e.connections = value()?.parse()?,
            "--rate" => args.e2e.rate = value()?.parse()?,
            "--secs" => args.e2e.secs = value()?.parse()?,
            "--tenants" => args.density.tenants = value()?.parse()?,
            "--unique" => args.density.unique = value()?.parse()?,
            "--only" => {
                let list = value()?;
                args.e2e.configs = list
                    .split(',')
                    .map(|c| match c {
                        "sqlite-file" => Ok((Db::Sqlite, Transport::File)),
                        "sqlite-smtp" => Ok((Db::Sqlite, Transport::Smtp)),
                        "postgres-file" => Ok((Db::Postgres, Transport::File)),
                        "postgres-smtp" => Ok((Db::Postgres, Transport::Smtp)),
                        other => bail!("unknown configuration {other}"),
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            "--quick" => {
                args.e2e.events = 1_000;
                args.e2e.secs = 3;
                args.density.tenants = 300;
                args.density.unique = 6;
                args.density.cold_samples = 6;
            }
            "--write" => args.write = Some(value()?.into()),
            "--keep" => args.keep = true,
            "-h" | "--help" => {
                println!(
                    "tidings-load [all|e2e|density] [--events N] [--connections N] [--rate N] \
                     [--secs N] [--tenants N] [--unique N] [--quick] \
                     [--only sqlite-file,sqlite-smtp,postgres-file,postgres-smtp] [--keep] [--write FILE]\n\n\
                     --keep leaves the run's files under target/load-kept/ instead of deleting \
                     them: on ext4 without a journal, tens of thousands of files deleted in the \
                     last 5 minutes slow down creating new ones (the file transport), so runs \
                     that follow each other closely should keep theirs."
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
    }
    args.density.unique = args.density.unique.min(args.density.tenants);
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args, command))
}

async fn run(args: Args, command: String) -> anyhow::Result<()> {
    let ended = service::root().join("target/load.ended");
    settle_after_previous_run(&ended).await;
    let dir = if args.keep {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis();
        service::root().join(format!("target/load-kept/{stamp}"))
    } else {
        let dir = service::root().join("target/load");
        let _ = std::fs::remove_dir_all(&dir);
        dir
    };
    std::fs::create_dir_all(&dir)?;
    let cache_dir = dir.join("cache");

    let mut sections = Vec::new();
    if args.what != "density" {
        let mut throughput = Vec::new();
        let mut rates = Vec::new();
        for &(db, transport) in &args.e2e.configs {
            eprintln!(
                "end to end: {} + {} at full speed",
                db.name(),
                transport.name()
            );
            let t = e2e::full_speed(&dir, &cache_dir, db, transport, &args.e2e).await?;
            eprintln!(
                "  {:.0} events/s end to end",
                t.events as f64 / t.end_to_end.as_secs_f64()
            );
            throughput.push(t);
            eprintln!(
                "end to end: {} + {} at {} events/s",
                db.name(),
                transport.name(),
                args.e2e.rate
            );
            let r = e2e::fixed_rate(&dir, &cache_dir, db, transport, &args.e2e).await?;
            eprintln!("  ack p99 {} ms", stats::ms(r.acks.quantile(0.99)));
            rates.push(r);
        }
        sections.push((
            "end-to-end",
            report::end_to_end(&args.e2e, &throughput, &rates),
        ));
    }
    if args.what != "e2e" {
        eprintln!(
            "density: {} tenants ({} with their own component)",
            args.density.tenants, args.density.unique
        );
        let d = density::run(&dir, &args.density).await?;
        sections.push(("density", report::density(&d)));
    }
    for (_, text) in &sections {
        println!("{text}");
    }
    if let Some(path) = &args.write {
        report::write(path, &command, &sections)?;
        eprintln!("wrote {}", path.display());
    }
    if args.keep {
        eprintln!("kept the run's files in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::write(&ended, b"");
    }
    Ok(())
}

/// Wait until the files a previous run deleted (`ended` was touched then)
/// no longer slow down creating files. ext4 without a journal (as on the
/// benchmark machine) does not reuse an inode deleted in the last 60 s, or
/// the last 300 s while its inode-table block is dirty (which new files in
/// the same block group keep it), and scans past every such inode each time
/// it creates a file: right after a run deleted its tens of thousands of
/// outbox files, the next run's file transport spends most of its time in
/// that scan (`recently_deleted` in `perf`).
async fn settle_after_previous_run(ended: &std::path::Path) {
    const RECENTLY_DELETED: std::time::Duration = std::time::Duration::from_secs(300);
    let since = std::fs::metadata(ended)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|at| at.elapsed().ok());
    if let Some(since) = since
        && since < RECENTLY_DELETED
    {
        let wait = RECENTLY_DELETED - since + std::time::Duration::from_secs(2);
        eprintln!(
            "waiting {:.0} s: the previous run's deleted files slow down file creation until then \
             (--keep leaves a run's files in place instead)",
            wait.as_secs_f64()
        );
        tokio::time::sleep(wait).await;
    }
}
