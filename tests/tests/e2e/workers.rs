//! Several `tidings serve --role worker` processes on one PostgreSQL
//! database share the work through leases; one is killed with SIGKILL in
//! the middle of a burst, and every message still reaches the (real,
//! independent) SMTP server — the ones it had in flight possibly twice, each
//! copy with the same `Message-ID`.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::json;
use tidings_sdk::testing::fixture;
use tidings_sdk::types::EventKind;
use tidings_tests::guests;
use tidings_tests::service::{Db, TestService};

use crate::smtp::SmtpServer;

/// A `tidings serve --role worker` process, killed when dropped.
struct Worker(Child);

impl Worker {
    fn start(database_url: &str, smtp_url: &str, dir: &Path, name: &str) -> Self {
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_tidings-test-cli"))
            .args([
                "serve",
                "--role",
                "worker",
                "--lease-secs",
                "3",
                "--log",
                "warn",
            ])
            .arg("--database-url")
            .arg(database_url)
            .arg("--smtp-url")
            .arg(smtp_url)
            .arg("--outbox")
            .arg(dir.join(format!("{name}-outbox")))
            .arg("--cache-dir")
            // Where the test service precompiled the plugin at upload.
            .arg(tidings_tests::service::cache_dir())
            .env_remove("TIDINGS_SMTP_URL")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the tidings binary runs");
        Self(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILL: no chance to finish or release anything.
    fn kill(&mut self) {
        self.0.kill().expect("SIGKILL");
        let _ = self.0.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn message_id(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    text.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("message-id")
                .then(|| value.trim().to_owned())
        })
        .expect("every message has a Message-ID")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_burst_loses_no_message() {
    const BURST: usize = 60;
    let smtp = SmtpServer::start("slow");
    let service = TestService::new(Db::Postgres).await;
    let (_, key) = service.tenant("Burst shop", json!({})).await;
    let config = json!({ "rules": { "order_created": [{ "channel": "email", "template": "order-confirmation" }] } });
    service.install(&key, guests::CONFIGURABLE, config).await;
    service.default_templates(&key).await;
    for n in 0..BURST {
        let mut e = fixture(EventKind::OrderCreated);
        e.id = format!("evt_burst_{n}");
        e.order.id = format!("ord_burst_{n}");
        service.post_event(&key, &e).await;
    }

    let dir = std::env::temp_dir().join(format!("tidings-workers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let mut workers = [
        Worker::start(&service.database_url, &smtp.url(), &dir, "a"),
        Worker::start(&service.database_url, &smtp.url(), &dir, "b"),
    ];

    // Once the burst is flowing, kill the worker holding the most leases.
    let started = Instant::now();
    while smtp.received().len() < 8 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the workers never started sending"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pool = sqlx::postgres::PgPool::connect(&service.database_url)
        .await
        .expect("connect");
    let holding = |pid: u32| {
        let pool = pool.clone();
        async move {
            let (n,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM messages WHERE status = 'sending' AND lease_owner LIKE $1",
            )
            .bind(format!("{pid}-%"))
            .fetch_one(&pool)
            .await
            .expect("count");
            n
        }
    };
    // Freeze the worker holding the most leases (SIGSTOP), so nothing it
    // holds can settle between counting and killing, then SIGKILL it.
    let signal = |name: &str, pid: u32| {
        let status = Command::new("kill")
            .args([name, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {name} {pid}");
    };
    let (doomed, held) = loop {
        let (a, b) = (
            holding(workers[0].pid()).await,
            holding(workers[1].pid()).await,
        );
        if a.max(b) > 0 {
            let doomed = usize::from(b > a);
            signal("-STOP", workers[doomed].pid());
            let held = holding(workers[doomed].pid()).await;
            if held > 0 {
                break (doomed, held);
            }
            signal("-CONT", workers[doomed].pid());
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no worker ever held a lease"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    workers[doomed].kill();
    assert!(
        held > 0,
        "the killed worker held leased messages when it died"
    );

    // The survivor takes over once the dead worker's leases expire.
    let ids: Vec<String> = loop {
        let (_, page) = service
            .call(
                Method::GET,
                "/v1/messages?status=sent&limit=500",
                Some(&key),
                None,
            )
            .await;
        let sent: Vec<String> = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|m| m["id"].as_str().map(str::to_owned))
            .collect();
        if sent.len() == BURST {
            break sent;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "only {} of {BURST} sent; logs in {}",
            sent.len(),
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let mut copies: HashMap<String, usize> = HashMap::new();
    let received = smtp.received();
    for (_, raw) in &received {
        *copies.entry(message_id(raw)).or_default() += 1;
    }
    for id in &ids {
        assert!(
            copies.contains_key(&format!("<{id}@tidings>")),
            "{id} never reached the SMTP server"
        );
    }
    assert_eq!(
        copies.len(),
        BURST,
        "nothing but the burst arrived: {copies:?}"
    );
    let duplicates = received.len() - BURST;
    assert!(
        duplicates as i64 <= held,
        "only messages the dead worker held can arrive twice ({duplicates} duplicates, {held} held)"
    );
    eprintln!(
        "{BURST} messages, {} received, {duplicates} duplicates (same Message-ID), {held} held by the killed worker",
        received.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Three worker processes lease from one burst in which every order has
/// four events, posted interleaved so that any batch of the oldest events
/// holds several orders' next events too. Each event is decided by a
/// plugin that echoes the context it was given: the `k`-th event of an
/// order must have seen the `k` messages its order's earlier events
/// created, so no two events of an order were processed at once or out of
/// order, whichever worker took them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orders_events_are_decided_in_order_across_workers() {
    const ORDERS: usize = 40;
    const PER_ORDER: usize = 4;
    let smtp = SmtpServer::start("accept");
    let service = TestService::new(Db::Postgres).await;
    let (_, key) = service.tenant("Ordered shop", json!({})).await;
    service
        .install(&key, guests::HOSTILE, json!({ "attack": "echo" }))
        .await;
    service.default_templates(&key).await;
    for k in 0..PER_ORDER {
        for n in 0..ORDERS {
            let mut e = fixture(EventKind::OrderCreated);
            e.id = format!("evt_ordered_{n}_{k}");
            e.order.id = format!("ord_ordered_{n}");
            let (status, body) = service.post_event(&key, &e).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        }
    }

    let dir = std::env::temp_dir().join(format!("tidings-ordered-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let _workers =
        ["a", "b", "c"].map(|name| Worker::start(&service.database_url, &smtp.url(), &dir, name));

    let pool = sqlx::postgres::PgPool::connect(&service.database_url)
        .await
        .expect("connect");
    let started = Instant::now();
    let decided: Vec<(String, String, String)> = loop {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT e.order_id, e.external_id, d.detail FROM events e JOIN decisions d ON d.event_id = e.id
             ORDER BY e.order_id, e.received_at, e.id",
        )
        .fetch_all(&pool)
        .await
        .expect("decisions");
        if rows.len() == ORDERS * PER_ORDER {
            break rows;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {} of {} events decided; logs in {}",
            rows.len(),
            ORDERS * PER_ORDER,
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    for (order, group) in decided.chunk_by(|a, b| a.0 == b.0).enumerate() {
        assert_eq!(group.len(), PER_ORDER, "order {order}: {group:?}");
        for (k, (order_id, event_id, detail)) in group.iter().enumerate() {
            assert_eq!(
                event_id,
                &format!("evt_ordered_{}_{k}", &order_id["ord_ordered_".len()..])
            );
            let detail: serde_json::Value = serde_json::from_str(detail).expect("detail is JSON");
            let context = detail["actions"][0]["data"]["context"]
                .as_str()
                .unwrap_or_else(|| panic!("the echo's context in {detail}"));
            let context: serde_json::Value =
                serde_json::from_str(context).expect("context is JSON");
            let seen = context["history"].as_array().expect("history").len();
            assert_eq!(
                seen, k,
                "{event_id} saw {seen} earlier messages of {order_id}, not {k}: it was decided before or beside an earlier event of its order"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
