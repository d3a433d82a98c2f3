//! The append-only audit log.

use sqlx::FromRow;

use super::exec::Exec;
use super::{Store, StoreError, now_ms};

/// An audit entry to append.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    /// Tenant.
    pub tenant_id: &'a str,
    /// Order, when the step is about one.
    pub order_id: Option<&'a str>,
    /// Event.
    pub event_id: Option<&'a str>,
    /// Message.
    pub message_id: Option<&'a str>,
    /// Pipeline stage: `ingest`, `decide`, `policy`, `schedule`, `render`, `dispatch`, `escalation`.
    pub stage: &'a str,
    /// What happened, e.g. `received`, `decided`, `deferred`, `sent`.
    pub action: &'a str,
    /// Who: `system`, a plugin, or a key id.
    pub actor: &'a str,
    /// Details, JSON.
    pub detail: serde_json::Value,
}

/// A stored audit entry.
#[derive(Debug, Clone, FromRow)]
pub struct AuditRow {
    /// Sequence number.
    pub seq: i64,
    /// Order.
    pub order_id: Option<String>,
    /// Event.
    pub event_id: Option<String>,
    /// Message.
    pub message_id: Option<String>,
    /// Stage.
    pub stage: String,
    /// Action.
    pub action: String,
    /// Actor.
    pub actor: String,
    /// Details, JSON.
    pub detail: String,
    /// When, ms.
    pub at: i64,
}

impl Store {
    /// Append an entry.
    pub async fn audit(&self, e: AuditEntry<'_>) -> Result<(), StoreError> {
        let turn = self.writing().await;
        let mut conn = self.pool.acquire().await?;
        insert_audit(&mut *conn, &e, now_ms()).await?;
        drop(conn);
        self.durable(turn).await?;
        Ok(())
    }

    /// A tenant's audit trail, in order, optionally for one order; `after` is a sequence cursor.
    pub async fn audit_trail(
        &self,
        tenant_id: &str,
        order_id: Option<&str>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let order = super::filter("order_id", 2, order_id);
        Ok(sqlx::query_as(&format!(
            "SELECT seq, order_id, event_id, message_id, stage, action, actor, detail, at FROM audit_log
             WHERE tenant_id = $1 AND {order} AND seq > $3 ORDER BY seq LIMIT $4",
        ))
        .bind(tenant_id)
        .bind(order_id.unwrap_or(""))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

impl Store {
    /// The audit entries about one message, in order.
    pub async fn message_audit(
        &self,
        tenant_id: &str,
        message_id: &str,
    ) -> Result<Vec<AuditRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT seq, order_id, event_id, message_id, stage, action, actor, detail, at FROM audit_log
             WHERE tenant_id = $1 AND message_id = $2 ORDER BY seq",
        )
        .bind(tenant_id)
        .bind(message_id)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// Append `e`, as of `at` (ms), on `conn` (a transaction's or the pool's).
pub(super) async fn insert_audit(
    conn: &mut impl Exec,
    e: &AuditEntry<'_>,
    at: i64,
) -> Result<(), StoreError> {
    let detail = e.detail.to_string();
    conn.execute(
        "INSERT INTO audit_log (tenant_id, order_id, event_id, message_id, stage, action, actor, detail, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            e.tenant_id.into(),
            e.order_id.into(),
            e.event_id.into(),
            e.message_id.into(),
            e.stage.into(),
            e.action.into(),
            e.actor.into(),
            detail.as_str().into(),
            at.into(),
        ],
    )
    .await?;
    Ok(())
}
