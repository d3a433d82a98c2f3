//! The `escalation` stage: tickets for humans, their SLA ladders, and
//! messages held for an agent's approval.
//!
//! In: `escalate` and `hold-for-approval` actions (and the host's own
//! `plugin-faults` and `delivery-failures` tickets), agent requests, and the
//! clock. Out: tickets that climb their queue's tiers — each tier notified
//! through the normal render + dispatch path with its own templates (the
//! tenant's, else the host's built-in ones) — until an agent acknowledges
//! them or the last tier's time runs out (`breached`); held messages that are
//! approved (optionally edited), rejected, or expire. Timers are columns
//! (`next_at` for the ladder, `expires_at` for a held message), so they
//! survive restarts: a ticket is opened with its first timer set and its
//! first tier's notifications in one transaction, and a due ticket is claimed
//! with a lease and moved up (timer re-armed, notifications inserted) in one
//! transaction, so a crash in between leaves it due again rather than lost.
//! Every step is audited with who did it. Fails with [`EscalationError`].

use serde_json::json;
use tidings_sdk::action::Notify;
use tidings_sdk::types::{Channel, OrderEvent, Timestamp};

use crate::pipeline::{Pipeline, PipelineError, enum_str};
use crate::render::{Rendered, TemplateParts, TemplateSet};
use crate::settings::{ExpiryAction, TenantSettings, Tier};
use crate::store::{
    AuditEntry, EscalationRow, EventRow, MessageRow, NewEscalation, NewMessage, StoreError,
};

/// Template for tier notifications of ordinary tickets.
pub const NOTICE_TEMPLATE: &str = "escalation-notice";
/// Template for tier notifications of approval tickets.
pub const APPROVAL_TEMPLATE: &str = "approval-request";

/// How long a worker holds a claimed ticket; if it dies before moving the
/// ticket on, the ticket is due again after this.
pub const CLAIM_LEASE_MS: i64 = 60_000;

/// The host's own agent templates (`host/templates/`), used when a tenant
/// has none of that name: (name, channel, locale, source).
const BUILTIN_TEMPLATES: &[(&str, Channel, &str, &str)] = &[
    (
        NOTICE_TEMPLATE,
        Channel::Email,
        "en",
        include_str!("../templates/en/escalation-notice.email.jinja"),
    ),
    (
        NOTICE_TEMPLATE,
        Channel::Webhook,
        "en",
        include_str!("../templates/en/escalation-notice.webhook.jinja"),
    ),
    (
        APPROVAL_TEMPLATE,
        Channel::Email,
        "en",
        include_str!("../templates/en/approval-request.email.jinja"),
    ),
    (
        APPROVAL_TEMPLATE,
        Channel::Webhook,
        "en",
        include_str!("../templates/en/approval-request.webhook.jinja"),
    ),
];

/// Add the host's built-in agent templates for `m` to `templates` when `m`
/// is an agent notification and the tenant has no template of its name on
/// its channel, so agents are always told; a tenant's own template wins.
pub fn add_builtin_templates(templates: &mut TemplateSet, m: &MessageRow) {
    if m.recipient.is_some() {
        add_builtin(templates, &m.template, &m.channel);
    }
}

fn add_builtin(templates: &mut TemplateSet, template: &str, channel: &str) {
    let mut builtin = BUILTIN_TEMPLATES
        .iter()
        .filter(|(name, c, _, _)| *name == template && enum_str(c) == channel)
        .peekable();
    let Some((_, channel, _, _)) = builtin.peek() else {
        return;
    };
    let channel = *channel;
    if templates
        .keys()
        .any(|(name, c, _)| name == template && *c == channel)
    {
        return;
    }
    for (name, c, locale, source) in builtin {
        templates.insert(
            ((*name).to_owned(), *c, (*locale).to_owned()),
            builtin_parts(source),
        );
    }
}

fn builtin_parts(source: &str) -> TemplateParts {
    crate::render::parse_parts(source).expect("the built-in templates parse (unit-tested)")
}

/// Why an agent request failed.
#[derive(Debug, thiserror::Error)]
pub enum EscalationError {
    /// No such ticket or held message for this tenant.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The ticket or message is no longer in a state that allows this.
    #[error("{0}")]
    Conflict(String),
    /// An edit is unusable.
    #[error("field `{field}`: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The pipeline failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl From<StoreError> for EscalationError {
    fn from(e: StoreError) -> Self {
        Self::Pipeline(e.into())
    }
}

