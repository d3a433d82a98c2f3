//! The `schedule` stage: durable jobs, leased by workers.
//!
//! Events and messages are rows, not tasks in memory. The event worker
//! leases received events and runs them through the pipeline; the message
//! worker leases messages whose `send_at` has come, renders and dispatches
//! them, and settles them (`sent`, `failed`, `cancelled`). A lease that
//! expires — the process died mid-way — makes the job available again, so a
//! restart loses nothing. Delivery is at-least-once: a process killed after
//! the transport accepted a message but before it was marked sent will send
//! it again after the lease expires, with the same message id.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tidings_sdk::action::Timing;
use tidings_sdk::types::{Category, Channel, OrderEvent, Timestamp};
use tokio::sync::Notify;

use crate::dispatch::{Outbound, Transport};
use crate::pipeline::{Pipeline, PipelineError, parse_enum};
use crate::render::{self, Rendered, TemplateParts, TemplateSet};
use crate::store::{AuditEntry, EventRow, LeaseRoom, MessageRow, Writes};

/// How long a worker owns a leased job before others may take it, unless
/// the service is configured otherwise (`--lease-secs`).
pub const LEASE: Duration = Duration::from_secs(60);
/// How often idle workers look for due work.
pub const POLL: Duration = Duration::from_millis(250);

/// When a timing asks for a message, never before `now`.
pub fn send_at(timing: &Timing, now: Timestamp) -> Timestamp {
    match timing {
        Timing::Now => now,
        Timing::After { seconds } => {
            let seconds = i64::try_from(*seconds).unwrap_or(i64::MAX);
            now.checked_add(jiff::SignedDuration::from_secs(seconds))
                .unwrap_or(Timestamp::MAX)
        }
        Timing::At { at } => (*at).max(now),
    }
}

/// Wakes the workers early when new work arrives.
#[derive(Debug, Default)]
pub struct Wakeups {
    /// New events were stored.
    pub events: Notify,
    /// New messages may be due.
    pub messages: Notify,
}

