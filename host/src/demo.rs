//! `tidings demo`: drives a demo shop through the HTTP API, as a merchant's
//! integration would, and prints what happened.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tidings_sdk::testing::fixture;
use tidings_sdk::types::{Channel, EventKind, OrderEvent, Timestamp};

/// The demo's inputs.
#[derive(Debug)]
pub struct Demo {
    /// The API, e.g. `http://127.0.0.1:8080`.
    pub base: String,
    /// The operator key the server was started with.
    pub operator_key: String,
    /// The standard-lifecycle component.
    pub plugin: PathBuf,
    /// Its templates directory.
    pub templates: PathBuf,
    /// The agent notification templates.
    pub agent_templates: PathBuf,
    /// Where the server writes messages.
    pub outbox: PathBuf,
}

type DemoResult<T> = Result<T, String>;

struct Api {
    agent: ureq::Agent,
    base: String,
    key: String,
}

impl Api {
    fn new(base: &str, key: &str) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self {
            agent,
            base: base.to_owned(),
            key: key.to_owned(),
        }
    }

    fn check(what: &str, mut response: ureq::http::Response<ureq::Body>) -> DemoResult<Value> {
        let status = response.status();
        let body: Value = response.body_mut().read_json().unwrap_or(Value::Null);
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("{what}: HTTP {status}: {body}"))
        }
    }

    fn post(&self, path: &str, body: &Value) -> DemoResult<Value> {
        let response = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.key))
            .send_json(body)
            .map_err(|e| format!("POST {path}: {e}"))?;
        Self::check(&format!("POST {path}"), response)
    }

    fn put(&self, path: &str, body: &Value) -> DemoResult<Value> {
        let response = self
            .agent
            .put(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.key))
            .send_json(body)
            .map_err(|e| format!("PUT {path}: {e}"))?;
        Self::check(&format!("PUT {path}"), response)
    }

    fn upload(&self, path: &str, bytes: &[u8]) -> DemoResult<Value> {
        let response = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.key))
            .header("Content-Type", "application/wasm")
            .send(bytes)
            .map_err(|e| format!("POST {path}: {e}"))?;
        Self::check(&format!("POST {path}"), response)
    }

    fn get(&self, path: &str) -> DemoResult<Value> {
        let response = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.key))
            .call()
            .map_err(|e| format!("GET {path}: {e}"))?;
        Self::check(&format!("GET {path}"), response)
    }
}

/// Parse a template file of the default set: `<name>.<channel>.jinja` with
/// `{# subject #}`, `{# text #}`, `{# html #}` parts.
fn template_files(dir: &Path) -> DemoResult<Vec<(String, String, String, Value)>> {
    let mut out = Vec::new();
    let locales =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut locales: Vec<PathBuf> = locales
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    locales.sort();
    for locale_dir in locales {
        let locale = locale_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&locale_dir)
            .map_err(|e| format!("cannot read {}: {e}", locale_dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jinja"))
            .collect();
        files.sort();
        for file in files {
            let stem = file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            let Some((name, channel)) = stem.rsplit_once('.') else {
                continue;
            };
            let source = std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let parts = crate::render::parse_parts(&source)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            out.push((
                name.to_owned(),
                channel.to_owned(),
                locale.clone(),
                json!(parts),
            ));
        }
    }
    Ok(out)
}

/// One demo customer's lifecycle, built from the sample events.
fn lifecycle(
    order_id: &str,
    number: &str,
    customer: impl Fn(&mut OrderEvent),
    start: Timestamp,
) -> Vec<OrderEvent> {
    let kinds = [
        EventKind::OrderCreated,
        EventKind::OrderPaid,
        EventKind::ShipmentCreated,
        EventKind::DeliveryDelayed,
        EventKind::OutForDelivery,
        EventKind::Delivered,
    ];
    kinds
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            let mut event = fixture(*kind);
            event.id = format!("demo_{order_id}_{kind}");
            event.order.id = order_id.to_owned();
            event.order.number = number.to_owned();
            event.order.created_at = start;
            event.occurred_at = start
                .checked_add(jiff::SignedDuration::from_mins(i as i64))
                .unwrap_or(start);
            customer(&mut event);
            event
        })
        .collect()
}

