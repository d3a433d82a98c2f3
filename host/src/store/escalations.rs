//! Escalation ladders, agent notes, and held messages awaiting approval.

use sqlx::FromRow;

use super::{EscalationRow, Store, StoreError, new_id, now_ms};

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
        Ok(sqlx::query_as(
            "SELECT * FROM escalations WHERE tenant_id = $1 AND ($2 = '' OR order_id = $2) AND ($3 = '' OR queue = $3)
             AND ($4 = '' OR priority = $4) AND ($5 = '' OR status = $5) AND ($6 < 0 OR breached = $6)
             AND ($7 = 0 OR status IN ('open', 'acknowledged'))
             ORDER BY id DESC LIMIT 500",
        )
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

    /// Claim the open tickets whose tier time ran out by `now` (clearing
    /// their timer, so no other worker takes them too).
    pub async fn claim_due_escalations(
        &self,
        now: i64,
        limit: i64,
    ) -> Result<Vec<EscalationRow>, StoreError> {
        let query = format!(
            "UPDATE escalations SET next_at = NULL
             WHERE id IN (SELECT id FROM escalations WHERE status = 'open' AND next_at IS NOT NULL AND next_at <= $1
                          ORDER BY next_at LIMIT $2 {})
             RETURNING *",
            self.skip_locked()
        );
        Ok(sqlx::query_as(&query)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Put a ticket on `tier`, due again at `next_at` (none: the ladder stops).
    pub async fn set_escalation_tier(
        &self,
        id: &str,
        tier: i64,
        next_at: Option<i64>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE escalations SET tier = $1, next_at = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(tier)
        .bind(next_at)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Mark a ticket breached: its last tier's time ran out.
    pub async fn breach_escalation(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE escalations SET breached = 1, next_at = NULL, updated_at = $1 WHERE id = $2",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Move a ticket to `status` (`acknowledged` or `resolved`), stopping its
    /// ladder. Returns false when it was already in a final state.
    pub async fn set_escalation_status(
        &self,
        tenant_id: &str,
        id: &str,
        status: &str,
    ) -> Result<bool, StoreError> {
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
        sqlx::query("UPDATE messages SET rendered = $1, updated_at = $2 WHERE id = $3")
            .bind(rendered)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
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
        Ok(done == 1)
    }
}

impl Store {
    /// Put a leased message back to wait until `until` (ms).
    pub async fn defer_message(
        &self,
        id: &str,
        until: i64,
        reason: &str,
    ) -> Result<(), StoreError> {
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
        Ok(())
    }
}
