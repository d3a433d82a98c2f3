//! The `escalation` stage: tickets for humans, their SLA ladders, and
//! messages held for an agent's approval.
//!
//! In: `escalate` and `hold-for-approval` actions (and the host's own
//! `plugin-faults` tickets), agent requests, and the clock. Out: tickets that
//! climb their queue's tiers — each tier notified through the normal render +
//! dispatch path with its own templates — until an agent acknowledges them or
//! the last tier's time runs out (`breached`); held messages that are
//! approved (optionally edited), rejected, or expire. Timers are columns
//! (`next_at`), so they survive restarts; every step is audited with who did
//! it. Fails with [`EscalationError`].

use serde_json::json;
use tidings_sdk::action::Notify;
use tidings_sdk::types::{OrderEvent, Timestamp};

use crate::pipeline::{Pipeline, PipelineError, enum_str};
use crate::render::Rendered;
use crate::settings::{ExpiryAction, TenantSettings, Tier};
use crate::store::{AuditEntry, EscalationRow, EventRow, NewEscalation, NewMessage, StoreError};

/// Template for tier notifications of ordinary tickets.
pub const NOTICE_TEMPLATE: &str = "escalation-notice";
/// Template for tier notifications of approval tickets.
pub const APPROVAL_TEMPLATE: &str = "approval-request";

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

/// Open a ticket for `row`'s order (merged into an open one of the same
/// queue), and start its ladder: the first tier is notified now.
pub async fn open(
    pipeline: &Pipeline,
    row: &EventRow,
    settings: &TenantSettings,
    opening: &Opening<'_>,
) -> Result<String, PipelineError> {
    let (ticket_id, new) = pipeline
        .store
        .open_escalation(&NewEscalation {
            tenant_id: &row.tenant_id,
            order_id: &row.order_id,
            event_id: &row.id,
            decision_id: opening.decision_id,
            queue: opening.queue,
            priority: opening.priority,
            reason: opening.reason,
            sla_minutes: opening.sla_minutes,
            message_id: opening.message_id,
        })
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
        let now = pipeline.now();
        let ticket = pipeline
            .store
            .escalation(&row.tenant_id, &ticket_id)
            .await?
            .ok_or_else(|| PipelineError::Corrupt {
                what: "escalation",
                message: "vanished after insert".into(),
            })?;
        let tiers = tiers(settings, opening.queue);
        let first = match (opening.sla_minutes, tiers.first(), opening.message_id) {
            (Some(sla), _, _) => Some(sla),
            (None, Some(tier), _) => Some(i64::from(tier.minutes)),
            (None, None, Some(_)) => Some(i64::from(settings.escalation.approval.expire_minutes)),
            (None, None, None) => None,
        };
        if let Some(tier) = tiers.first() {
            notify_tier(pipeline, &ticket, settings, 0, tier).await?;
        }
        pipeline
            .store
            .set_escalation_tier(&ticket_id, 0, first.map(|m| after(now, m)))
            .await?;
    }
    Ok(ticket_id)
}

/// Notify one tier: a message per agent address and one for the webhook,
/// rendered and dispatched like any other.
async fn notify_tier(
    pipeline: &Pipeline,
    ticket: &EscalationRow,
    _settings: &TenantSettings,
    index: usize,
    tier: &Tier,
) -> Result<(), PipelineError> {
    let template = if ticket.message_id.is_some() {
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
    let now = pipeline.now().as_millisecond();
    let mut recipients: Vec<(&str, &str)> =
        tier.emails.iter().map(|e| ("email", e.as_str())).collect();
    if let Some(url) = &tier.webhook_url {
        recipients.push(("webhook", url.as_str()));
    }
    for (channel, to) in recipients {
        let id = pipeline
            .store
            .insert_message(&NewMessage {
                tenant_id: &ticket.tenant_id,
                event_id: &ticket.event_id,
                decision_id: &ticket.id,
                order_id: &ticket.order_id,
                customer_id: "agent",
                channel: channel.to_owned(),
                template,
                locale: None,
                category: "transactional".to_owned(),
                priority: ticket.priority.clone(),
                dedupe_key: None,
                cancel_key: None,
                data: data.clone(),
                status: "scheduled",
                status_reason: Some("agent notification"),
                send_at: now,
                recipient: Some(to.to_owned()),
            })
            .await?;
        audit_ticket(
            pipeline,
            ticket,
            Some(&id),
            "notified",
            "system",
            json!({ "tier": index + 1, "channel": channel, "to": to }),
        )
        .await?;
    }
    pipeline.wake_messages();
    Ok(())
}

async fn audit_ticket(
    pipeline: &Pipeline,
    ticket: &EscalationRow,
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
            tenant_id: &ticket.tenant_id,
            order_id: Some(&ticket.order_id),
            event_id: Some(&ticket.event_id),
            message_id: message_id.or(ticket.message_id.as_deref()),
            stage: "escalation",
            action,
            actor,
            detail,
        })
        .await?;
    Ok(())
}