impl Demo {
    /// Run the demo, printing as it goes.
    pub fn run(&self) -> DemoResult<()> {
        let operator = Api::new(&self.base, &self.operator_key);
        println!("Tidings demo against {}\n", self.base);
        // SMS quiet hours of three hours from the current hour in Rome and
        // Prague, so the demo shows a deferral whatever time it is run.
        let hour = jiff::Timestamp::now()
            .in_tz("Europe/Rome")
            .map_or(21, |now| now.hour());
        let quiet = json!({
            "start": format!("{hour:02}:00"),
            "end": format!("{:02}:00", (hour + 3) % 24),
        });
        println!(
            "The demo shop keeps SMS quiet from {} to {} (customers' local time), so SMS sent now is deferred.\n",
            quiet["start"].as_str().unwrap_or_default(),
            quiet["end"].as_str().unwrap_or_default()
        );

        let tenant = operator.post(
            "/v1/tenants",
            &json!({
                "name": "Bottega Demo",
                "timezone": "Europe/Rome",
                "default_locale": "en",
                "settings": {
                    "shop": {
                        "name": "Bottega Demo",
                        "url": "https://bottega.example",
                        "support_email": "help@bottega.example"
                    },
                    "policy": { "quiet_hours": { "sms": quiet, "whatsapp": quiet } },
                    "escalation": { "queues": { "vip-care": { "tiers": [
                        { "minutes": 30, "emails": ["care@bottega.example"] },
                        { "minutes": 60, "emails": ["manager@bottega.example"] }
                    ] } } }
                }
            }),
        )?;
        let tenant_id = tenant["id"].as_str().unwrap_or_default().to_owned();
        let key = operator.post(
            &format!("/v1/tenants/{tenant_id}/keys"),
            &json!({ "scope": "merchant" }),
        )?;
        let merchant = Api::new(&self.base, key["key"].as_str().unwrap_or_default());
        println!("1. created tenant {tenant_id} (Bottega Demo) and a merchant key");

        let bytes = std::fs::read(&self.plugin).map_err(|e| {
            format!(
                "cannot read {}: {e} (build it with `make plugins`)",
                self.plugin.display()
            )
        })?;
        let plugin = merchant.upload("/v1/plugins", &bytes)?;
        let plugin_id = plugin["id"].as_str().unwrap_or_default().to_owned();
        merchant.post(
            &format!("/v1/plugins/{plugin_id}/install"),
            &json!({ "config": { "vip_threshold_minor": 20000 } }),
        )?;
        println!(
            "2. uploaded and installed {}@{} ({} bytes)",
            plugin["name"].as_str().unwrap_or("?"),
            plugin["version"].as_str().unwrap_or("?"),
            plugin["size"]
        );

        let mut templates = template_files(&self.templates)?;
        templates.extend(template_files(&self.agent_templates)?);
        for (name, channel, locale, parts) in &templates {
            merchant.put(&format!("/v1/templates/{name}/{channel}/{locale}"), parts)?;
        }
        println!(
            "3. uploaded {} templates from {}",
            templates.len(),
            self.templates.display()
        );

        let now = Timestamp::now();
        let mut events = lifecycle(
            "demo-1001",
            "#1001",
            |e| {
                let c = &mut e.order.customer;
                c.id = "cus_giulia".into();
                c.first_name = Some("Giulia".into());
                c.email = Some("giulia.rossi@example.com".into());
                c.phone = Some("+393471234567".into());
                c.locale = "it-IT".into();
                c.timezone = "Europe/Rome".into();
                c.consents = vec![Channel::Email, Channel::Sms];
            },
            now,
        );
        events.extend(lifecycle(
            "demo-1002",
            "#1002",
            |e| {
                let c = &mut e.order.customer;
                c.id = "cus_tomas".into();
                c.first_name = Some("Tomáš".into());
                c.email = Some("tomas.novak@example.cz".into());
                c.phone = Some("+420601234567".into());
                c.locale = "cs-CZ".into();
                c.timezone = "Europe/Prague".into();
                c.tags = vec!["vip".into()];
                c.consents = vec![Channel::Email, Channel::Sms];
                e.order.total.minor = 45_900;
                e.order.total.currency = "CZK".into();
                for item in &mut e.order.items {
                    item.unit_price.currency = "CZK".into();
                    item.unit_price.minor *= 3;
                }
            },
            now,
        ));
        for event in &events {
            merchant.post(
                "/v1/events",
                &serde_json::to_value(event).map_err(|e| e.to_string())?,
            )?;
        }
        println!(
            "4. posted {} events: created → paid → shipped → delayed → out for delivery → delivered, \
             for Giulia (it-IT, Europe/Rome) and Tomáš (cs-CZ, Europe/Prague, VIP)\n",
            events.len()
        );

        self.wait_until_settled(&merchant)?;
        for order in ["demo-1001", "demo-1002"] {
            self.print_order(&merchant, order)?;
        }
        println!(
            "Where to look:\n  emails:      {}/*.eml (SMS and other channels in its subfolders)\n  \
             API:         {} with `Authorization: Bearer {}`\n  \
             try:         GET /v1/messages?order_id=demo-1001, GET /v1/audit?order_id=demo-1002, GET /metrics",
            self.outbox.display(),
            self.base,
            key["key"].as_str().unwrap_or_default()
        );
        Ok(())
    }

