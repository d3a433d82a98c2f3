//! Delivery: retries, channel fallback, the tenant's channel settings and
//! provider references for status callbacks.

use super::messages::record_attempt;
use super::{MessageRow, Store, StoreError, now_ms};

impl Store {
    /// After a transient failure: record the attempt and put the message back
    /// in the queue, due at `at` (ms).
    pub async fn retry_message(
        &self,
        m: &MessageRow,
        at: i64,
        reason: &str,
        rendered: Option<&str>,
    ) -> Result<(), StoreError> {
        let turn = self.writing().await;
        let now = now_ms();
        let attempt = m.attempts + 1;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE messages SET status = 'scheduled', status_reason = $1, send_at = $2, attempts = $3,
                                 rendered = COALESCE($4, rendered), lease_owner = NULL, lease_until = NULL, updated_at = $5
             WHERE id = $6",
        )
        .bind(format!("retrying after: {reason}"))
        .bind(at)
        .bind(attempt)
        .bind(rendered)
        .bind(now)
        .bind(&m.id)
        .execute(&mut *tx)
        .await?;
        record_attempt(&mut *tx, m, attempt, now, "failed", reason).await?;
        tx.commit().await?;
        self.durable(turn).await?;
        Ok(())
    }
}

impl Store {
    /// A tenant's settings of every configured channel: (channel, config
    /// JSON, updated ms).
    pub async fn channel_settings(
        &self,
        tenant_id: &str,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT channel, config, updated_at FROM channel_settings WHERE tenant_id = $1 ORDER BY channel",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// [`Store::channel_settings`], as read at most [`super::CACHE_TTL`] ago.
    pub async fn channel_settings_cached(
        &self,
        tenant_id: &str,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        let read = self.channel_settings(tenant_id);
        self.cached.channels.get_or_read(tenant_id, "", read).await
    }

    /// Set (or replace) a tenant's settings of one channel.
    pub async fn set_channel_settings(
        &self,
        tenant_id: &str,
        channel: &str,
        config: &str,
    ) -> Result<(), StoreError> {
        let turn = self.writing().await;
        sqlx::query(
            "INSERT INTO channel_settings (tenant_id, channel, config, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, channel) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at",
        )
        .bind(tenant_id)
        .bind(channel)
        .bind(config)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.cached.forget(tenant_id);
        self.durable(turn).await?;
        Ok(())
    }

    /// Remove a tenant's settings of one channel; whether there were any.
    pub async fn delete_channel_settings(
        &self,
        tenant_id: &str,
        channel: &str,
    ) -> Result<bool, StoreError> {
        let turn = self.writing().await;
        let done =
            sqlx::query("DELETE FROM channel_settings WHERE tenant_id = $1 AND channel = $2")
                .bind(tenant_id)
                .bind(channel)
                .execute(&self.pool)
                .await?;
        self.cached.forget(tenant_id);
        self.durable(turn).await?;
        Ok(done.rows_affected() > 0)
    }

    /// After `m.channel` failed for good: record the attempt and move the
    /// message to `channel`, due at `at` (ms), with `rest` (JSON) left to
    /// try after it. Its rendering is dropped: the new channel has its own
    /// templates.
    pub async fn fall_back(
        &self,
        m: &MessageRow,
        channel: &str,
        rest: &str,
        at: i64,
        reason: &str,
    ) -> Result<(), StoreError> {
        let turn = self.writing().await;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE messages SET channel = $1, fallback_channels = $2, status = 'scheduled', status_reason = $3,
                                 send_at = $4, attempts = 0, rendered = NULL, lease_owner = NULL,
                                 lease_until = NULL, updated_at = $5
             WHERE id = $6",
        )
        .bind(channel)
        .bind(rest)
        .bind(format!("falling back from {} to {channel}: {reason}", m.channel))
        .bind(at)
        .bind(now)
        .bind(&m.id)
        .execute(&mut *tx)
        .await?;
        let detail = format!("{}: {reason}", m.channel);
        record_attempt(&mut *tx, m, m.attempts + 1, now, "failed", &detail).await?;
        tx.commit().await?;
        self.durable(turn).await?;
        Ok(())
    }

    /// The message of a tenant that the provider knows as `provider_id`.
    pub async fn message_by_provider_id(
        &self,
        tenant_id: &str,
        provider_id: &str,
    ) -> Result<Option<MessageRow>, StoreError> {
        let query = format!(
            "SELECT {} FROM messages WHERE tenant_id = $1 AND provider_id = $2",
            super::messages::MESSAGE_COLUMNS
        );
        Ok(sqlx::query_as(&query)
            .bind(tenant_id)
            .bind(provider_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// What the provider or the recipient's server said after the hand-off
    /// (`delivered`, `undelivered`, `failed`, `bounced`, `complained`):
    /// the message's final status, with the report kept as an attempt.
    /// Only a message still `sent` changes, so a late or repeated callback
    /// cannot undo a final status; returns whether it changed.
    pub async fn report_delivery(
        &self,
        m: &MessageRow,
        status: &str,
        detail: &str,
    ) -> Result<bool, StoreError> {
        let turn = self.writing().await;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE messages SET status = $1, status_reason = $2, updated_at = $3
             WHERE id = $4 AND status = 'sent'",
        )
        .bind(status)
        .bind(detail)
        .bind(now)
        .bind(&m.id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        record_attempt(&mut *tx, m, m.attempts, now, status, detail).await?;
        tx.commit().await?;
        self.durable(turn).await?;
        Ok(changed)
    }
}
