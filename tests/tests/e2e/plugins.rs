//! The bundled plugins under the real runtime and limits.

use serde_json::json;
use tidings_sdk::action::Action;
use tidings_sdk::types::{Channel, EventKind};
use tidings_tests::{TestHost, event, guests};

#[test]
fn every_bundled_plugin_decides_every_sample_event_within_limits() {
    let host = TestHost::new().build();
    for path in [
        guests::STANDARD_LIFECYCLE,
        guests::VIP_CONCIERGE,
        guests::CONFIGURABLE,
    ] {
        let plugin = host.load(path);
        for kind in EventKind::ALL {
            let decision = host
                .decide(&plugin, &event(kind), json!({}))
                .unwrap_or_else(|e| panic!("{} on {kind}: {e}", plugin.id()));
            assert!(
                decision.outcome.is_ok(),
                "{} on {kind}: {:?}",
                plugin.id(),
                decision.outcome
            );
            assert!(
                decision.usage.fuel < 2_000_000,
                "{} on {kind} used {} fuel",
                plugin.id(),
                decision.usage.fuel
            );
            // Linked with a 128 KiB stack (`plugins/build.rs`): the
            // instance is 256 KiB, not the 1.1 MiB of Rust's default stack.
            assert!(
                decision.usage.peak_memory_bytes <= 256 << 10,
                "{} on {kind} peaked at {} bytes of memory",
                plugin.id(),
                decision.usage.peak_memory_bytes
            );
        }
    }
}

#[test]
fn standard_lifecycle_sends_the_shipping_notice_with_tracking() {
    let host = TestHost::new().build();
    let plugin = host.load(guests::STANDARD_LIFECYCLE);
    let decision = host
        .decide(&plugin, &event(EventKind::ShipmentCreated), json!({}))
        .expect("decides");
    let actions = decision.outcome.expect("actions");
    let notice = actions
        .iter()
        .find_map(|a| a.message().filter(|n| n.template == "order-shipped"))
        .expect("a shipping notice");
    assert_eq!(notice.channel, Channel::Email);
    assert_eq!(
        notice.data["tracking_url"],
        "https://tracking.example.com/BRT123456789IT"
    );
    assert!(notice.dedupe_key.is_some());
}

#[test]
fn standard_lifecycle_escalates_a_delayed_vip_order() {
    let host = TestHost::new().build();
    let plugin = host.load(guests::STANDARD_LIFECYCLE);
    let vip = tidings_sdk::testing::event(EventKind::DeliveryDelayed)
        .customer_tag("vip")
        .build();
    let actions = host
        .decide(&plugin, &vip, json!({}))
        .expect("decides")
        .outcome
        .expect("actions");
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Escalate(e) if e.queue == "vip-care")),
        "{actions:?}"
    );
}

#[test]
fn configurable_rejects_an_invalid_config_with_a_rule_error() {
    let host = TestHost::new().build();
    let plugin = host.load(guests::CONFIGURABLE);
    let decision = host
        .decide(
            &plugin,
            &event(EventKind::OrderCreated),
            json!({"no_such_setting": true}),
        )
        .expect("a rule error is not a fault");
    let err = decision.outcome.expect_err("invalid config");
    assert_eq!(err.code, "invalid-config");
}

