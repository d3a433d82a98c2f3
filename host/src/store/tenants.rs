//! Tenants, API keys and templates.

use sqlx::FromRow;

use super::{Store, StoreError, new_id, now_ms};

/// A tenant (shop).
#[derive(Debug, Clone, FromRow, serde::Serialize)]
pub struct TenantRow {
    /// Tenant id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The shop's IANA timezone.
    pub timezone: String,
    /// The shop's default locale for templates.
    pub default_locale: String,
    /// Settings as JSON (shop info, policy, sandbox limits).
    #[serde(skip)]
    pub settings: String,
    /// Creation time, ms.
    #[serde(skip)]
    pub created_at: i64,
}

/// A stored API key (the key itself is never stored, only its hash).
#[derive(Debug, Clone, FromRow)]
pub struct ApiKeyRow {
    /// Key id.
    pub id: String,
    /// Tenant, or none for operator keys.
    pub tenant_id: Option<String>,
    /// `operator`, `merchant` or `agent`.
    pub scope: String,
}

/// A stored template.
#[derive(Debug, Clone, FromRow)]
pub struct TemplateRow {
    /// Template name.
    pub name: String,
    /// Channel.
    pub channel: String,
    /// Locale.
    pub locale: String,
    /// Email subject.
    pub subject: Option<String>,
    /// Plain-text body.
    pub text: Option<String>,
    /// HTML body.
    pub html: Option<String>,
    /// Last change, ms.
    pub updated_at: i64,
}

impl Store {
    /// Create a tenant.
    pub async fn create_tenant(
        &self,
        name: &str,
        timezone: &str,
        default_locale: &str,
        settings: &serde_json::Value,
    ) -> Result<TenantRow, StoreError> {
        let turn = self.writing().await;
        let row = TenantRow {
            id: new_id("ten"),
            name: name.to_owned(),
            timezone: timezone.to_owned(),
            default_locale: default_locale.to_owned(),
            settings: settings.to_string(),
            created_at: now_ms(),
        };
        sqlx::query(
            "INSERT INTO tenants (id, name, timezone, default_locale, settings, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&row.id)
        .bind(&row.name)
        .bind(&row.timezone)
        .bind(&row.default_locale)
        .bind(&row.settings)
        .bind(row.created_at)
        .execute(&self.pool)
        .await?;
        self.durable(turn).await?;
        Ok(row)
    }

    /// A tenant by id.
    pub async fn tenant(&self, id: &str) -> Result<Option<TenantRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// [`Store::tenant`], as read at most [`super::CACHE_TTL`] ago: for the
    /// pipeline, which reads it for every event and message.
    pub async fn tenant_cached(&self, id: &str) -> Result<Option<TenantRow>, StoreError> {
        self.cached
            .tenants
            .get_or_read(id, "", self.tenant(id))
            .await
    }

    /// Replace a tenant's settings document.
    pub async fn set_tenant_settings(
        &self,
        id: &str,
        settings: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let turn = self.writing().await;
        sqlx::query("UPDATE tenants SET settings = $1 WHERE id = $2")
            .bind(settings.to_string())
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.cached.forget(id);
        self.durable(turn).await?;
        Ok(())
    }

    /// Store a key's hash with its scope.
    pub async fn insert_api_key(
        &self,
        tenant_id: Option<&str>,
        scope: &str,
        key_hash: &str,
    ) -> Result<String, StoreError> {
        let turn = self.writing().await;
        let id = new_id("key");
        sqlx::query("INSERT INTO api_keys (id, tenant_id, scope, key_hash, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&id)
            .bind(tenant_id)
            .bind(scope)
            .bind(key_hash)
            .bind(now_ms())
            .execute(&self.pool)
            .await
            .map_err(|e| StoreError::from_insert(e, "api key"))?;
        self.durable(turn).await?;
        Ok(id)
    }

    /// The key with this hash.
    ///
    /// Keys are never changed once created, so a key found is kept for
    /// [`CACHE_TTL`](super::CACHE_TTL) (every request authenticates); one
    /// not found is looked up again every time.
    pub async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRow>, StoreError> {
        if let Some(row) = self.cached.keys.get(key_hash, "") {
            return Ok(Some(row));
        }
        let read = std::time::Instant::now();
        let row: Option<ApiKeyRow> =
            sqlx::query_as("SELECT id, tenant_id, scope FROM api_keys WHERE key_hash = $1")
                .bind(key_hash)
                .fetch_optional(&self.pool)
                .await?;
        if let Some(row) = &row {
            self.cached.keys.put(key_hash, "", read, row.clone());
        }
        Ok(row)
    }

    /// Create or replace a template.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_template(
        &self,
        tenant_id: &str,
        name: &str,
        channel: &str,
        locale: &str,
        subject: Option<&str>,
        text: Option<&str>,
        html: Option<&str>,
    ) -> Result<(), StoreError> {
        let turn = self.writing().await;
        sqlx::query(
            "INSERT INTO templates (tenant_id, name, channel, locale, subject, text, html, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (tenant_id, name, channel, locale)
             DO UPDATE SET subject = excluded.subject, text = excluded.text, html = excluded.html,
                           updated_at = excluded.updated_at",
        )
        .bind(tenant_id)
        .bind(name)
        .bind(channel)
        .bind(locale)
        .bind(subject)
        .bind(text)
        .bind(html)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.cached.forget(tenant_id);
        self.durable(turn).await?;
        Ok(())
    }

    /// A tenant's templates, in name/channel/locale order.
    pub async fn templates(&self, tenant_id: &str) -> Result<Vec<TemplateRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT name, channel, locale, subject, text, html, updated_at FROM templates
             WHERE tenant_id = $1 ORDER BY name, channel, locale",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// [`Store::templates_for`], as read at most [`super::CACHE_TTL`] ago.
    pub async fn templates_for_cached(
        &self,
        tenant_id: &str,
        name: &str,
        channel: &str,
    ) -> Result<Vec<TemplateRow>, StoreError> {
        let key = format!("{name}\u{1f}{channel}");
        let read = self.templates_for(tenant_id, name, channel);
        self.cached
            .templates
            .get_or_read(tenant_id, &key, read)
            .await
    }

    /// Every locale of `name` on `channel`, plus the email layouts: what one render may need.
    pub async fn templates_for(
        &self,
        tenant_id: &str,
        name: &str,
        channel: &str,
    ) -> Result<Vec<TemplateRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT name, channel, locale, subject, text, html, updated_at FROM templates
             WHERE tenant_id = $1 AND ((name = $2 AND channel = $3) OR (name = 'layout' AND channel = 'email'))",
        )
        .bind(tenant_id)
        .bind(name)
        .bind(channel)
        .fetch_all(&self.pool)
        .await?)
    }
}
