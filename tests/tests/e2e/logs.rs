//! The service's logs never carry a customer's email address or phone
//! number: a whole lifecycle, with a fault and a failed delivery, is run with
//! every host log line captured at `trace`.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::json;
use tidings_sdk::testing::fixture;
use tidings_sdk::types::EventKind;
use tidings_tests::guests;
use tidings_tests::service::{Db, TestService};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_contain_customer_addresses_or_phone_numbers() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("tidings_host=trace,tidings_tests=trace")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // Global, so the worker threads and blocking tasks log here too.
    tracing::subscriber::set_global_default(subscriber)
        .expect("the only subscriber of this binary");

    let service = TestService::new(Db::Sqlite).await;
    let (_, key) = service.tenant("Shop", json!({})).await;
    service
        .install(&key, guests::STANDARD_LIFECYCLE, json!({}))
        .await;
    service
        .install(&key, guests::HOSTILE, json!({ "attack": "panic" }))
        .await;
    service.default_templates(&key).await;
    let mut customer = None;
    for kind in [
        EventKind::OrderCreated,
        EventKind::OrderPaid,
        EventKind::ShipmentCreated,
        EventKind::DeliveryDelayed,
        EventKind::OutForDelivery,
        EventKind::Delivered,
    ] {
        let mut e = fixture(kind);
        e.order.id = "ord_logs".into();
        e.order.customer.phone = Some("+393471234567".into());
        customer = Some(e.order.customer.clone());
        service.post_event(&key, &e).await;
    }
    // A message that cannot be delivered: its error is logged.
    let mut broken = fixture(EventKind::OrderCreated);
    broken.order.id = "ord_logs_broken".into();
    broken.order.customer.email = Some("giulia@@broken..example".into());
    service.post_event(&key, &broken).await;
    service.run_workers().await;
    service.advance_clock(60 * 24 * 4);
    service.run_workers().await;

    let text = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("UTF-8 logs");
    assert!(
        text.contains("event accepted"),
        "logging was captured:\n{text}"
    );
    let customer = customer.expect("a customer");
    let email = customer.email.expect("the fixture has an email");
    for secret in [
        email.as_str(),
        "+393471234567",
        "393471234567",
        "giulia@@broken..example",
    ] {
        assert!(
            !text.contains(secret),
            "`{secret}` leaked into the logs:\n{text}"
        );
    }
}