/// What opens a ticket.
#[derive(Debug, Clone)]
pub struct Opening<'a> {
    /// Queue.
    pub queue: &'a str,
    /// Priority name.
    pub priority: &'a str,
    /// Why.
    pub reason: &'a str,
    /// The action's SLA for the first tier, minutes.
    pub sla_minutes: Option<i64>,
    /// The decision that asked, if a plugin did.
    pub decision_id: Option<&'a str>,
    /// The held message, for approval tickets.
    pub message_id: Option<&'a str>,
}

fn tiers<'a>(settings: &'a TenantSettings, queue: &str) -> &'a [Tier] {
    settings
        .escalation
        .queues
        .get(queue)
        .map_or(&[], |q| q.tiers.as_slice())
}

fn after(now: Timestamp, minutes: i64) -> i64 {
    now.as_millisecond()
        .saturating_add(minutes.saturating_mul(60_000))
}

/// The ticket a tier notification is about.
struct About<'a> {
    id: &'a str,
    tenant_id: &'a str,
    event_id: &'a str,
    order_id: &'a str,
    queue: &'a str,
    priority: &'a str,
    reason: &'a str,
    approval: bool,
}

impl<'a> From<&'a EscalationRow> for About<'a> {
    fn from(t: &'a EscalationRow) -> Self {
        Self {
            id: &t.id,
            tenant_id: &t.tenant_id,
            event_id: &t.event_id,
            order_id: &t.order_id,
            queue: &t.queue,
            priority: &t.priority,
            reason: &t.reason,
            approval: t.message_id.is_some(),
        }
    }
}

/// Open a ticket for `row`'s order (merged into an open one of the same
/// queue), and start its ladder: the first tier is notified now, and the
/// ticket is due again when that tier's time (or the action's `sla_minutes`)
/// runs out. An approval ticket also expires `expire_minutes` from now.
pub async fn open(
    pipeline: &Pipeline,
    row: &EventRow,
    settings: &TenantSettings,
    opening: &Opening<'_>,
) -> Result<String, PipelineError> {
    let now = pipeline.now();
    let tiers = tiers(settings, opening.queue);
    let id = crate::store::new_id("esc");
    // Tier 1 has the action's SLA, else its own minutes; a held message
    // expires `expire_minutes` after it was held, whatever the tiers.
    let next_at = opening
        .sla_minutes
        .or(tiers.first().map(|t| i64::from(t.minutes)))
        .map(|m| after(now, m));
    let expires_at = opening
        .message_id
        .map(|_| after(now, i64::from(settings.escalation.approval.expire_minutes)));
    let about = About {
        id: &id,
        tenant_id: &row.tenant_id,
        event_id: &row.id,
        order_id: &row.order_id,
        queue: opening.queue,
        priority: opening.priority,
        reason: opening.reason,
        approval: opening.message_id.is_some(),
    };
    let notices = tiers
        .first()
        .map(|tier| notices(&about, 0, tier, now))
        .unwrap_or_default();
    let (ticket_id, new, notice_ids) = pipeline
        .store
        .open_escalation(
            &NewEscalation {
                tenant_id: &row.tenant_id,
                order_id: &row.order_id,
                event_id: &row.id,
                decision_id: opening.decision_id,
                queue: opening.queue,
                priority: opening.priority,
                reason: opening.reason,
                sla_minutes: opening.sla_minutes,
                message_id: opening.message_id,
                next_at,
                expires_at,
            },
            &id,
            &notices,
        )
        .await?;
    let detail = json!({ "ticket": ticket_id, "queue": opening.queue, "priority": opening.priority,
                         "reason": opening.reason, "sla_minutes": opening.sla_minutes });
    pipeline
        .audit(
            row,
            opening.message_id,
            "escalation",
            if new { "opened" } else { "merged" },
            "system",
            detail,
        )
        .await?;
    if new {
        audit_notices(
            pipeline,
            &about,
            opening.message_id,
            0,
            &notices,
            &notice_ids,
        )
        .await?;
    }
    Ok(ticket_id)
}

