//! Uploaded plugins and their installs.

use sqlx::FromRow;

use super::{Store, StoreError, new_id, now_ms};

/// An uploaded plugin version.
#[derive(Debug, Clone, FromRow)]
pub struct PluginRow {
    /// Plugin id.
    pub id: String,
    /// Owner tenant; none for the operator's shared catalog.
    pub tenant_id: Option<String>,
    /// Name from `describe()`.
    pub name: String,
    /// Version from `describe()`.
    pub version: String,
    /// Hex sha256 of the component.
    pub sha256: String,
    /// Component size, bytes.
    pub size: i64,
    /// Contract version it was built against.
    pub contract: String,
    /// `describe()` as JSON.
    pub info: String,
    /// Upload time, ms.
    pub created_at: i64,
}

/// A stored plugin as the loader finds it (see [`Store::plugin_digest`]).
#[derive(Debug, Clone, FromRow)]
pub struct PluginDigest {
    /// Hex sha256 of the component.
    pub sha256: String,
    /// Component size, bytes.
    pub size: i64,
    /// `describe()` as JSON.
    pub info: String,
}

impl From<&PluginRow> for PluginDigest {
    fn from(row: &PluginRow) -> Self {
        Self {
            sha256: row.sha256.clone(),
            size: row.size,
            info: row.info.clone(),
        }
    }
}

/// An installed plugin with its merchant config.
#[derive(Debug, Clone, FromRow)]
pub struct InstallRow {
    /// Install id.
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// The installed plugin version.
    pub plugin_id: String,
    /// Its name (one install per name).
    pub plugin_name: String,
    /// Merchant config, JSON.
    pub config: String,
    /// Install time, ms.
    pub created_at: i64,
}

const PLUGIN_COLUMNS: &str =
    "id, tenant_id, name, version, sha256, size, contract, info, created_at";

impl Store {
    /// Store an uploaded plugin. A second upload of the same name and version
    /// by the same owner is a conflict.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_plugin(
        &self,
        tenant_id: Option<&str>,
        name: &str,
        version: &str,
        sha256: &str,
        contract: &str,
        info: &str,
        component: &[u8],
    ) -> Result<PluginRow, StoreError> {
        let turn = self.writing().await;
        let row = PluginRow {
            id: new_id("plg"),
            tenant_id: tenant_id.map(str::to_owned),
            name: name.to_owned(),
            version: version.to_owned(),
            sha256: sha256.to_owned(),
            size: i64::try_from(component.len()).unwrap_or(i64::MAX),
            contract: contract.to_owned(),
            info: info.to_owned(),
            created_at: now_ms(),
        };
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO plugins (id, tenant_id, name, version, sha256, size, contract, info, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&row.id)
        .bind(&row.tenant_id)
        .bind(&row.name)
        .bind(&row.version)
        .bind(&row.sha256)
        .bind(row.size)
        .bind(&row.contract)
        .bind(&row.info)
        .bind(row.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::from_insert(e, &format!("plugin {name}@{version}")))?;
        sqlx::query("INSERT INTO plugin_components (plugin_id, component) VALUES ($1, $2)")
            .bind(&row.id)
            .bind(component)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.durable(turn).await?;
        Ok(row)
    }

    /// A plugin visible to `tenant_id`: its own, or from the shared catalog.
    pub async fn plugin_visible_to(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<PluginRow>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {PLUGIN_COLUMNS} FROM plugins WHERE id = $1 AND (tenant_id = $2 OR tenant_id IS NULL)"
        ))
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Plugins visible to `tenant_id`: its own and the shared catalog.
    pub async fn plugins_visible_to(&self, tenant_id: &str) -> Result<Vec<PluginRow>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {PLUGIN_COLUMNS} FROM plugins WHERE tenant_id = $1 OR tenant_id IS NULL ORDER BY name, created_at"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every plugin (for the operator).
    pub async fn all_plugins(&self) -> Result<Vec<PluginRow>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {PLUGIN_COLUMNS} FROM plugins ORDER BY name, created_at"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// What loading a stored plugin needs besides its bytes: its recorded
    /// sha256 and size, to find its compiled component, and what its
    /// `describe()` returned at upload.
    pub async fn plugin_digest(&self, id: &str) -> Result<Option<PluginDigest>, StoreError> {
        Ok(
            sqlx::query_as("SELECT sha256, size, info FROM plugins WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// A stored plugin's component bytes.
    pub async fn plugin_component(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row: Option<(Vec<u8>,)> =
            sqlx::query_as("SELECT component FROM plugin_components WHERE plugin_id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(bytes,)| bytes))
    }

    /// Install `plugin` for `tenant_id` with `config`, replacing an install of
    /// another version of the same plugin.
    pub async fn install_plugin(
        &self,
        tenant_id: &str,
        plugin: &PluginRow,
        config: &str,
    ) -> Result<InstallRow, StoreError> {
        let turn = self.writing().await;
        let row = InstallRow {
            id: new_id("ins"),
            tenant_id: tenant_id.to_owned(),
            plugin_id: plugin.id.clone(),
            plugin_name: plugin.name.clone(),
            config: config.to_owned(),
            created_at: now_ms(),
        };
        sqlx::query(
            "INSERT INTO plugin_installs (id, tenant_id, plugin_id, plugin_name, config, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant_id, plugin_name)
             DO UPDATE SET plugin_id = excluded.plugin_id, config = excluded.config, created_at = excluded.created_at",
        )
        .bind(&row.id)
        .bind(&row.tenant_id)
        .bind(&row.plugin_id)
        .bind(&row.plugin_name)
        .bind(&row.config)
        .bind(row.created_at)
        .execute(&self.pool)
        .await?;
        self.cached.forget(tenant_id);
        self.durable(turn).await?;
        Ok(row)
    }

    /// [`Store::installs`], as read at most [`super::CACHE_TTL`] ago.
    pub async fn installs_cached(&self, tenant_id: &str) -> Result<Vec<InstallRow>, StoreError> {
        let read = self.installs(tenant_id);
        self.cached.installs.get_or_read(tenant_id, "", read).await
    }

    /// A tenant's installs, oldest first.
    pub async fn installs(&self, tenant_id: &str) -> Result<Vec<InstallRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM plugin_installs WHERE tenant_id = $1 ORDER BY created_at, id",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?)
    }
}
