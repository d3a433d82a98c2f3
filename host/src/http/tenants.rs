//! `POST /v1/tenants`, `POST /v1/tenants/{id}/keys`, `PUT
//! /v1/tenants/{id}/limits` (operator), and `GET/PUT /v1/settings` (a
//! tenant's own settings).
//!
//! Sandbox limits are the operator's: a merchant's `PUT /v1/settings` keeps
//! the stored `limits` and is refused (403) if it tries to change them. Every
//! limit the operator sets is checked against what the engine can enforce
//! (422 naming the field).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, Caller, Scope, hash_key, new_key, parse_body};
use crate::decide::Limits;
use crate::settings::TenantSettings;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants", post(create_tenant))
        .route("/v1/tenants/{id}/keys", post(create_key))
        .route("/v1/tenants/{id}/limits", put(put_limits))
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

fn check_settings(state: &AppState, value: &Value) -> Result<TenantSettings, ApiError> {
    let settings = TenantSettings::from_json(&value.to_string())
        .map_err(|e| ApiError::invalid(format!("settings.{}", e.path), e.message))?;
    check_limits(state, &settings.limits, "settings.limits.")?;
    Ok(settings)
}

/// Limits within what the engine enforces; the error names the field after
/// `prefix`.
fn check_limits(state: &AppState, limits: &Limits, prefix: &str) -> Result<(), ApiError> {
    limits
        .validate(state.pipeline.runtime.engine_limits())
        .map_err(|e| ApiError::invalid(format!("{prefix}{}", e.field), e.message))
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
    let settings = check_settings(&state, &settings_value)?;
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
    let mut value: Value = parse_body(&body)?;
    if !value.is_object() {
        return Err(ApiError::invalid("settings", "must be a JSON object"));
    }
    let current = stored_tenant(&state, tenant_id).await?;
    if caller.scope != Scope::Operator {
        // The stored limits stay; sending them back unchanged (a GET, edited
        // elsewhere, PUT back) is fine.
        let stored: Value = serde_json::from_str(&current.settings).unwrap_or_else(|_| json!({}));
        let stored_limits = stored.get("limits").cloned();
        if let Some(sent) = value.get("limits") {
            let sent: Limits = parse_limits(sent, "settings.limits.")?;
            let in_force = TenantSettings::from_json(&current.settings)
                .map(|s| s.limits)
                .unwrap_or_default();
            if sent != in_force {
                return Err(ApiError::forbidden(
                    "`settings.limits` is set by the operator; leave it out or unchanged",
                ));
            }
        }
        match stored_limits {
            Some(limits) => value["limits"] = limits,
            None => {
                if let Some(object) = value.as_object_mut() {
                    object.remove("limits");
                }
            }
        }
    }
    check_settings(&state, &value)?;
    state
        .pipeline
        .store
        .set_tenant_settings(tenant_id, &value)
        .await?;
    tracing::info!(tenant = tenant_id, by = %caller.key_id, "tenant settings replaced");
    let (tenant, settings) = state.pipeline.tenant(tenant_id).await?;
    Ok(Json(tenant_json(&tenant, &settings)))
}

/// `PUT /v1/tenants/{id}/limits` (operator): replace one tenant's sandbox
/// limits; fields left out take the defaults.
async fn put_limits(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant_id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.require_operator()?;
    let sent: Value = parse_body(&body)?;
    let limits = parse_limits(&sent, "")?;
    check_limits(&state, &limits, "")?;
    let current = stored_tenant(&state, &tenant_id).await?;
    let mut value: Value = serde_json::from_str(&current.settings).unwrap_or_else(|_| json!({}));
    if !value.is_object() {
        value = json!({});
    }
    value["limits"] = serde_json::to_value(&limits).map_err(ApiError::internal)?;
    check_settings(&state, &value)?;
    state
        .pipeline
        .store
        .set_tenant_settings(&tenant_id, &value)
        .await?;
    tracing::info!(tenant = %tenant_id, fuel = limits.fuel, wall_clock_ms = limits.wall_clock_ms, memory_bytes = limits.memory_bytes, "tenant limits set by the operator");
    let (tenant, settings) = state.pipeline.tenant(&tenant_id).await?;
    Ok(Json(tenant_json(&tenant, &settings)))
}

async fn stored_tenant(
    state: &AppState,
    tenant_id: &str,
) -> Result<crate::store::TenantRow, ApiError> {
    state
        .pipeline
        .store
        .tenant(tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))
}

fn parse_limits(value: &Value, prefix: &str) -> Result<Limits, ApiError> {
    tidings_sdk::types::from_json(&value.to_string()).map_err(|e| {
        let field = match e.path.as_str() {
            "" | "." => prefix.trim_end_matches('.').to_owned(),
            path => format!("{prefix}{path}"),
        };
        let field = if field.is_empty() {
            "limits".into()
        } else {
            field
        };
        ApiError::invalid(field, e.message)
    })
}