/// One tier's notifications: a message per agent address and one for the
/// webhook, rendered and dispatched like any other.
fn notices<'a>(
    ticket: &About<'a>,
    index: usize,
    tier: &Tier,
    now: Timestamp,
) -> Vec<NewMessage<'a>> {
    let template = if ticket.approval {
        APPROVAL_TEMPLATE
    } else {
        NOTICE_TEMPLATE
    };
    let data = json!({
        "ticket_id": ticket.id,
        "queue": ticket.queue,
        "priority": ticket.priority,
        "reason": ticket.reason,
        "tier": (index + 1).to_string(),
        "order_id": ticket.order_id,
    })
    .to_string();
    let mut recipients: Vec<(&str, &str)> =
        tier.emails.iter().map(|e| ("email", e.as_str())).collect();
    if let Some(url) = &tier.webhook_url {
        recipients.push(("webhook", url.as_str()));
    }
    recipients
        .into_iter()
        .map(|(channel, to)| NewMessage {
            tenant_id: ticket.tenant_id,
            event_id: ticket.event_id,
            decision_id: ticket.id,
            order_id: ticket.order_id,
            customer_id: "agent",
            channel: channel.to_owned(),
            template,
            locale: None,
            category: "transactional".to_owned(),
            priority: ticket.priority.to_owned(),
            dedupe_key: None,
            cancel_key: None,
            data: data.clone(),
            status: "scheduled",
            status_reason: Some("agent notification"),
            send_at: now.as_millisecond(),
            recipient: Some(to.to_owned()),
        })
        .collect()
}

