//! Platform integrations (webhook secrets), platform order snapshots, the
//! deliveries held until their order arrives, and the delivery ids already
//! handled (so a redelivery is dropped before it is mapped again).
//!
//! A webhook delivery is handled in one [`PlatformTx`]: the order's snapshot
//! is read, the event stored, the snapshot updated, held deliveries released
//! and the audit written, all committed together or not at all. The
//! transaction is serialised per order: `BEGIN IMMEDIATE` on SQLite (one
//! writer), a transaction-scoped advisory lock on the order on PostgreSQL.

use sha2::{Digest, Sha256};
use sqlx::{Any, FromRow, Transaction};

use super::{AuditEntry, Backend, EventRow, NewEvent, Store, StoreError, now_ms};

/// The last state of a platform order.
#[derive(Debug, Clone, FromRow)]
pub struct PlatformOrderRow {
    /// The platform's status (WooCommerce order status; Shopify summary).
    pub platform_status: Option<String>,
    /// The last mapped order, JSON.
    pub snapshot: String,
}

/// A verified delivery kept until its order arrives.
#[derive(Debug, Clone, FromRow)]
pub struct PendingRow {
    /// Tidings' id; sorts by receipt.
    pub id: String,
    /// The platform order it is about.
    pub order_id: String,
    /// Dedupe key: a retry of the same delivery is held once.
    pub dedupe_key: String,
    /// The platform topic, e.g. `fulfillments/create`.
    pub topic: String,
    /// The delivery headers the mapping reads, a JSON object.
    pub headers: String,
    /// The raw body.
    pub body: String,
    /// When it was first received, ms.
    pub received_at: i64,
}

const PENDING_COLUMNS: &str = "id, order_id, dedupe_key, topic, headers, body, received_at";

/// The handling of one webhook delivery for one tenant and platform, as a
/// single transaction (see the module docs). Dropped without
/// [`PlatformTx::commit`], nothing of it is stored.
pub struct PlatformTx {
    tx: Transaction<'static, Any>,
    store: Store,
    tenant_id: String,
    platform: String,
}

/// The PostgreSQL advisory lock key of one platform order.
fn order_lock_key(tenant_id: &str, platform: &str, order_id: &str) -> i64 {
    let digest = Sha256::new()
        .chain_update(tenant_id)
        .chain_update([0])
        .chain_update(platform)
        .chain_update([0])
        .chain_update(order_id)
        .finalize();
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(key)
}

impl Store {
    /// Begin handling a delivery for `tenant_id`'s `platform` order
    /// `order_id` (when the body names one), waiting for any other delivery
    /// of the same order to finish first.
    pub async fn begin_platform(
        &self,
        tenant_id: &str,
        platform: &str,
        order_id: Option<&str>,
    ) -> Result<PlatformTx, StoreError> {
        let tx = match self.backend {
            // The write lock up front: a deferred transaction that reads and
            // then writes can fail with SQLITE_BUSY instead of waiting.
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                if let Some(order_id) = order_id {
                    // `SELECT 1 FROM`: the function returns `void`, which
                    // the `Any` driver cannot decode.
                    sqlx::query("SELECT 1 FROM pg_advisory_xact_lock($1)")
                        .bind(order_lock_key(tenant_id, platform, order_id))
                        .execute(&mut *tx)
                        .await?;
                }
                tx
            }
        };
        Ok(PlatformTx {
            tx,
            store: self.clone(),
            tenant_id: tenant_id.to_owned(),
            platform: platform.to_owned(),
        })
    }

    /// Set a tenant's webhook secret for `platform`.
    pub async fn set_integration_secret(
        &self,
        tenant_id: &str,
        platform: &str,
        secret: &str,
    ) -> Result<(), StoreError> {
        let turn = self.writing().await;
        sqlx::query(
            "INSERT INTO integrations (tenant_id, platform, secret, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, platform) DO UPDATE SET secret = excluded.secret, updated_at = excluded.updated_at",
        )
        .bind(tenant_id)
        .bind(platform)
        .bind(secret)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.durable(turn).await?;
        Ok(())
    }

    /// A tenant's webhook secret for `platform`.
    pub async fn integration_secret(
        &self,
        tenant_id: &str,
        platform: &str,
    ) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT secret FROM integrations WHERE tenant_id = $1 AND platform = $2",
        )
        .bind(tenant_id)
        .bind(platform)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(secret,)| secret))
    }

    /// The platforms a tenant configured, with when (never the secrets).
    pub async fn integrations(&self, tenant_id: &str) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT platform, updated_at FROM integrations WHERE tenant_id = $1 ORDER BY platform",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?)
    }
}