/// Every default template of standard-lifecycle, in every locale, renders
/// with the host's render stage (strict undefined, the layout, the fuel
/// limit) against the fixture events that make the plugin ask for it, with
/// the variables the plugin gives it. A typo in one locale fails here.
#[test]
fn every_default_template_renders_in_every_locale_for_the_events_that_use_it() {
    use std::collections::{BTreeMap, BTreeSet};
    use tidings_host::render::{self, RenderRequest, ShopInfo, TemplateSet};
    use tidings_sdk::types::{Context, SentNotification};

    const LOCALES: [&str; 6] = ["en", "it", "fr", "es", "cs", "ro"];
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/standard-lifecycle/templates");
    let mut templates = TemplateSet::new();
    let mut names: BTreeSet<(String, Channel)> = BTreeSet::new();
    for locale in LOCALES {
        for file in std::fs::read_dir(dir.join(locale))
            .expect("locale dir")
            .flatten()
        {
            let file_name = file.file_name().to_string_lossy().into_owned();
            let Some(stem) = file_name.strip_suffix(".jinja") else {
                continue;
            };
            let (name, channel) = stem.rsplit_once('.').expect("name.channel.jinja");
            let channel: Channel = serde_json::from_value(json!(channel)).expect("a channel name");
            let source = std::fs::read_to_string(file.path()).expect("read");
            let parts = render::parse_parts(&source)
                .unwrap_or_else(|e| panic!("{locale}/{file_name}: {e}"));
            if name != render::LAYOUT {
                names.insert((name.to_owned(), channel));
            }
            templates.insert((name.to_owned(), channel, locale.to_owned()), parts);
        }
    }
    for locale in LOCALES {
        for (name, channel) in &names {
            assert!(
                templates.contains_key(&(name.clone(), *channel, locale.to_owned())),
                "{locale} lacks {name}.{channel:?}"
            );
        }
    }

    // What the plugin asks for on each sample event: as it is, with a
    // customer who consents to everything (SMS templates need it), and with
    // an order awaiting payment (after its awaiting-payment notice).
    let host = TestHost::new().build();
    let plugin = host.load(guests::STANDARD_LIFECYCLE);
    let limits = host.runtime.default_limits().clone();
    let mut uses = Vec::new();
    for kind in EventKind::ALL {
        let plain = event(kind);
        let mut consenting = event(kind);
        let customer = &mut consenting.order.customer;
        customer.consents = vec![Channel::Email, Channel::Sms];
        customer.channel_opt_outs.clear();
        customer.has_email = true;
        customer.has_phone = true;
        customer
            .phone
            .get_or_insert_with(|| "+39 333 000 0000".into());
        let mut awaiting = event(kind);
        awaiting
            .attributes
            .insert("payment_status".into(), "pending".into());
        for e in [plain, consenting, awaiting] {
            let mut ctx = Context::new("test-shop", e.occurred_at);
            ctx.history.push(SentNotification {
                template: "order-awaiting-payment".into(),
                channel: Channel::Email,
                at: e.order.created_at,
            });
            for ctx in [Context::new("test-shop", e.occurred_at), ctx] {
                let decision = host
                    .runtime
                    .evaluate(&plugin, &e, &ctx, &limits)
                    .expect("decides");
                for action in decision.outcome.expect("actions") {
                    if let Some(notify) = action.message() {
                        uses.push((e.clone(), notify.clone()));
                    }
                }
            }
        }
    }
    let used: BTreeSet<(String, Channel)> = uses
        .iter()
        .map(|(_, n)| (n.template.clone(), n.channel))
        .collect();
    let unused: Vec<_> = names.difference(&used).collect();
    assert!(
        unused.is_empty(),
        "no sample event makes the plugin use {unused:?}"
    );

    let shop = ShopInfo {
        name: "Bottega".into(),
        url: "https://bottega.example".into(),
        support_email: "help@bottega.example".into(),
    };
    let now = "2026-11-23T10:00:00Z".parse().expect("a timestamp");
    let mut rendered = 0;
    for (e, notify) in &uses {
        for locale in LOCALES {
            let data: BTreeMap<String, String> = notify.data.clone();
            let request = RenderRequest {
                template: &notify.template,
                channel: notify.channel,
                locale: Some(locale),
                tenant_default_locale: "en",
                event: e,
                data: &data,
                shop: &shop,
                now,
                fuel: render::DEFAULT_FUEL,
            };
            let out = render::render(&templates, &request).unwrap_or_else(|err| {
                panic!(
                    "{locale}/{}.{:?} on {}: {err}",
                    notify.template, notify.channel, e.kind
                )
            });
            assert_eq!(out.locale, locale, "{} fell back", notify.template);
            assert!(!out.text.trim().is_empty());
            if notify.channel == Channel::Email {
                let html = out.html.as_deref().expect("emails have html");
                assert!(
                    html.contains(&format!("lang=\"{locale}\"")),
                    "{locale}/{}: the layout of the locale is used",
                    notify.template
                );
            }
            rendered += 1;
        }
    }
    assert!(rendered >= names.len() * LOCALES.len());
}