/// Move every ticket whose tier time ran out by `now` up its ladder: notify
/// the next tier, or mark it breached after the last; an expired approval
/// with `on_expiry: reject` is rejected instead. Returns how many moved.
pub async fn advance(pipeline: &Pipeline, now: Timestamp) -> Result<usize, PipelineError> {
    let due = pipeline
        .store
        .claim_due_escalations(now.as_millisecond(), 100)
        .await?;
    for ticket in &due {
        let (_, settings) = pipeline.tenant(&ticket.tenant_id).await?;
        if let Some(message_id) = &ticket.message_id
            && settings.escalation.approval.on_expiry == ExpiryAction::Reject
        {
            pipeline
                .store
                .reject_message(&ticket.tenant_id, message_id, "approval expired")
                .await?;
            pipeline
                .store
                .set_escalation_status(&ticket.tenant_id, &ticket.id, "resolved")
                .await?;
            audit_ticket(
                pipeline,
                ticket,
                None,
                "expired",
                "system",
                json!({ "then": "rejected" }),
            )
            .await?;
            continue;
        }
        let tiers = tiers(&settings, &ticket.queue);
        let next = usize::try_from(ticket.tier + 1).unwrap_or(usize::MAX);
        match tiers.get(next) {
            Some(tier) => {
                notify_tier(pipeline, ticket, &settings, next, tier).await?;
                pipeline
                    .store
                    .set_escalation_tier(
                        &ticket.id,
                        next as i64,
                        Some(after(now, i64::from(tier.minutes))),
                    )
                    .await?;
                audit_ticket(
                    pipeline,
                    ticket,
                    None,
                    "escalated",
                    "system",
                    json!({ "tier": next + 1 }),
                )
                .await?;
            }
            None => {
                pipeline.store.breach_escalation(&ticket.id).await?;
                audit_ticket(
                    pipeline,
                    ticket,
                    None,
                    "breached",
                    "system",
                    json!({ "tier": ticket.tier + 1 }),
                )
                .await?;
            }
        }
    }
    Ok(due.len())
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

/// Hold a message for approval: store it `held`, render it now so agents see
/// exactly what would go out, and open a ticket in the approval queue.
pub async fn hold(
    pipeline: &Pipeline,
    row: &EventRow,
    event: &OrderEvent,
    settings: &TenantSettings,
    decision_id: &str,
    notify: &Notify,
    reason: &str,
) -> Result<(), PipelineError> {
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
    let id = pipeline.store.insert_message(&message).await?;
    pipeline
        .audit(
            row,
            Some(&id),
            "policy",
            "held",
            "system",
            json!({ "reason": reason, "template": notify.template }),
        )
        .await?;
    let stored = pipeline
        .store
        .message(&row.tenant_id, &id)
        .await?
        .ok_or_else(|| PipelineError::Corrupt {
            what: "message",
            message: "vanished after insert".into(),
        })?;
    match crate::schedule::render_message(pipeline, &stored, event, settings).await? {
        Ok(rendered) => {
            let text = serde_json::to_string(&rendered).expect("rendered messages serialise");
            pipeline.store.set_rendered(&id, &text).await?;
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
                    Some(&id),
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
            message_id: Some(&id),
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

/// The approval ticket of a held message, if it is still open.
async fn approval_ticket(
    pipeline: &Pipeline,
    tenant_id: &str,
    message_id: &str,
) -> Result<Option<EscalationRow>, StoreError> {
    let tickets = pipeline
        .store
        .escalations_filtered(
            tenant_id,
            &crate::store::EscalationFilter {
                open_only: true,
                ..Default::default()
            },
        )
        .await?;
    Ok(tickets
        .into_iter()
        .find(|t| t.message_id.as_deref() == Some(message_id)))
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
    if let Some(ticket) = approval_ticket(pipeline, tenant_id, &message.id).await? {
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
    use tidings_sdk::types::Channel;

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