    fn wait_until_settled(&self, api: &Api) -> DemoResult<()> {
        let started = Instant::now();
        loop {
            let events = api.get("/v1/events?limit=500")?;
            let pending = events["items"].as_array().map_or(0, |items| {
                items.iter().filter(|e| e["status"] == "received").count()
            });
            let messages = api.get("/v1/messages?limit=500")?;
            let due_now = messages["items"].as_array().map_or(0, |items| {
                items
                    .iter()
                    .filter(|m| {
                        matches!(m["status"].as_str(), Some("sending"))
                            || (m["status"] == "scheduled"
                                && m["send_at"]
                                    .as_str()
                                    .and_then(|t| t.parse::<Timestamp>().ok())
                                    .is_some_and(|t| t <= Timestamp::now()))
                    })
                    .count()
            });
            if pending == 0 && due_now == 0 {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "still {pending} events and {due_now} messages in flight after 60 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn print_order(&self, api: &Api, order: &str) -> DemoResult<()> {
        println!("── order {order} ──");
        let events = api.get(&format!("/v1/events?order_id={order}&limit=500"))?;
        let mut items = events["items"].as_array().cloned().unwrap_or_default();
        items.reverse();
        for event in &items {
            for d in event["decisions"].as_array().into_iter().flatten() {
                let actions = d["detail"]["actions"].as_array().map_or(0, Vec::len);
                println!(
                    "  {:<20} {} → {} ({} actions, {} instructions, {} µs)",
                    event["kind"].as_str().unwrap_or("?"),
                    d["plugin"].as_str().unwrap_or("?"),
                    d["outcome"].as_str().unwrap_or("?"),
                    actions,
                    d["fuel"],
                    d["duration_us"]
                );
            }
        }
        let messages = api.get(&format!("/v1/messages?order_id={order}&limit=500"))?;
        let mut messages = messages["items"].as_array().cloned().unwrap_or_default();
        messages.reverse();
        for m in &messages {
            let reason = m["status_reason"]
                .as_str()
                .map(|r| format!(" — {r}"))
                .unwrap_or_default();
            println!(
                "  message {:<24} {:<9} {:<10} at {}{reason}",
                m["template"].as_str().unwrap_or("?"),
                m["channel"].as_str().unwrap_or("?"),
                m["status"].as_str().unwrap_or("?"),
                m["send_at"].as_str().unwrap_or("?"),
            );
        }
        let escalations = api.get(&format!("/v1/escalations?order_id={order}"))?;
        for e in escalations["items"].as_array().into_iter().flatten() {
            println!(
                "  escalation {} [{}] {} (tier {}, {}): {}",
                e["queue"].as_str().unwrap_or("?"),
                e["priority"].as_str().unwrap_or("?"),
                e["status"].as_str().unwrap_or("?"),
                e["tier"],
                e["next_tier_at"]
                    .as_str()
                    .map_or("no timer".to_owned(), |t| format!("next tier at {t}")),
                e["reason"].as_str().unwrap_or("?").replace('\n', "; ")
            );
        }
        println!();
        Ok(())
    }
}
