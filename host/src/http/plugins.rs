//! `POST /v1/plugins` (upload), `GET /v1/plugins`, and per plugin:
//! `install`, `dry-run` and `replay`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tidings_sdk::action::Action;
use tidings_sdk::types::{Context, OrderEvent, PluginInfo, Timestamp};

use super::{ApiError, AppState, Caller, parse_body, rfc3339};
use crate::decide::{DecideError, Decision, LoadError};
use crate::ingest;
use crate::pipeline::OrderContext;
use crate::store::PluginRow;

/// Uploads may carry multipart framing around the component.
const UPLOAD_OVERHEAD: usize = 64 << 10;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/plugins", post(upload).get(list))
        .route("/v1/plugins/{id}", get(show))
        .route("/v1/plugins/{id}/install", post(install))
        .route("/v1/plugins/{id}/dry-run", post(dry_run))
        .route("/v1/plugins/{id}/replay", post(replay))
        // The component limit is enforced (413) by the handler; this only
        // keeps absurd bodies from being read at all.
        .layer(DefaultBodyLimit::max(4 * (2 << 20) + UPLOAD_OVERHEAD))
}

fn plugin_json(row: &PluginRow) -> Value {
    let info: Value = serde_json::from_str(&row.info).unwrap_or(Value::Null);
    json!({
        "id": row.id,
        "name": row.name,
        "version": row.version,
        "sha256": row.sha256,
        "size": row.size,
        "contract": row.contract,
        "shared": row.tenant_id.is_none(),
        "describe": {
            "name": info["name"],
            "version": info["version"],
            "handles": info["handles"],
            "config_schema": serde_json::from_str::<Value>(info["config_schema"].as_str().unwrap_or("null")).unwrap_or(Value::Null),
        },
        "created_at": rfc3339(row.created_at),
    })
}

/// The component bytes: the raw body, or the first file part of a multipart body.
async fn component_bytes(state: &AppState, request: Request) -> Result<Bytes, ApiError> {
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if !is_multipart {
        return Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::new(e.status(), "bad_request", e.body_text()));
    }
    let mut multipart = Multipart::from_request(request, state)
        .await
        .map_err(|e| ApiError::bad_request(e.body_text()))?;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| ApiError::new(e.status(), "bad_request", e.body_text()))?
    {
        if field.file_name().is_some() || field.name() == Some("component") {
            return field
                .bytes()
                .await
                .map_err(|e| ApiError::new(e.status(), "bad_request", e.body_text()));
        }
    }
    Err(ApiError::invalid(
        "component",
        "the multipart body has no file part",
    ))
}

fn load_error(err: LoadError) -> ApiError {
    match err {
        LoadError::TooLarge { .. } => ApiError::too_large(err.to_string()),
        other => ApiError::invalid("component", other.to_string()),
    }
}

async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let owner = match caller.merchant_tenant() {
        Ok(tenant) => Some(tenant.to_owned()),
        Err(_) if caller.scope == super::Scope::Operator => None,
        Err(e) => return Err(e),
    };
    let bytes = component_bytes(&state, request).await?;
    let runtime = state.pipeline.runtime.clone();
    let component = bytes.clone();
    let plugin = tokio::task::spawn_blocking(move || runtime.load(&component))
        .await
        .map_err(ApiError::internal)?
        .map_err(load_error)?;
    let info = plugin.info();
    let row = state
        .pipeline
        .store
        .insert_plugin(
            owner.as_deref(),
            &info.name,
            &info.version,
            &plugin.id().sha256,
            &plugin.contract_version().to_string(),
            &serde_json::to_string(info).expect("plugin info serialises"),
            &bytes,
        )
        .await?;
    state.pipeline.remember_plugin(&row.id, plugin);
    Ok((StatusCode::CREATED, Json(plugin_json(&row))))
}

async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let rows = match caller.merchant_tenant() {
        Ok(tenant) => state.pipeline.store.plugins_visible_to(tenant).await?,
        Err(_) if caller.scope == super::Scope::Operator => {
            state.pipeline.store.all_plugins().await?
        }
        Err(e) => return Err(e),
    };
    Ok(Json(
        json!({ "items": rows.iter().map(plugin_json).collect::<Vec<_>>(), "next": null }),
    ))
}