/// Runs the event worker until the process stops.
pub async fn run_event_worker(pipeline: Pipeline, wake: Arc<Wakeups>) {
    loop {
        match process_some_events(&pipeline, &wake).await {
            Ok(0) => {
                let _ = tokio::time::timeout(POLL, wake.events.notified()).await;
            }
            Ok(_) => {}
            Err(err) => {
                tracing::error!(error = %err, "event worker failed; retrying");
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

/// Lease and process one batch of events; returns how many. Events of the
/// same order are processed in order; different orders run concurrently.
pub async fn process_some_events(
    pipeline: &Pipeline,
    wake: &Wakeups,
) -> Result<usize, PipelineError> {
    let rows = pipeline.store.lease_events(64, pipeline.lease_ms()).await?;
    let count = rows.len();
    let mut by_order: Vec<(String, Vec<_>)> = Vec::new();
    for row in rows {
        let key = format!("{}/{}", row.tenant_id, row.order_id);
        match by_order.iter_mut().find(|(k, _)| *k == key) {
            Some((_, group)) => group.push(row),
            None => by_order.push((key, vec![row])),
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (_, group) in by_order {
        let pipeline = pipeline.clone();
        tasks.spawn(async move {
            for row in group {
                if let Err(err) = pipeline.process_event(&row).await {
                    tracing::error!(event = %row.id, error = %err, "event processing failed");
                    let _ = pipeline.store.finish_event(&row.id, "failed").await;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    if count > 0 {
        wake.messages.notify_one();
    }
    Ok(count)
}

/// How many messages one worker delivers at once (from rendering to storing
/// the outcome).
pub const CONCURRENCY: usize = 32;
/// How many of those may be at one tenant's channel's transport at once: a
/// provider that hangs or a slow webhook endpoint holds at most this many
/// slots, so other tenants and channels keep moving.
pub const PER_DESTINATION: usize = 8;

/// Runs the message worker until the process stops: leases due messages
/// while it has free slots, no more for one destination (tenant and
/// channel) than [`PER_DESTINATION`] at a time, and delivers them
/// concurrently.
pub async fn run_message_worker(
    pipeline: Pipeline,
    transport: Arc<dyn Transport>,
    wake: Arc<Wakeups>,
    owner: String,
) {
    // Messages in flight by destination; only this loop adds to it.
    let busy: Arc<Busy> = Arc::default();
    // Notified when a destination has room again.
    let room_made = Arc::new(Notify::new());
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let free = CONCURRENCY.saturating_sub(tasks.len());
        if free == 0 {
            let _ = tasks.join_next().await;
            continue;
        }
        let in_flight: Vec<(String, String, i64)> = busy
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, count)| **count > 0)
            .map(|((tenant, channel), count)| {
                let room = PER_DESTINATION.saturating_sub(*count) as i64;
                (tenant.clone(), channel.clone(), room)
            })
            .collect();
        let room = LeaseRoom {
            limit: free as i64,
            per_destination: PER_DESTINATION as i64,
            busy: &in_flight,
        };
        let now = pipeline.now().as_millisecond();
        let leased = pipeline
            .store
            .lease_messages(&owner, now, pipeline.lease_ms(), &room)
            .await;
        let leased = match leased {
            Ok(leased) => leased,
            Err(err) => {
                tracing::error!(error = %err, "message worker failed; retrying");
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        // Unless this lease took its limit or filled a destination (the next
        // lease skips that one's messages and looks further), it took all
        // that was due and had room: lease again only when that changes.
        let all_taken = leased.len() < free && !fills_a_destination(&leased, &room);
        if leased.is_empty() {
            wait_for_work(&mut tasks, &room_made, &wake).await;
            continue;
        }
        // The events the messages render from, read in one query.
        let ids: Vec<&str> = leased.iter().map(|m| m.event_id.as_str()).collect();
        let mut events: HashMap<String, EventRow> = match pipeline.store.events_by_id(&ids).await {
            Ok(rows) => rows.into_iter().map(|r| (r.id.clone(), r)).collect(),
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the events of leased messages; each reads its own");
                HashMap::new()
            }
        };
        for m in leased {
            let event = events.remove(&m.event_id);
            let slot = Slot::take(&busy, &room_made, &m);
            let (pipeline, transport) = (pipeline.clone(), transport.clone());
            tasks.spawn(async move {
                let event = match event {
                    Some(event) => Ok(Some(event)),
                    // Not in the batch's read.
                    None => pipeline.store.event(&m.tenant_id, &m.event_id).await,
                };
                let delivered = match event {
                    Ok(event) => deliver_with(&pipeline, transport.as_ref(), &m, event, Some(slot)).await,
                    Err(err) => Err(err.into()),
                };
                if let Err(err) = delivered {
                    tracing::error!(message = %m.id, error = %err, "delivery failed; the lease will expire and it is retried");
                }
            });
        }
        if all_taken {
            wait_for_work(&mut tasks, &room_made, &wake).await;
        }
    }
}

/// Whether `leased` takes all the room `room` gave one of its destinations.
fn fills_a_destination(leased: &[MessageRow], room: &LeaseRoom<'_>) -> bool {
    leased.iter().any(|m| {
        let is_its = |tenant: &str, channel: &str| tenant == m.tenant_id && channel == m.channel;
        let taken = leased
            .iter()
            .filter(|o| is_its(&o.tenant_id, &o.channel))
            .count() as i64;
        let room = room
            .busy
            .iter()
            .find(|(tenant, channel, _)| is_its(tenant, channel))
            .map_or(room.per_destination, |(_, _, room)| *room);
        taken >= room
    })
}

/// Wait until a delivery makes room, new messages may be due, or [`POLL`].
async fn wait_for_work(tasks: &mut tokio::task::JoinSet<()>, room_made: &Notify, wake: &Wakeups) {
    tokio::select! {
        _ = tasks.join_next(), if !tasks.is_empty() => {}
        _ = room_made.notified() => {}
        _ = tokio::time::timeout(POLL, wake.messages.notified()) => {}
    }
}

/// Messages in flight by destination (tenant, channel).
#[derive(Debug, Default)]
struct Busy(std::sync::Mutex<HashMap<(String, String), usize>>);

/// A message's place among its destination's [`PER_DESTINATION`]: taken
/// when it is leased, given back as soon as the transport has answered
/// (storing the outcome is the host's own work, not the destination's).
struct Slot {
    busy: Arc<Busy>,
    room_made: Arc<Notify>,
    destination: (String, String),
}

impl Slot {
    fn take(busy: &Arc<Busy>, room_made: &Arc<Notify>, m: &MessageRow) -> Self {
        let destination = (m.tenant_id.clone(), m.channel.clone());
        *busy
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(destination.clone())
            .or_default() += 1;
        Self {
            busy: busy.clone(),
            room_made: room_made.clone(),
            destination,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut busy = self.busy.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = busy.get_mut(&self.destination) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                busy.remove(&self.destination);
            }
        }
        drop(busy);
        self.room_made.notify_one();
    }
}

/// Lease the due messages and deliver them; returns how many.
pub async fn deliver_due(
    pipeline: &Pipeline,
    transport: &dyn Transport,
    owner: &str,
) -> Result<usize, PipelineError> {
    let leased = pipeline
        .store
        .lease_due_messages(
            owner,
            pipeline.now().as_millisecond(),
            32,
            pipeline.lease_ms(),
        )
        .await?;
    let count = leased.len();
    for message in leased {
        deliver(pipeline, transport, &message).await?;
    }
    Ok(count)
}

/// Render and dispatch one leased message, and settle it.
pub async fn deliver(
    pipeline: &Pipeline,
    transport: &dyn Transport,
    m: &MessageRow,
) -> Result<(), PipelineError> {
    let event = pipeline.store.event(&m.tenant_id, &m.event_id).await?;
    deliver_with(pipeline, transport, m, event, None).await
}

/// [`deliver`], with the message's event already read (`None`: missing);
/// `slot` is given back when the transport has answered.
async fn deliver_with(
    pipeline: &Pipeline,
    transport: &dyn Transport,
    m: &MessageRow,
    event_row: Option<EventRow>,
    slot: Option<Slot>,
) -> Result<(), PipelineError> {
    let store = &pipeline.store;
    if let Some(key) = &m.cancel_key
        && store.is_cancelled(&m.tenant_id, key).await?
    {
        let reason = format!("cancelled by key {key}");
        store
            .settle_message(m, "cancelled", Some(&reason), None, None)
            .await?;
        pipeline.metrics.inc(
            "tidings_messages_total",
            &[
                ("tenant", &m.tenant_id),
                ("channel", &m.channel),
                ("status", "cancelled"),
            ],
        );
        return audit(
            pipeline,
            m,
            "schedule",
            "cancelled",
            json!({ "cancel_key": key }),
        )
        .await;
    }
    let (_, settings) = pipeline.tenant_cached(&m.tenant_id).await?;
    let event: Option<OrderEvent> = event_row
        .filter(|r| r.tenant_id == m.tenant_id)
        .and_then(|r| serde_json::from_str(&r.body).ok());
    let Some(event) = event else {
        return fail(pipeline, m, "the event of this message is missing").await;
    };
    let Some(channel) = parse_enum::<Channel>(&m.channel) else {
        return fail(pipeline, m, &format!("unknown channel {}", m.channel)).await;
    };

    let rendered = if m.approved_by.is_some() {
        // Approved after it was held: send what the agent approved, but only
        // if policy still allows it (consent may have changed meanwhile).
        if let Some(held) = recheck_policy(pipeline, m, &event, &settings).await? {
            return Ok(held);
        }
        match m
            .rendered
            .as_deref()
            .and_then(|r| serde_json::from_str::<Rendered>(r).ok())
        {
            Some(rendered) => rendered,
            None => return fail(pipeline, m, "the approved rendering is missing").await,
        }
    } else {
        match render_message(pipeline, m, &event, &settings).await? {
            Ok(rendered) => rendered,
            Err(err) => return fail(pipeline, m, &format!("render: {err}")).await,
        }
    };
    let rendered_json = serde_json::to_string(&rendered).expect("rendered messages serialise");
    // Stored with the outcome of the hand-off, in one transaction.
    let mut writes = Writes::default();
    writes.audit(entry(
        m,
        "render",
        "rendered",
        json!({ "template": m.template, "locale": rendered.locale, "approved_by": m.approved_by }),
    ));

    let customer = &event.order.customer;
    let to = match (&m.recipient, channel) {
        (Some(recipient), _) => Some(recipient.as_str()),
        (None, Channel::Email) => customer.email.as_deref(),
        (None, Channel::Sms | Channel::Whatsapp) => customer.phone.as_deref(),
        (None, Channel::Push | Channel::Webhook) => None,
    };
    let (from, reply_to) = (settings.email_from(), settings.email_reply_to());
    let channels = pipeline.channel_settings(&m.tenant_id).await?;
    // Agent notifications go to the address their tier names; the tenant's
    // customer endpoints and accounts are for customers.
    let customer_facing = m.recipient.is_none();
    let outbound = Outbound {
        id: &m.id,
        tenant_id: &m.tenant_id,
        channel,
        to,
        customer_id: &m.customer_id,
        from: &from,
        reply_to: &reply_to,
        category: parse_enum(&m.category).unwrap_or(Category::Transactional),
        rendered: &rendered,
        dkim: channels.email.as_ref().and_then(|e| e.dkim.as_ref()),
        twilio: channels.twilio(channel),
        endpoint: channels.endpoint(channel).filter(|_| customer_facing),
    };
    let sent = transport.send(&outbound).await;
    drop(slot);
    match sent {
        Ok(receipt) => {
            writes.sent(
                m,
                &rendered_json,
                &receipt.transport_id,
                receipt.provider_id.as_deref(),
            );
            pipeline.metrics.inc(
                "tidings_messages_total",
                &[
                    ("tenant", &m.tenant_id),
                    ("channel", &m.channel),
                    ("status", "sent"),
                ],
            );
            writes.audit(entry(
                m,
                "dispatch",
                "sent",
                json!({ "transport_id": receipt.transport_id }),
            ));
            store.commit(writes).await?;
            Ok(())
        }
        Err(err) => {
            store.commit(writes).await?;
            let reason = format!("dispatch: {err}");
            let attempt_number = m.attempts + 1;
            let retry = &settings.delivery.retry;
            if err.is_transient() && attempt_number < i64::from(retry.max_attempts) {
                let delay = retry.delay(
                    u32::try_from(attempt_number).unwrap_or(u32::MAX),
                    rand::random::<f64>(),
                );
                let at = pipeline
                    .now()
                    .as_millisecond()
                    .saturating_add(delay.as_millis() as i64);
                store
                    .retry_message(m, at, &reason, Some(&rendered_json))
                    .await?;
                return audit(
                    pipeline,
                    m,
                    "dispatch",
                    "retry",
                    json!({ "error": err.to_string(), "attempt": attempt_number, "next_attempt_at": crate::http::rfc3339(at) }),
                )
                .await;
            }
            // Permanent, or out of attempts: the next fallback channel if
            // the plugin gave one, else a dead letter, kept with every
            // attempt, retried only by hand (`POST /v1/messages/{id}/retry`).
            if fall_back(pipeline, m, &event, &settings, &reason).await? {
                return Ok(());
            }
            let status = "dead";
            store
                .settle_message(
                    m,
                    status,
                    Some(&reason),
                    Some(&rendered_json),
                    Some(("failed", reason.as_str())),
                )
                .await?;
            pipeline.metrics.inc(
                "tidings_messages_total",
                &[
                    ("tenant", &m.tenant_id),
                    ("channel", &m.channel),
                    ("status", status),
                ],
            );
            audit(
                pipeline,
                m,
                "dispatch",
                "dead",
                json!({ "error": err.to_string(), "transient": err.is_transient(), "attempts": attempt_number }),
            )
            .await?;
            report_failure(pipeline, m, &reason).await
        }
    }
}

async fn fail(pipeline: &Pipeline, m: &MessageRow, reason: &str) -> Result<(), PipelineError> {
    pipeline
        .store
        .settle_message(m, "failed", Some(reason), None, None)
        .await?;
    pipeline.metrics.inc(
        "tidings_messages_total",
        &[
            ("tenant", &m.tenant_id),
            ("channel", &m.channel),
            ("status", "failed"),
        ],
    );
    audit(pipeline, m, "render", "failed", json!({ "reason": reason })).await?;
    report_failure(pipeline, m, reason).await
}

/// After `m` failed for good on its channel: move it to the next fallback
/// channel that policy allows now (consent, suppression, quiet hours — a
/// deferral keeps it on that channel until the window ends). Returns whether
/// it moved; `false` when no fallback is left or none is allowed.
async fn fall_back(
    pipeline: &Pipeline,
    m: &MessageRow,
    event: &OrderEvent,
    settings: &crate::settings::TenantSettings,
    reason: &str,
) -> Result<bool, PipelineError> {
    let remaining: Vec<Channel> = serde_json::from_str(&m.fallback_channels).unwrap_or_default();
    let Some((&next, rest)) = remaining.split_first() else {
        return Ok(false);
    };
    let notify = resend(m, next, rest.to_vec());
    let now = pipeline.now();
    let (verdict, _) = pipeline
        .verdict(&m.tenant_id, event, settings, &notify, now)
        .await?;
    let (channel, at) = match verdict.outcome {
        crate::policy::Outcome::Send { channel, at } => (channel, at),
        crate::policy::Outcome::Defer { channel, until, .. } => (channel, until),
        crate::policy::Outcome::Suppress(why) => {
            audit(
                pipeline,
                m,
                "dispatch",
                "no_fallback",
                json!({ "from": m.channel, "error": reason, "fallbacks": remaining, "policy": why.to_string() }),
            )
            .await?;
            return Ok(false);
        }
    };
    let after = crate::pipeline::remaining_fallbacks(&notify, channel);
    let name = crate::pipeline::enum_str(&channel);
    pipeline
        .store
        .fall_back(
            m,
            &name,
            &serde_json::to_string(&after).expect("channels serialise"),
            at.as_millisecond(),
            reason,
        )
        .await?;
    audit(
        pipeline,
        m,
        "dispatch",
        "fallback",
        json!({ "from": m.channel, "to": name, "error": reason, "send_at": at }),
    )
    .await?;
    pipeline.wake_messages();
    Ok(true)
}

/// The queue the host uses for messages that could not be delivered.
pub const DELIVERY_FAILURES_QUEUE: &str = "delivery-failures";

/// A customer message that failed for good opens (or joins) a ticket in
/// `delivery-failures`, so a human sees it. Agent notifications do not, so a
/// broken notification channel cannot feed itself.
async fn report_failure(
    pipeline: &Pipeline,
    m: &MessageRow,
    reason: &str,
) -> Result<(), PipelineError> {
    if m.recipient.is_some() {
        return Ok(());
    }
    let Some(row) = pipeline.store.event(&m.tenant_id, &m.event_id).await? else {
        return Ok(());
    };
    let (_, settings) = pipeline.tenant_cached(&m.tenant_id).await?;
    let reason = format!(
        "message {} ({} via {}) failed: {reason}",
        m.id, m.template, m.channel
    );
    crate::escalation::open(
        pipeline,
        &row,
        &settings,
        &crate::escalation::Opening {
            queue: DELIVERY_FAILURES_QUEUE,
            priority: "normal",
            reason: &reason,
            sla_minutes: None,
            decision_id: None,
            message_id: None,
        },
    )
    .await?;
    Ok(())
}

async fn audit(
    pipeline: &Pipeline,
    m: &MessageRow,
    stage: &str,
    action: &str,
    detail: serde_json::Value,
) -> Result<(), PipelineError> {
    pipeline
        .store
        .audit(entry(m, stage, action, detail))
        .await?;
    Ok(())
}

/// An audit entry by the system about message `m`.
fn entry<'a>(
    m: &'a MessageRow,
    stage: &'a str,
    action: &'a str,
    detail: serde_json::Value,
) -> AuditEntry<'a> {
    AuditEntry {
        tenant_id: &m.tenant_id,
        order_id: Some(&m.order_id),
        event_id: Some(&m.event_id),
        message_id: Some(&m.id),
        stage,
        action,
        actor: "system",
        detail,
    }
}

/// Render `m` with the tenant's templates: `Ok(Err(_))` is a render failure
/// (the message's fault), `Err(_)` a pipeline failure.
pub async fn render_message(
    pipeline: &Pipeline,
    m: &MessageRow,
    event: &OrderEvent,
    settings: &crate::settings::TenantSettings,
) -> Result<Result<Rendered, render::RenderError>, PipelineError> {
    let (tenant, _) = pipeline.tenant_cached(&m.tenant_id).await?;
    let Some(channel) = parse_enum::<Channel>(&m.channel) else {
        return Ok(Err(render::RenderError::MissingPart { part: "channel" }));
    };
    let mut templates = TemplateSet::new();
    for t in pipeline
        .store
        .templates_for_cached(&m.tenant_id, &m.template, &m.channel)
        .await?
    {
        if let Some(c) = parse_enum::<Channel>(&t.channel) {
            templates.insert(
                (t.name, c, t.locale),
                TemplateParts {
                    subject: t.subject,
                    text: t.text,
                    html: t.html,
                },
            );
        }
    }
    crate::escalation::add_builtin_templates(&mut templates, m);
    let data = serde_json::from_str(&m.data).unwrap_or_default();
    let shop = settings.shop.info();
    let request = render::RenderRequest {
        template: &m.template,
        channel,
        locale: m.locale.as_deref(),
        tenant_default_locale: &tenant.default_locale,
        event,
        data: &data,
        shop: &shop,
        now: pipeline.now(),
        fuel: render::DEFAULT_FUEL,
    };
    Ok(pipeline.templates.render(&templates, &request))
}

/// `m` as a notice to send now on `channel`, for policy to judge again at
/// send time (its dedupe key was already accepted, so it is left out).
fn resend(
    m: &MessageRow,
    channel: Channel,
    fallback_channels: Vec<Channel>,
) -> tidings_sdk::action::Notify {
    tidings_sdk::action::Notify {
        channel,
        template: m.template.clone(),
        locale: m.locale.clone(),
        timing: Timing::Now,
        category: parse_enum(&m.category).unwrap_or(Category::Transactional),
        priority: parse_enum(&m.priority).unwrap_or_default(),
        dedupe_key: None,
        cancel_key: m.cancel_key.clone(),
        fallback_channels,
        data: Default::default(),
    }
}

/// Policy again for an approved message. Returns `Some(())` when the message
/// was settled (suppressed) or deferred instead of sent.
async fn recheck_policy(
    pipeline: &Pipeline,
    m: &MessageRow,
    event: &OrderEvent,
    settings: &crate::settings::TenantSettings,
) -> Result<Option<()>, PipelineError> {
    let Some(channel) = parse_enum::<Channel>(&m.channel) else {
        return Ok(None);
    };
    let notify = resend(m, channel, Vec::new());
    let now = pipeline.now();
    // The newest event of the order carries the customer's current consents.
    let latest = pipeline
        .store
        .order_events(&m.tenant_id, &m.order_id)
        .await?;
    let latest: Option<OrderEvent> = latest
        .last()
        .and_then(|r| serde_json::from_str(&r.body).ok());
    let event = latest.as_ref().unwrap_or(event);
    let (verdict, _) = pipeline
        .verdict(&m.tenant_id, event, settings, &notify, now)
        .await?;
    match verdict.outcome {
        crate::policy::Outcome::Send { channel: c, .. } if c == channel => Ok(None),
        crate::policy::Outcome::Send { .. } => {
            fail(
                pipeline,
                m,
                "the approved channel is no longer allowed for this customer",
            )
            .await?;
            Ok(Some(()))
        }
        crate::policy::Outcome::Defer { until, reason, .. } => {
            pipeline
                .store
                .defer_message(&m.id, until.as_millisecond(), &reason.to_string())
                .await?;
            audit(
                pipeline,
                m,
                "policy",
                "defer",
                json!({ "reason": reason.to_string(), "until": until }),
            )
            .await?;
            Ok(Some(()))
        }
        crate::policy::Outcome::Suppress(reason) => {
            let text = reason.to_string();
            pipeline
                .store
                .settle_message(m, "suppressed", Some(&text), None, None)
                .await?;
            audit(
                pipeline,
                m,
                "policy",
                "suppress",
                json!({ "reason": text, "after": "approval" }),
            )
            .await?;
            Ok(Some(()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_resolve_against_now_and_never_into_the_past() {
        let now: Timestamp = "2026-11-23T10:00:00Z".parse().expect("valid");
        assert_eq!(send_at(&Timing::Now, now), now);
        assert_eq!(
            send_at(&Timing::After { seconds: 3_600 }, now),
            "2026-11-23T11:00:00Z".parse::<Timestamp>().expect("valid")
        );
        let past: Timestamp = "2026-11-01T00:00:00Z".parse().expect("valid");
        assert_eq!(send_at(&Timing::At { at: past }, now), now);
    }
}
