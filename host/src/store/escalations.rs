//! Escalation tickets (opened or merged atomically), their ladders (claimed
//! with a lease, stepped in one transaction with the agent notifications they
//! send), agent notes, and held messages awaiting approval.

use sqlx::{Any, FromRow, Transaction};

use super::{EscalationRow, NewEscalation, NewMessage, Store, StoreError, new_id, now_ms};

/// Filters for listing tickets.
#[derive(Debug, Clone, Default)]
pub struct EscalationFilter<'a> {
    /// Only this order.
    pub order_id: Option<&'a str>,
    /// Only this queue.
    pub queue: Option<&'a str>,
    /// Only this priority.
    pub priority: Option<&'a str>,
    /// Only this status (`open`, `acknowledged`, `resolved`).
    pub status: Option<&'a str>,
    /// Only breached (true) or not breached (false) tickets.
    pub breached: Option<bool>,
    /// Only open or acknowledged tickets.
    pub open_only: bool,
}

/// An agent's note on a ticket.
#[derive(Debug, Clone, FromRow)]
pub struct NoteRow {
    /// Note id.
    pub id: String,
    /// Who wrote it (key id).
    pub author: String,
    /// The note.
    pub body: String,
    /// When, ms.
    pub at: i64,
}

impl Store {
    /// One ticket of a tenant.
    pub async fn escalation(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<EscalationRow>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM escalations WHERE tenant_id = $1 AND id = $2")
                .bind(tenant_id)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// A tenant's tickets, newest first.
    pub async fn escalations_filtered(
        &self,
        tenant_id: &str,
        f: &EscalationFilter<'_>,
    ) -> Result<Vec<EscalationRow>, StoreError> {
        let order = super::filter("order_id", 2, f.order_id);
        let queue = super::filter("queue", 3, f.queue);
        let priority = super::filter("priority", 4, f.priority);
        let status = super::filter("status", 5, f.status);
        Ok(sqlx::query_as(&format!(
            "SELECT * FROM escalations WHERE tenant_id = $1 AND {order} AND {queue}
             AND {priority} AND {status} AND ($6 < 0 OR breached = $6)
             AND ($7 = 0 OR status IN ('open', 'acknowledged'))
             ORDER BY id DESC LIMIT 500",
        ))
        .bind(tenant_id)
        .bind(f.order_id.unwrap_or(""))
        .bind(f.queue.unwrap_or(""))
        .bind(f.priority.unwrap_or(""))
        .bind(f.status.unwrap_or(""))
        .bind(f.breached.map_or(-1, i64::from))
        .bind(i64::from(f.open_only))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Open a ticket with its timers already set (`e.next_at`,
    /// `e.expires_at`), inserting the first tier's `notices` in the same
    /// transaction — or, when an open (or acknowledged) ticket of the same
    /// order and queue exists, merge into it instead: the reason is appended,
    /// the priority raised if the new one is higher, and no notice is sent. A
    /// partial unique index makes the merge atomic, so racing escalations of
    /// one order end up in one ticket. Approval tickets (with a held message)
    /// are never merged. `id` is the new ticket's id, which the notices
    /// already name. Returns the ticket's id (the new one, or the one merged
    /// into), whether it is new, and the ids of the notices inserted.
    pub async fn open_escalation(
        &self,
        e: &NewEscalation<'_>,
        id: &str,
        notices: &[NewMessage<'_>],
    ) -> Result<(String, bool, Vec<String>), StoreError> {
        let turn = self.writing().await;
        const RANK: &str = "CASE {} WHEN 'low' THEN 0 WHEN 'normal' THEN 1 WHEN 'high' THEN 2 WHEN 'urgent' THEN 3 ELSE 1 END";
        let query = format!(
            "INSERT INTO escalations (id, tenant_id, order_id, event_id, decision_id, queue, priority, reason,
                                      sla_minutes, status, created_at, updated_at, message_id, tier, next_at,
                                      expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'open', $10, $10, $11, 0, $12, $13)
             ON CONFLICT (tenant_id, order_id, queue) WHERE status IN ('open', 'acknowledged') AND message_id IS NULL
             DO UPDATE SET reason = escalations.reason || $14 || excluded.reason,
                           priority = CASE WHEN {} > {} THEN excluded.priority ELSE escalations.priority END,
                           updated_at = excluded.updated_at
             RETURNING id",
            RANK.replace("{}", "excluded.priority"),
            RANK.replace("{}", "escalations.priority"),
        );
        let mut tx = self.pool.begin().await?;
        let (ticket,): (String,) = sqlx::query_as(&query)
            .bind(id)
            .bind(e.tenant_id)
            .bind(e.order_id)
            .bind(e.event_id)
            .bind(e.decision_id)
            .bind(e.queue)
            .bind(e.priority)
            .bind(e.reason)
            .bind(e.sla_minutes)
            .bind(now_ms())
            .bind(e.message_id)
            .bind(e.next_at)
            .bind(e.expires_at)
            .bind("\n")
            .fetch_one(&mut *tx)
            .await?;
        let new = ticket == id;
        let mut ids = Vec::new();
        if new {
            for notice in notices {
                ids.push(insert_notice(&mut tx, notice).await?);
            }
        }
        tx.commit().await?;
        self.durable(turn).await?;
        Ok((ticket, new, ids))
    }

    /// Claim the tickets due by `now` — an open ticket whose tier time ran
    /// out, or an open or acknowledged one whose held message expired — for
    /// a worker until `lease_until`. The timers stay as they are: a worker
    /// that dies before [`Store::step_escalation`] leaves the ticket to be
    /// claimed again once the lease runs out.
    pub async fn claim_due_escalations(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<EscalationRow>, StoreError> {
        let turn = self.writing().await;
        let query = format!(
            "UPDATE escalations SET lease_until = $1
             WHERE id IN (SELECT id FROM escalations
                          WHERE (lease_until IS NULL OR lease_until <= $2)
                            AND ((status = 'open' AND next_at IS NOT NULL AND next_at <= $2)
                              OR (status IN ('open', 'acknowledged') AND expires_at IS NOT NULL
                                  AND expires_at <= $2))
                          ORDER BY id LIMIT $3 {})
             RETURNING *",
            self.skip_locked()
        );
        let rows = sqlx::query_as(&query)
            .bind(lease_until)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        self.durable(turn).await?;
        Ok(rows)
    }

    /// Move `ticket`, claimed until `lease_until`, to the state in `next`
    /// (its status, tier, `next_at`, `expires_at` and `breached`), inserting
    /// the `notices` that step sends in the same transaction, and release the
    /// claim. Returns the notices' ids, or none (and changes nothing) when the
    /// claim was lost: an agent changed the ticket meanwhile, or the lease ran
    /// out and another worker took it.
    pub async fn step_escalation(
        &self,
        ticket: &EscalationRow,
        lease_until: i64,
        next: &EscalationRow,
        notices: &[NewMessage<'_>],
    ) -> Result<Option<Vec<String>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        if !apply_step(&mut tx, ticket, lease_until, next).await? {
            return Ok(None);
        }
        let mut ids = Vec::new();
        for notice in notices {
            ids.push(insert_notice(&mut tx, notice).await?);
        }
        tx.commit().await?;
        Ok(Some(ids))
    }

    /// Resolve a claimed approval ticket whose message expired and reject
    /// the message (if still held) with `reason`, in one transaction. Returns
    /// whether the message was rejected, or none when the claim was lost.
    pub async fn expire_approval(
        &self,
        ticket: &EscalationRow,
        lease_until: i64,
        message_id: &str,
        reason: &str,
    ) -> Result<Option<bool>, StoreError> {
        let turn = self.writing().await;
        let next = EscalationRow {
            status: "resolved".to_owned(),
            next_at: None,
            expires_at: None,
            ..ticket.clone()
        };
        let mut tx = self.pool.begin().await?;
        if !apply_step(&mut tx, ticket, lease_until, &next).await? {
            return Ok(None);
        }
        let rejected = sqlx::query(
            "UPDATE messages SET status = 'rejected', status_reason = $1, updated_at = $2
             WHERE tenant_id = $3 AND id = $4 AND status = 'held'",
        )
        .bind(reason)
        .bind(now_ms())
        .bind(&ticket.tenant_id)
        .bind(message_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        self.durable(turn).await?;
        Ok(Some(rejected == 1))
    }

    /// The approval ticket of a held message, if it is not resolved yet.
    pub async fn approval_escalation(
        &self,
        tenant_id: &str,
        message_id: &str,
    ) -> Result<Option<EscalationRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM escalations WHERE tenant_id = $1 AND message_id = $2
             AND status IN ('open', 'acknowledged') ORDER BY id LIMIT 1",
        )
        .bind(tenant_id)
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Move a ticket to `status` (`acknowledged` or `resolved`), stopping its
    /// ladder; a held message's expiry still runs until the ticket is
    /// resolved. Returns false when it was already in a final state.
    pub async fn set_escalation_status(
        &self,
        tenant_id: &str,
        id: &str,
        status: &str,
    ) -> Result<bool, StoreError> {
        let turn = self.writing().await;
        let done = sqlx::query(
            "UPDATE escalations SET status = $1, next_at = NULL, updated_at = $2
             WHERE tenant_id = $3 AND id = $4 AND status <> 'resolved'",
        )
        .bind(status)
        .bind(now_ms())
        .bind(tenant_id)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        self.durable(turn).await?;
        Ok(done == 1)
    }

    /// Add an agent's note.
    pub async fn add_note(
        &self,
        tenant_id: &str,
        escalation_id: &str,
        author: &str,
        body: &str,
    ) -> Result<NoteRow, StoreError> {
        let turn = self.writing().await;
        let note = NoteRow {
            id: new_id("not"),
            author: author.to_owned(),
            body: body.to_owned(),
            at: now_ms(),
        };
        sqlx::query(
            "INSERT INTO escalation_notes (id, tenant_id, escalation_id, author, body, at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&note.id)
        .bind(tenant_id)
        .bind(escalation_id)
        .bind(&note.author)
        .bind(&note.body)
        .bind(note.at)
        .execute(&self.pool)
        .await?;
        self.durable(turn).await?;
        Ok(note)
    }

    /// A ticket's notes, oldest first.
    pub async fn notes(&self, escalation_id: &str) -> Result<Vec<NoteRow>, StoreError> {
        Ok(sqlx::query_as("SELECT id, author, body, at FROM escalation_notes WHERE escalation_id = $1 ORDER BY at, id")
            .bind(escalation_id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Store the rendering of a held message.
    pub async fn set_rendered(&self, id: &str, rendered: &str) -> Result<(), StoreError> {
        let turn = self.writing().await;
        sqlx::query("UPDATE messages SET rendered = $1, updated_at = $2 WHERE id = $3")
            .bind(rendered)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.durable(turn).await?;
        Ok(())
    }

    /// Release a held message for sending with its (possibly edited)
    /// rendering. Returns false when it was no longer held.
    pub async fn approve_message(
        &self,
        tenant_id: &str,
        id: &str,
        rendered: &str,
        approved_by: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let turn = self.writing().await;
        let done = sqlx::query(
            "UPDATE messages SET status = 'scheduled', status_reason = $1, rendered = $2, approved_by = $3, send_at = $4,
                                 updated_at = $5
             WHERE tenant_id = $6 AND id = $7 AND status = 'held'",
        )
        .bind(format!("approved by {approved_by}"))
        .bind(rendered)
        .bind(approved_by)
        .bind(now)
        .bind(now_ms())
        .bind(tenant_id)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        self.durable(turn).await?;
        Ok(done == 1)
    }

    /// Reject a held message: it will never be sent. Returns false when it
    /// was no longer held.
    pub async fn reject_message(
        &self,
        tenant_id: &str,
        id: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let turn = self.writing().await;
        let done = sqlx::query(
            "UPDATE messages SET status = 'rejected', status_reason = $1, updated_at = $2
             WHERE tenant_id = $3 AND id = $4 AND status = 'held'",
        )
        .bind(reason)
        .bind(now_ms())
        .bind(tenant_id)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        self.durable(turn).await?;
        Ok(done == 1)
    }
}

/// Move a claimed ticket to the state in `next` and release the claim, if
/// the claim still holds: same lease, same status as when it was claimed.
async fn apply_step(
    tx: &mut Transaction<'_, Any>,
    ticket: &EscalationRow,
    lease_until: i64,
    next: &EscalationRow,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE escalations SET status = $1, tier = $2, next_at = $3, expires_at = $4, breached = $5,
                                lease_until = NULL, updated_at = $6
         WHERE id = $7 AND lease_until = $8 AND status = $9",
    )
    .bind(&next.status)
    .bind(next.tier)
    .bind(next.next_at)
    .bind(next.expires_at)
    .bind(next.breached)
    .bind(now_ms())
    .bind(&ticket.id)
    .bind(lease_until)
    .bind(&ticket.status)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(done == 1)
}

/// Insert an agent notification inside a ticket's transaction; the same row
/// `Store::insert_message` writes.
async fn insert_notice(
    tx: &mut Transaction<'_, Any>,
    m: &NewMessage<'_>,
) -> Result<String, StoreError> {
    let id = new_id("msg");
    super::messages::insert_message(&mut **tx, &id, m, "[]", None).await?;
    Ok(id)
}

impl Store {
    /// Put a leased message back to wait until `until` (ms).
    pub async fn defer_message(
        &self,
        id: &str,
        until: i64,
        reason: &str,
    ) -> Result<(), StoreError> {
        let turn = self.writing().await;
        sqlx::query(
            "UPDATE messages SET status = 'scheduled', send_at = $1, status_reason = $2, lease_owner = NULL,
                                 lease_until = NULL, updated_at = $3
             WHERE id = $4",
        )
        .bind(until)
        .bind(reason)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.durable(turn).await?;
        Ok(())
    }
}