/// Audit the notifications a tier step inserted, and wake the sender.
async fn audit_notices(
    pipeline: &Pipeline,
    ticket: &About<'_>,
    held: Option<&str>,
    index: usize,
    notices: &[NewMessage<'_>],
    ids: &[String],
) -> Result<(), PipelineError> {
    for (notice, id) in notices.iter().zip(ids) {
        audit_about(
            pipeline,
            ticket,
            Some(id.as_str()).or(held),
            "notified",
            "system",
            json!({ "tier": index + 1, "channel": notice.channel, "to": notice.recipient }),
        )
        .await?;
    }
    if !ids.is_empty() {
        pipeline.wake_messages();
    }
    Ok(())
}

async fn audit_about(
    pipeline: &Pipeline,
    ticket: &About<'_>,
    message_id: Option<&str>,
    action: &str,
    actor: &str,
    mut detail: serde_json::Value,
) -> Result<(), PipelineError> {
    detail["ticket"] = json!(ticket.id);
    detail["queue"] = json!(ticket.queue);
    pipeline
        .store
        .audit(AuditEntry {
            tenant_id: ticket.tenant_id,
            order_id: Some(ticket.order_id),
            event_id: Some(ticket.event_id),
            message_id,
            stage: "escalation",
            action,
            actor,
            detail,
        })
        .await?;
    Ok(())
}

async fn audit_ticket(
    pipeline: &Pipeline,
    ticket: &EscalationRow,
    message_id: Option<&str>,
    action: &str,
    actor: &str,
    detail: serde_json::Value,
) -> Result<(), PipelineError> {
    let message_id = message_id.or(ticket.message_id.as_deref());
    audit_about(pipeline, &ticket.into(), message_id, action, actor, detail).await
}

/// Move every ticket due by `now` along: when a tier's time ran out, notify
/// the next tier, or mark the ticket breached after the last; when a held
/// message expired, apply the tenant's `on_expiry` (reject it, or move its
/// ticket up a tier at once). Each ticket is claimed with a lease and moved
/// in one transaction with the notifications it sends, so it is notified
/// exactly once even if a worker dies midway. A ticket that fails is logged
/// and left to be claimed again when its lease runs out. Returns how many
/// were claimed.
pub async fn advance(pipeline: &Pipeline, now: Timestamp) -> Result<usize, PipelineError> {
    let lease_until = now.as_millisecond().saturating_add(CLAIM_LEASE_MS);
    let due = pipeline
        .store
        .claim_due_escalations(now.as_millisecond(), lease_until, 100)
        .await?;
    for ticket in &due {
        if let Err(err) = step(pipeline, ticket, now, lease_until).await {
            tracing::error!(ticket = %ticket.id, error = %err, "escalation step failed; retried after the lease");
        }
    }
    Ok(due.len())
}

/// Move one claimed ticket along.
async fn step(
    pipeline: &Pipeline,
    ticket: &EscalationRow,
    now: Timestamp,
    lease_until: i64,
) -> Result<(), PipelineError> {
    let store = &pipeline.store;
    let (_, settings) = pipeline.tenant(&ticket.tenant_id).await?;
    let now_ms = now.as_millisecond();
    let expired = ticket.expires_at.is_some_and(|at| at <= now_ms);
    let ladder_due = ticket.status == "open" && ticket.next_at.is_some_and(|at| at <= now_ms);

    if let Some(message_id) = &ticket.message_id {
        let held = store
            .message(&ticket.tenant_id, message_id)
            .await?
            .is_some_and(|m| m.status == "held");
        let reject = expired && settings.escalation.approval.on_expiry == ExpiryAction::Reject;
        if !held || reject {
            // Expired with `on_expiry: reject`, or the message was dealt
            // with but its ticket left open: the ticket is done.
            if let Some(rejected) = store
                .expire_approval(ticket, lease_until, message_id, "approval expired")
                .await?
            {
                let (action, then) = if rejected {
                    ("expired", "rejected")
                } else {
                    ("resolved", "the message is no longer held")
                };
                audit_ticket(
                    pipeline,
                    ticket,
                    None,
                    action,
                    "system",
                    json!({ "then": then }),
                )
                .await?;
            }
            return Ok(());
        }
    }

    // The expiry is used up once it fired; the ladder's own timer stays.
    let expires_at = if expired { None } else { ticket.expires_at };
    if !ladder_due && (ticket.status != "open" || ticket.breached != 0) {
        // An expiry with nowhere to escalate to: the ticket is acknowledged
        // (its ladder stopped) or already breached.
        let next = EscalationRow {
            expires_at,
            ..ticket.clone()
        };
        let done = store
            .step_escalation(ticket, lease_until, &next, &[])
            .await?;
        if done.is_some() && expired {
            let then = if ticket.status == "open" {
                "already breached"
            } else {
                "acknowledged, not escalated"
            };
            audit_ticket(
                pipeline,
                ticket,
                None,
                "expired",
                "system",
                json!({ "then": then }),
            )
            .await?;
        }
        return Ok(());
    }

    let tiers = tiers(&settings, &ticket.queue);
    let next = usize::try_from(ticket.tier + 1).unwrap_or(usize::MAX);
    let about = About::from(ticket);
    let (step, notices) = match tiers.get(next) {
        Some(tier) => (
            EscalationRow {
                tier: i64::try_from(next).unwrap_or(i64::MAX),
                next_at: Some(after(now, i64::from(tier.minutes))),
                expires_at,
                ..ticket.clone()
            },
            notices(&about, next, tier, now),
        ),
        None => (
            EscalationRow {
                next_at: None,
                expires_at,
                breached: 1,
                ..ticket.clone()
            },
            Vec::new(),
        ),
    };
    let breached = step.breached != 0;
    let Some(ids) = store
        .step_escalation(ticket, lease_until, &step, &notices)
        .await?
    else {
        // An agent acknowledged or resolved it meanwhile, or another worker
        // took it over: nothing to do.
        return Ok(());
    };
    if expired {
        let then = if breached { "breached" } else { "escalated" };
        audit_ticket(
            pipeline,
            ticket,
            None,
            "expired",
            "system",
            json!({ "then": then }),
        )
        .await?;
    }
    if breached {
        audit_ticket(
            pipeline,
            ticket,
            None,
            "breached",
            "system",
            json!({ "tier": ticket.tier + 1 }),
        )
        .await?;
    } else {
        audit_notices(
            pipeline,
            &about,
            ticket.message_id.as_deref(),
            next,
            &notices,
            &ids,
        )
        .await?;
        audit_ticket(
            pipeline,
            ticket,
            None,
            "escalated",
            "system",
            json!({ "tier": next + 1, "because": if expired && !ladder_due { "expired" } else { "tier time ran out" } }),
        )
        .await?;
    }
    Ok(())
}

/// An agent acknowledges (stopping the ladder) or resolves a ticket.
pub async fn set_status(
    pipeline: &Pipeline,
    tenant_id: &str,
    id: &str,
    status: &str,
    actor: &str,
) -> Result<EscalationRow, EscalationError> {
    let ticket = pipeline
        .store
        .escalation(tenant_id, id)
        .await?
        .ok_or(EscalationError::NotFound("ticket"))?;
    if !pipeline
        .store
        .set_escalation_status(tenant_id, id, status)
        .await?
    {
        return Err(EscalationError::Conflict(format!(
            "ticket is already {}",
            ticket.status
        )));
    }
    let action = if status == "resolved" {
        "resolved"
    } else {
        "acknowledged"
    };
    audit_ticket(pipeline, &ticket, None, action, actor, json!({})).await?;
    pipeline
        .store
        .escalation(tenant_id, id)
        .await?
        .ok_or(EscalationError::NotFound("ticket"))
}

/// An agent comments on a ticket.
pub async fn comment(
    pipeline: &Pipeline,
    tenant_id: &str,
    id: &str,
    body: &str,
    actor: &str,
) -> Result<crate::store::NoteRow, EscalationError> {
    if body.trim().is_empty() || body.len() > 10_000 {
        return Err(EscalationError::Invalid {
            field: "body",
            message: "must be 1-10000 characters".into(),
        });
    }
    let ticket = pipeline
        .store
        .escalation(tenant_id, id)
        .await?
        .ok_or(EscalationError::NotFound("ticket"))?;
    let note = pipeline.store.add_note(tenant_id, id, actor, body).await?;
    audit_ticket(
        pipeline,
        &ticket,
        None,
        "commented",
        actor,
        json!({ "note": note.id, "body": body }),
    )
    .await?;
    Ok(note)
}

/// A plugin's `hold-for-approval` action, as the pipeline applies it.
#[derive(Debug, Clone, Copy)]
pub struct Held<'a> {
    /// The decision that asked for it.
    pub decision_id: &'a str,
    /// The message's id, derived from the event and the action, so that the
    /// event processed again after a crash holds the same message.
    pub message_id: &'a str,
    /// The message to hold.
    pub notify: &'a Notify,
    /// Why an agent must look at it.
    pub reason: &'a str,
}

