//! `POST /v1/tenants`, `POST /v1/tenants/{id}/keys` (operator), and
//! `GET/PUT /v1/settings` (a tenant's own settings).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, Caller, hash_key, new_key, parse_body};
use crate::settings::TenantSettings;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants", post(create_tenant))
        .route("/v1/tenants/{id}/keys", post(create_key))
        .route("/v1/settings", get(get_settings).put(put_settings))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
    timezone: String,
    default_locale: String,
    #[serde(default)]
    settings: Option<Value>,
}

fn tenant_json(t: &crate::store::TenantRow, settings: &TenantSettings) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "timezone": t.timezone,
        "default_locale": t.default_locale,
        "settings": settings,
        "created_at": super::rfc3339(t.created_at),
    })
}

fn check_settings(value: &Value) -> Result<TenantSettings, ApiError> {
    TenantSettings::from_json(&value.to_string())
        .map_err(|e| ApiError::invalid(format!("settings.{}", e.path), e.message))
}

async fn create_tenant(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require_operator()?;
    let new: NewTenant = parse_body(&body)?;
    if new.name.trim().is_empty() {
        return Err(ApiError::invalid("name", "must not be empty"));
    }
    if jiff::tz::TimeZone::get(&new.timezone).is_err() {
        return Err(ApiError::invalid(
            "timezone",
            format!("`{}` is not an IANA timezone", new.timezone),
        ));
    }
    if new.default_locale.trim().is_empty() {
        return Err(ApiError::invalid("default_locale", "must not be empty"));
    }
    let settings_value = new.settings.unwrap_or_else(|| json!({}));
    let settings = check_settings(&settings_value)?;
    let tenant = state
        .pipeline
        .store
        .create_tenant(
            &new.name,
            &new.timezone,
            &new.default_locale,
            &settings_value,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(tenant_json(&tenant, &settings))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    scope: String,
}

async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant_id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require_operator()?;
    let new: NewKey = parse_body(&body)?;
    if !matches!(new.scope.as_str(), "merchant" | "agent") {
        return Err(ApiError::invalid("scope", "must be `merchant` or `agent`"));
    }
    if state.pipeline.store.tenant(&tenant_id).await?.is_none() {
        return Err(ApiError::not_found("tenant"));
    }
    let key = new_key();
    let id = state
        .pipeline
        .store
        .insert_api_key(Some(&tenant_id), &new.scope, &hash_key(&key))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "key": key, "scope": new.scope, "tenant_id": tenant_id })),
    ))
}

async fn get_settings(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = caller.merchant_tenant()?;
    let (tenant, settings) = state.pipeline.tenant(tenant_id).await?;
    Ok(Json(tenant_json(&tenant, &settings)))
}

async fn put_settings(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = caller.merchant_tenant()?;
    let value: Value = parse_body(&body)?;
    check_settings(&value)?;
    state
        .pipeline
        .store
        .set_tenant_settings(tenant_id, &value)
        .await?;
    let (tenant, settings) = state.pipeline.tenant(tenant_id).await?;
    Ok(Json(tenant_json(&tenant, &settings)))
}