async fn visible(state: &AppState, tenant_id: &str, id: &str) -> Result<PluginRow, ApiError> {
    state
        .pipeline
        .store
        .plugin_visible_to(tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("plugin"))
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = caller.merchant_tenant()?;
    Ok(Json(plugin_json(&visible(&state, tenant_id, &id).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstallBody {
    #[serde(default)]
    config: Option<Value>,
}

/// Plugins' config schemas, compiled once per process and kept by plugin
/// id (a stored plugin never changes). Compiling a schema builds the
/// regexes of its `pattern`s, which cost more than the rest of a dry run.
#[derive(Default)]
pub struct ConfigSchemas {
    compiled: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

impl ConfigSchemas {
    /// Most schemas kept; past it the cache starts over, so an operator
    /// with many thousands of plugins pays a compile now and then rather
    /// than memory without bound.
    const MAX_KEPT: usize = 4096;

    /// The compiled config schema of `row`'s plugin.
    fn validator(&self, row: &PluginRow) -> Result<Arc<jsonschema::Validator>, ApiError> {
        if let Some(validator) = self.lock().get(&row.id) {
            return Ok(validator.clone());
        }
        let info: PluginInfo = serde_json::from_str(&row.info).map_err(ApiError::internal)?;
        let schema: Value =
            serde_json::from_str(&info.config_schema).map_err(ApiError::internal)?;
        let validator = Arc::new(jsonschema::validator_for(&schema).map_err(|e| {
            ApiError::invalid(
                "config",
                format!("the plugin's config schema is unusable: {e}"),
            )
        })?);
        let mut compiled = self.lock();
        if compiled.len() >= Self::MAX_KEPT {
            compiled.clear();
        }
        compiled.insert(row.id.clone(), validator.clone());
        Ok(validator)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<jsonschema::Validator>>> {
        self.compiled.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Check `config` against the plugin's JSON Schema; the first violation is
/// named by its path under `config`.
fn validate_config(state: &AppState, row: &PluginRow, config: &Value) -> Result<(), ApiError> {
    let validator = state.config_schemas.validator(row)?;
    if let Some(err) = validator.iter_errors(config).next() {
        let pointer = err.instance_path().to_string();
        let field = if pointer.is_empty() {
            "config".to_owned()
        } else {
            format!("config{}", pointer.replace('/', "."))
        };
        return Err(ApiError::invalid(field, err.to_string()));
    }
    Ok(())
}

async fn install(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let tenant_id = caller.merchant_tenant()?;
    let row = visible(&state, tenant_id, &id).await?;
    let body: InstallBody = if body.is_empty() {
        InstallBody { config: None }
    } else {
        parse_body(&body)?
    };
    let config = body.config.unwrap_or_else(|| json!({}));
    validate_config(&state, &row, &config)?;
    let install = state
        .pipeline
        .store
        .install_plugin(tenant_id, &row, &config.to_string())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": install.id,
            "plugin_id": row.id,
            "plugin": format!("{}@{}", row.name, row.version),
            "config": config,
            "created_at": rfc3339(install.created_at),
        })),
    ))
}

/// The config a dry run or replay of `row` decides with: the one `given`,
/// else the tenant's install of a plugin by that name, else `{}`; checked
/// against `row`'s schema unless it is the install of this very plugin,
/// which was checked when it was installed.
async fn config_for(
    state: &AppState,
    tenant_id: &str,
    row: &PluginRow,
    given: Option<Value>,
) -> Result<Value, ApiError> {
    let (config, checked) = match given {
        Some(config) => (config, false),
        None => {
            let installs = state.pipeline.store.installs(tenant_id).await?;
            match installs.into_iter().find(|i| i.plugin_name == row.name) {
                Some(install) => (
                    serde_json::from_str(&install.config).unwrap_or_else(|_| json!({})),
                    install.plugin_id == row.id,
                ),
                None => (json!({}), false),
            }
        }
    };
    if !checked {
        validate_config(state, row, &config)?;
    }
    Ok(config)
}

fn decision_json(result: &Result<Decision, DecideError>) -> Value {
    match result {
        Ok(d) => {
            let outcome = match &d.outcome {
                Ok(actions) => json!({ "actions": actions }),
                Err(e) => json!({ "rule_error": e }),
            };
            json!({ "plugin": d.plugin, "outcome": outcome, "usage": d.usage, "log": d.log })
        }
        Err(e) => {
            json!({ "plugin": e.plugin, "outcome": { "fault": e.fault }, "usage": e.usage, "log": e.log })
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DryRunBody {
    event: Value,
    #[serde(default)]
    config: Option<Value>,
    #[serde(default)]
    now: Option<Timestamp>,
}

async fn dry_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = caller.merchant_tenant()?;
    let row = visible(&state, tenant_id, &id).await?;
    let body: DryRunBody = parse_body(&body)?;
    let event = ingest::parse(&body.event.to_string()).map_err(|e| match e {
        ingest::IngestError::Invalid { field, message } => {
            ApiError::invalid(format!("event.{field}"), message)
        }
        other => ApiError::from(other),
    })?;
    let config = config_for(&state, tenant_id, &row, body.config).await?;
    let (_, settings) = state.pipeline.tenant(tenant_id).await?;
    let plugin = state.pipeline.plugin_of(&row).await?;
    let now = body.now.unwrap_or_else(Timestamp::now);
    let OrderContext {
        history,
        open_escalations,
    } = state
        .pipeline
        .order_context(tenant_id, &event.order.id, i64::MAX)
        .await?;
    let ctx = Context {
        tenant: tenant_id.to_owned(),
        now,
        config,
        history,
        open_escalations,
    };
    let result = state
        .pipeline
        .runtime
        .decide(tenant_id, &plugin, &event, &ctx, &settings.limits)
        .await;
    let mut policy = Vec::new();
    if let Ok(Decision {
        outcome: Ok(actions),
        ..
    }) = &result
    {
        for action in actions {
            if let Action::Notify(notify) = action {
                let (verdict, _) = state
                    .pipeline
                    .verdict(tenant_id, &event, &settings, notify, now)
                    .await?;
                policy.push(json!({ "template": notify.template, "verdict": verdict }));
            }
        }
    }
    let mut out = decision_json(&result);
    out["policy"] = json!(policy);
    out["sent"] = json!(false);
    Ok(Json(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    order_id: String,
    #[serde(default)]
    config: Option<Value>,
}

async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = caller.merchant_tenant()?;
    let row = visible(&state, tenant_id, &id).await?;
    let body: ReplayBody = parse_body(&body)?;
    let config = config_for(&state, tenant_id, &row, body.config).await?;
    let (_, settings) = state.pipeline.tenant(tenant_id).await?;
    let plugin = state.pipeline.plugin_of(&row).await?;
    let events = state
        .pipeline
        .store
        .order_events(tenant_id, &body.order_id)
        .await?;
    if events.is_empty() {
        return Err(ApiError::not_found("order"));
    }
    let mut out = Vec::new();
    let mut changed = 0;
    for event_row in events {
        let event: OrderEvent =
            serde_json::from_str(&event_row.body).map_err(ApiError::internal)?;
        let decisions = state
            .pipeline
            .store
            .decisions_for_event(&event_row.id)
            .await?;
        // Replay as of the original decision: same clock, same history.
        let decided_at = decisions
            .first()
            .map_or(event_row.received_at, |d| d.created_at);
        let now = Timestamp::from_millisecond(decided_at).unwrap_or_else(|_| Timestamp::now());
        let OrderContext {
            history,
            open_escalations,
        } = state
            .pipeline
            .order_context(tenant_id, &event.order.id, decided_at)
            .await?;
        let ctx = Context {
            tenant: tenant_id.to_owned(),
            now,
            config: config.clone(),
            history,
            open_escalations,
        };
        let result = state
            .pipeline
            .runtime
            .decide(tenant_id, &plugin, &event, &ctx, &settings.limits)
            .await;
        // Compare with what the plugin of the same name decided; with no such
        // decision, with everything that was decided for the event.
        let same_name: Vec<_> = decisions
            .iter()
            .filter(|d| d.plugin_name == row.name)
            .collect();
        let compared = if same_name.is_empty() {
            decisions.iter().collect()
        } else {
            same_name
        };
        let recorded: Vec<Value> = compared
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(&d.detail).ok())
            .flat_map(|d| d["actions"].as_array().cloned().unwrap_or_default())
            .collect();
        let replayed: Vec<Value> = match &result {
            Ok(Decision {
                outcome: Ok(actions),
                ..
            }) => actions.iter().map(|a| json!(a)).collect(),
            _ => Vec::new(),
        };
        let added: Vec<&Value> = replayed.iter().filter(|a| !recorded.contains(a)).collect();
        let removed: Vec<&Value> = recorded.iter().filter(|a| !replayed.contains(a)).collect();
        let same = added.is_empty()
            && removed.is_empty()
            && result.as_ref().is_ok_and(|d| d.outcome.is_ok());
        if !same {
            changed += 1;
        }
        out.push(json!({
            "event_id": event_row.id,
            "kind": event_row.kind,
            "decided_at": rfc3339(decided_at),
            "recorded_by": compared.iter().map(|d| format!("{}@{}", d.plugin_name, d.plugin_version)).collect::<Vec<_>>(),
            "replayed": decision_json(&result),
            "same": same,
            "added": added,
            "removed": removed,
        }));
    }
    Ok(Json(json!({
        "plugin": format!("{}@{}", row.name, row.version),
        "order_id": body.order_id,
        "events": out.len(),
        "changed": changed,
        "items": out,
    })))
}