/// Hold a message for approval: store it `held`, render it now so agents see
/// exactly what would go out, and open a ticket in the approval queue.
///
/// Processing the event again (after a crash) holds nothing twice: if the
/// message exists, only what the earlier attempt did not get to is done.
pub async fn hold(
    pipeline: &Pipeline,
    row: &EventRow,
    event: &OrderEvent,
    settings: &TenantSettings,
    held: &Held<'_>,
) -> Result<(), PipelineError> {
    let Held {
        decision_id,
        message_id: id,
        notify,
        reason,
    } = *held;
    let now = pipeline.now();
    let message = crate::pipeline::new_message(
        row,
        event,
        decision_id,
        notify,
        notify.channel,
        "held",
        Some(reason),
        now,
    );
    let created = pipeline.store.insert_message(id, &message).await?;
    if created {
        pipeline
            .audit(
                row,
                Some(id),
                "policy",
                "held",
                "system",
                json!({ "reason": reason, "template": notify.template }),
            )
            .await?;
    }
    let stored = pipeline
        .store
        .message(&row.tenant_id, id)
        .await?
        .ok_or_else(|| PipelineError::Corrupt {
            what: "message",
            message: "vanished after insert".into(),
        })?;
    if !created
        && (stored.status != "held"
            || pipeline
                .store
                .approval_escalation(&row.tenant_id, id)
                .await?
                .is_some())
    {
        // Held, rendered and in the approval queue already (or since
        // approved, rejected or expired).
        return Ok(());
    }
    match crate::schedule::render_message(pipeline, &stored, event, settings).await? {
        Ok(rendered) => {
            let text = serde_json::to_string(&rendered).expect("rendered messages serialise");
            pipeline.store.set_rendered(id, &text).await?;
        }
        Err(err) => {
            let reason = format!("render: {err}");
            pipeline
                .store
                .settle_message(&stored, "failed", Some(&reason), None, None)
                .await?;
            return pipeline
                .audit(
                    row,
                    Some(id),
                    "render",
                    "failed",
                    "system",
                    json!({ "reason": reason }),
                )
                .await;
        }
    }
    let priority = enum_str(&notify.priority);
    let queue = settings.escalation.approval.queue.clone();
    open(
        pipeline,
        row,
        settings,
        &Opening {
            queue: &queue,
            priority: &priority,
            reason,
            sla_minutes: None,
            decision_id: Some(decision_id),
            message_id: Some(id),
        },
    )
    .await?;
    Ok(())
}

