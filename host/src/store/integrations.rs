//! Platform integrations (webhook secrets) and platform order snapshots.

use sqlx::FromRow;

use super::{Store, StoreError, now_ms};

/// The last state of a platform order.
#[derive(Debug, Clone, FromRow)]
pub struct PlatformOrderRow {
    /// The platform's status (WooCommerce order status; Shopify summary).
    pub platform_status: Option<String>,
    /// The last mapped order, JSON.
    pub snapshot: String,
}

impl Store {
    /// Set a tenant's webhook secret for `platform`.
    pub async fn set_integration_secret(
        &self,
        tenant_id: &str,
        platform: &str,
        secret: &str,
    ) -> Result<(), StoreError> {
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

    /// The last known state of a platform order.
    pub async fn platform_order(
        &self,
        tenant_id: &str,
        platform: &str,
        order_id: &str,
    ) -> Result<Option<PlatformOrderRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT platform_status, snapshot FROM platform_orders WHERE tenant_id = $1 AND platform = $2 AND order_id = $3",
        )
        .bind(tenant_id)
        .bind(platform)
        .bind(order_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Remember the latest state of a platform order.
    pub async fn set_platform_order(
        &self,
        tenant_id: &str,
        platform: &str,
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
        .bind(tenant_id)
        .bind(platform)
        .bind(order_id)
        .bind(platform_status)
        .bind(snapshot)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