impl PlatformTx {
    /// The last known state of the platform order.
    pub async fn order(&mut self, order_id: &str) -> Result<Option<PlatformOrderRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT platform_status, snapshot FROM platform_orders WHERE tenant_id = $1 AND platform = $2 AND order_id = $3",
        )
        .bind(&self.tenant_id)
        .bind(&self.platform)
        .bind(order_id)
        .fetch_optional(&mut *self.tx)
        .await?)
    }

    /// Remember the latest state of the platform order.
    pub async fn set_order(
        &mut self,
        order_id: &str,
        platform_status: Option<&str>,
        snapshot: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO platform_orders (tenant_id, platform, order_id, platform_status, snapshot, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant_id, platform, order_id)
             DO UPDATE SET platform_status = COALESCE(excluded.platform_status, platform_orders.platform_status),
                           snapshot = excluded.snapshot, updated_at = excluded.updated_at",
        )
        .bind(&self.tenant_id)
        .bind(&self.platform)
        .bind(order_id)
        .bind(platform_status)
        .bind(snapshot)
        .bind(now_ms())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Store an event as `id` with `status` (`received`, or `ignored` for
    /// one recorded without notifying) unless one with the same idempotency
    /// key exists. Returns the stored event and whether it is new.
    pub async fn insert_event(
        &mut self,
        new: &NewEvent<'_>,
        id: &str,
        status: &str,
        received_at: i64,
    ) -> Result<(EventRow, bool), StoreError> {
        super::events::insert_event(&mut *self.tx, new, id, status, received_at).await
    }

    /// Append an audit entry, committed with the rest.
    pub async fn audit(&mut self, e: AuditEntry<'_>) -> Result<(), StoreError> {
        super::audit::insert_audit(&mut *self.tx, &e, now_ms()).await
    }

    /// Keep a verified delivery about `order_id` until the order arrives.
    /// Returns `false` when one with the same `dedupe_key` is already held.
    pub async fn hold(
        &mut self,
        order_id: &str,
        dedupe_key: &str,
        topic: &str,
        headers: &str,
        body: &str,
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO platform_pending (id, tenant_id, platform, order_id, dedupe_key, topic, headers, body, received_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (tenant_id, platform, dedupe_key) DO NOTHING",
        )
        .bind(super::new_id("pnd"))
        .bind(&self.tenant_id)
        .bind(&self.platform)
        .bind(order_id)
        .bind(dedupe_key)
        .bind(topic)
        .bind(headers)
        .bind(body)
        .bind(now_ms())
        .execute(&mut *self.tx)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// Take (delete and return) the deliveries held for `order_id`, in the
    /// order they were received.
    pub async fn take_pending(&mut self, order_id: &str) -> Result<Vec<PendingRow>, StoreError> {
        let mut rows: Vec<PendingRow> = sqlx::query_as(&format!(
            "DELETE FROM platform_pending WHERE tenant_id = $1 AND platform = $2 AND order_id = $3
             RETURNING {PENDING_COLUMNS}"
        ))
        .bind(&self.tenant_id)
        .bind(&self.platform)
        .bind(order_id)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.sort_by(|a, b| (a.received_at, &a.id).cmp(&(b.received_at, &b.id)));
        Ok(rows)
    }

    /// Take (delete and return) the deliveries held since before
    /// `before_ms`, whatever their order: it never arrived.
    pub async fn expire_pending(&mut self, before_ms: i64) -> Result<Vec<PendingRow>, StoreError> {
        let mut rows: Vec<PendingRow> = sqlx::query_as(&format!(
            "DELETE FROM platform_pending WHERE tenant_id = $1 AND platform = $2 AND received_at < $3
             RETURNING {PENDING_COLUMNS}"
        ))
        .bind(&self.tenant_id)
        .bind(&self.platform)
        .bind(before_ms)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.sort_by(|a, b| (a.received_at, &a.id).cmp(&(b.received_at, &b.id)));
        Ok(rows)
    }

    /// How the delivery `delivery_key` was handled before, if it was: the
    /// event it stored, if any, and its outcome (`accepted`, `held`, ...).
    pub async fn seen(
        &mut self,
        delivery_key: &str,
    ) -> Result<Option<(Option<String>, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT event_id, outcome FROM platform_deliveries
             WHERE tenant_id = $1 AND platform = $2 AND delivery_key = $3",
        )
        .bind(&self.tenant_id)
        .bind(&self.platform)
        .bind(delivery_key)
        .fetch_optional(&mut *self.tx)
        .await?)
    }

    /// Remember that the delivery `delivery_key` was handled, and forget
    /// those handled before `forget_before_ms`.
    pub async fn mark_seen(
        &mut self,
        delivery_key: &str,
        event_id: Option<&str>,
        outcome: &str,
        forget_before_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM platform_deliveries WHERE tenant_id = $1 AND platform = $2 AND received_at < $3",
        )
        .bind(&self.tenant_id)
        .bind(&self.platform)
        .bind(forget_before_ms)
        .execute(&mut *self.tx)
        .await?;
        sqlx::query(
            "INSERT INTO platform_deliveries (tenant_id, platform, delivery_key, event_id, outcome, received_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant_id, platform, delivery_key) DO NOTHING",
        )
        .bind(&self.tenant_id)
        .bind(&self.platform)
        .bind(delivery_key)
        .bind(event_id)
        .bind(outcome)
        .bind(now_ms())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Store everything done in this transaction.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        self.store.durable(None).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::order_lock_key;

    #[test]
    fn lock_keys_tell_orders_tenants_and_platforms_apart() {
        let key = order_lock_key("ten_1", "shopify", "42");
        assert_eq!(key, order_lock_key("ten_1", "shopify", "42"));
        assert_ne!(key, order_lock_key("ten_1", "shopify", "43"));
        assert_ne!(key, order_lock_key("ten_2", "shopify", "42"));
        assert_ne!(key, order_lock_key("ten_1", "woocommerce", "42"));
        assert_ne!(
            order_lock_key("ten_1", "shopify1", "2"),
            order_lock_key("ten_1", "shopify", "12")
        );
    }
}