/// An agent's edits to a held message.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edits {
    /// A new subject (one line).
    pub subject: Option<String>,
    /// A new plain-text body; the HTML part is rebuilt from it, escaped.
    pub text: Option<String>,
}

/// Apply `edits` to a rendering. Edited text is plain text: the HTML part is
/// rebuilt from it with every character escaped, so an edit can never inject
/// markup — the same guarantee the template's autoescape gives.
pub fn apply_edits(rendered: &mut Rendered, edits: &Edits) -> Result<(), EscalationError> {
    if let Some(subject) = &edits.subject {
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        if subject.is_empty() || subject.len() > 500 {
            return Err(EscalationError::Invalid {
                field: "subject",
                message: "must be 1-500 characters".into(),
            });
        }
        rendered.subject = Some(subject);
    }
    if let Some(text) = &edits.text {
        if text.trim().is_empty() || text.len() > 100_000 {
            return Err(EscalationError::Invalid {
                field: "text",
                message: "must be 1-100000 characters".into(),
            });
        }
        rendered.text = text.clone();
        if rendered.html.is_some() {
            let paragraphs: Vec<String> = text
                .split("\n\n")
                .map(|p| format!("<p>{}</p>", escape_html(p.trim()).replace('\n', "<br>")))
                .collect();
            rendered.html = Some(format!(
                "<!doctype html><html><body style=\"font-family:sans-serif\">{}</body></html>",
                paragraphs.join("\n")
            ));
        }
    }
    Ok(())
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// Approve a held message (with optional edits): it goes through policy
/// again when it is sent.
pub async fn approve(
    pipeline: &Pipeline,
    tenant_id: &str,
    message_id: &str,
    edits: &Edits,
    actor: &str,
) -> Result<(), EscalationError> {
    let message = pipeline
        .store
        .message(tenant_id, message_id)
        .await?
        .ok_or(EscalationError::NotFound("held message"))?;
    if message.status != "held" {
        return Err(EscalationError::Conflict(format!(
            "the message is {}, not held",
            message.status
        )));
    }
    let mut rendered: Rendered = message
        .rendered
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .ok_or_else(|| EscalationError::Conflict("the held message has no rendering".into()))?;
    apply_edits(&mut rendered, edits)?;
    let text = serde_json::to_string(&rendered).expect("rendered messages serialise");
    let now = pipeline.now().as_millisecond();
    if !pipeline
        .store
        .approve_message(tenant_id, message_id, &text, actor, now)
        .await?
    {
        return Err(EscalationError::Conflict(
            "the message is no longer held".into(),
        ));
    }
    finish_approval(
        pipeline,
        tenant_id,
        &message,
        "approved",
        actor,
        json!({ "edited": edits.subject.is_some() || edits.text.is_some() }),
    )
    .await?;
    pipeline.wake_messages();
    Ok(())
}

/// Reject a held message: it is never sent.
pub async fn reject(
    pipeline: &Pipeline,
    tenant_id: &str,
    message_id: &str,
    reason: &str,
    actor: &str,
) -> Result<(), EscalationError> {
    if reason.trim().is_empty() {
        return Err(EscalationError::Invalid {
            field: "reason",
            message: "a rejection needs a reason".into(),
        });
    }
    let message = pipeline
        .store
        .message(tenant_id, message_id)
        .await?
        .ok_or(EscalationError::NotFound("held message"))?;
    if !pipeline
        .store
        .reject_message(
            tenant_id,
            message_id,
            &format!("rejected by {actor}: {reason}"),
        )
        .await?
    {
        return Err(EscalationError::Conflict(format!(
            "the message is {}, not held",
            message.status
        )));
    }
    finish_approval(
        pipeline,
        tenant_id,
        &message,
        "rejected",
        actor,
        json!({ "reason": reason }),
    )
    .await
}

async fn finish_approval(
    pipeline: &Pipeline,
    tenant_id: &str,
    message: &crate::store::MessageRow,
    action: &str,
    actor: &str,
    detail: serde_json::Value,
) -> Result<(), EscalationError> {
    if let Some(ticket) = pipeline
        .store
        .approval_escalation(tenant_id, &message.id)
        .await?
    {
        pipeline
            .store
            .set_escalation_status(tenant_id, &ticket.id, "resolved")
            .await?;
        audit_ticket(pipeline, &ticket, Some(&message.id), action, actor, detail).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{RenderRequest, ShopInfo};
    use tidings_sdk::types::EventKind;

    #[test]
    fn the_builtin_agent_templates_render_on_their_channels() {
        let event = tidings_sdk::testing::fixture(EventKind::DeliveryDelayed);
        let data = [
            ("ticket_id", "esc_1"),
            ("queue", "vip-care"),
            ("priority", "high"),
            ("reason", "Order #1042 is delayed"),
            ("tier", "2"),
            ("order_id", "ord_1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let shop = ShopInfo {
            name: "Bottega".into(),
            url: "https://bottega.example".into(),
            support_email: "help@bottega.example".into(),
        };
        for (name, channel, _, _) in BUILTIN_TEMPLATES {
            let mut templates = TemplateSet::new();
            add_builtin(&mut templates, name, &enum_str(channel));
            let rendered = crate::render::render(
                &templates,
                &RenderRequest {
                    template: name,
                    channel: *channel,
                    locale: Some("it-IT"),
                    tenant_default_locale: "it",
                    event: &event,
                    data: &data,
                    shop: &shop,
                    now: Timestamp::UNIX_EPOCH,
                    fuel: crate::render::DEFAULT_FUEL,
                },
            )
            .unwrap_or_else(|e| panic!("{name} on {channel:?}: {e}"));
            assert_eq!(rendered.locale, "en");
            assert!(rendered.text.contains("#1042"), "{}", rendered.text);
            if *name == NOTICE_TEMPLATE {
                assert!(rendered.text.contains("esc_1/ack"), "{}", rendered.text);
            }
        }
    }

    #[test]
    fn a_tenants_own_agent_template_wins_over_the_builtin_one() {
        let key = (NOTICE_TEMPLATE.to_owned(), Channel::Email, "it".to_owned());
        let own = TemplateParts {
            subject: Some("Ticket {{ data.ticket_id }}".into()),
            text: Some("Guardate il ticket.".into()),
            html: None,
        };
        let mut templates = TemplateSet::new();
        templates.insert(key.clone(), own.clone());
        add_builtin(&mut templates, NOTICE_TEMPLATE, "email");
        assert_eq!(templates.len(), 1);
        assert_eq!(templates.get(&key), Some(&own));

        // Other names and channels get nothing from the host.
        let mut templates = TemplateSet::new();
        add_builtin(&mut templates, "order-shipped", "email");
        add_builtin(&mut templates, NOTICE_TEMPLATE, "sms");
        assert!(templates.is_empty());
        add_builtin(&mut templates, APPROVAL_TEMPLATE, "webhook");
        assert_eq!(templates.len(), 1);
    }

    #[test]
    fn edited_text_is_escaped_into_the_html_part() {
        let mut rendered = Rendered {
            template: "refund-issued".into(),
            channel: Channel::Email,
            locale: "en".into(),
            subject: Some("Your refund".into()),
            text: "old".into(),
            html: Some("<p>old</p>".into()),
        };
        let edits = Edits {
            subject: Some("Your   refund\nof 700 EUR".into()),
            text: Some("Hello <b>Giulia</b>,\n\nwe refunded 700 EUR.".into()),
        };
        apply_edits(&mut rendered, &edits).expect("valid edits");
        assert_eq!(rendered.subject.as_deref(), Some("Your refund of 700 EUR"));
        let html = rendered.html.clone().expect("html kept");
        assert!(html.contains("Hello &lt;b&gt;Giulia&lt;/b&gt;,"), "{html}");
        assert!(!html.contains("<b>"));
        assert!(
            apply_edits(
                &mut rendered.clone(),
                &Edits {
                    text: Some("  ".into()),
                    ..Edits::default()
                }
            )
            .is_err()
        );
    }
}
