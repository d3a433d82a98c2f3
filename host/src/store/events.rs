//! Ingested order events: stored before they are acknowledged, then leased
//! by the pipeline.

use sqlx::FromRow;

use super::exec::Exec;
use super::{Store, StoreError, now_ms};

/// A stored event.
#[derive(Debug, Clone, FromRow)]
pub struct EventRow {
    /// Tidings' id for the event.
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// The sender's event id.
    pub external_id: String,
    /// Idempotency key (header, or the sender's event id).
    pub idempotency_key: String,
    /// Order id.
    pub order_id: String,
    /// Event kind, e.g. `order_created`.
    pub kind: String,
    /// When it happened, ms.
    pub occurred_at: i64,
    /// When Tidings received it, ms.
    pub received_at: i64,
    /// The normalised event JSON.
    pub body: String,
    /// `received`, `processed` or `failed`.
    pub status: String,
}

/// An event to store.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// Tenant.
    pub tenant_id: &'a str,
    /// The sender's event id.
    pub external_id: &'a str,
    /// Idempotency key.
    pub idempotency_key: &'a str,
    /// Order id.
    pub order_id: &'a str,
    /// Event kind.
    pub kind: &'a str,
    /// When it happened, ms.
    pub occurred_at: i64,
    /// Normalised event JSON.
    pub body: &'a str,
}

const EVENT_COLUMNS: &str = "id, tenant_id, external_id, idempotency_key, order_id, kind, occurred_at, received_at, body, status";

impl Store {
    /// Store an event unless one with the same idempotency key exists,
    /// with its `ingest`/`received` audit entry by `actor` when it is new.
    /// Returns the stored event and whether it was new.
    pub async fn insert_event(
        &self,
        new: &NewEvent<'_>,
        actor: &str,
    ) -> Result<(EventRow, bool), StoreError> {
        let mut writes = super::Writes::default();
        writes.event(new, actor);
        self.commit_event(writes).await
    }

    /// Lease up to `limit` events waiting to be processed (or whose lease
    /// expired) for `lease_ms`, oldest first: of each order only its oldest
    /// event still waiting, so that an order's events are processed one
    /// after the other in the order they were received, whichever worker,
    /// process or machine leases them. The next one can be leased once
    /// that one is finished.
    pub async fn lease_events(
        &self,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<EventRow>, StoreError> {
        let turn = self.writing().await;
        let now = now_ms();
        let query = format!(
            "UPDATE events SET lease_until = $1
             WHERE id IN (SELECT id FROM events AS e
                          WHERE status = 'received' AND (lease_until IS NULL OR lease_until < $2)
                            AND NOT EXISTS (SELECT 1 FROM events AS earlier
                                            WHERE earlier.tenant_id = e.tenant_id
                                              AND earlier.order_id = e.order_id
                                              AND earlier.status = 'received'
                                              AND (earlier.received_at, earlier.id) < (e.received_at, e.id))
                          ORDER BY received_at LIMIT $3 {})
             RETURNING {EVENT_COLUMNS}",
            self.skip_locked()
        );
        let mut rows: Vec<EventRow> = sqlx::query_as(&query)
            .bind(now + lease_ms)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.sort_by(|a, b| (a.received_at, &a.id).cmp(&(b.received_at, &b.id)));
        // A lease is not flushed (see `Store::durable`).
        drop(turn);
        Ok(rows)
    }

    /// Mark an event processed (or failed) and release its lease.
    pub async fn finish_event(&self, id: &str, status: &str) -> Result<(), StoreError> {
        let turn = self.writing().await;
        sqlx::query("UPDATE events SET status = $1, lease_until = NULL WHERE id = $2")
            .bind(status)
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.durable(turn).await?;
        Ok(())
    }

    /// One event of a tenant.
    pub async fn event(&self, tenant_id: &str, id: &str) -> Result<Option<EventRow>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The events with these ids (of any tenant: callers check).
    pub async fn events_by_id(&self, ids: &[&str]) -> Result<Vec<EventRow>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let query = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE id IN ({})",
            super::placeholders(1, ids.len())
        );
        let mut q = sqlx::query_as(&query);
        for id in ids {
            q = q.bind(*id);
        }
        Ok(q.fetch_all(&self.pool).await?)
    }

    /// A tenant's events, newest first, optionally for one order; `after` is
    /// the cursor (an event id from the previous page).
    pub async fn events(
        &self,
        tenant_id: &str,
        order_id: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError> {
        let order = super::filter("order_id", 2, order_id);
        Ok(sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE tenant_id = $1 AND {order} AND ($3 = '' OR id < $3)
             ORDER BY id DESC LIMIT $4"
        ))
        .bind(tenant_id)
        .bind(order_id.unwrap_or(""))
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// An order's events in the order they were received (for replay).
    pub async fn order_events(
        &self,
        tenant_id: &str,
        order_id: &str,
    ) -> Result<Vec<EventRow>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = $1 AND order_id = $2 ORDER BY received_at, id"
        ))
        .bind(tenant_id)
        .bind(order_id)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// Store an event as `id` with `status` on `conn` unless one with the same
/// idempotency key exists. Returns the stored event and whether it is new.
pub(super) async fn insert_event(
    conn: &mut impl Exec,
    new: &NewEvent<'_>,
    id: &str,
    status: &str,
    received_at: i64,
) -> Result<(EventRow, bool), StoreError> {
    let inserted = conn
        .execute(
            "INSERT INTO events (id, tenant_id, external_id, idempotency_key, order_id, kind, occurred_at,
                                 received_at, body, status)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (tenant_id, idempotency_key) DO NOTHING",
            &[
                id.into(),
                new.tenant_id.into(),
                new.external_id.into(),
                new.idempotency_key.into(),
                new.order_id.into(),
                new.kind.into(),
                new.occurred_at.into(),
                received_at.into(),
                new.body.into(),
                status.into(),
            ],
        )
        .await?
        == 1;
    let row = conn
        .fetch_event(
            &format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = $1 AND idempotency_key = $2"
            ),
            &[new.tenant_id.into(), new.idempotency_key.into()],
        )
        .await?;
    Ok((row, inserted))
}
