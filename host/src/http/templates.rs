//! `PUT /v1/templates/{name}/{channel}/{locale}`, `GET /v1/templates`,
//! `POST /v1/templates/preview`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tidings_sdk::types::{Channel, Timestamp};

use super::{ApiError, AppState, Caller, parse_body, rfc3339};
use crate::ingest;
use crate::pipeline::parse_enum;
use crate::render::{self, RenderError, TemplateParts, TemplateSet};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/templates", get(list))
        .route("/v1/templates/{name}/{channel}/{locale}", put(put_template))
        .route("/v1/templates/preview", post(preview))
}

fn valid_name(field: &str, value: &str) -> Result<(), ApiError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            "must be 1-128 letters, digits, `-`, `_` or `.`",
        ))
    }
}

fn render_error(err: RenderError) -> ApiError {
    match &err {
        RenderError::Syntax { part, .. }
        | RenderError::Render { part, .. }
        | RenderError::MissingPart { part } => ApiError::invalid(*part, err.to_string()),
        _ => ApiError::invalid("template", err.to_string()),
    }
}

async fn put_template(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, channel, locale)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = caller.merchant_tenant()?;
    valid_name("name", &name)?;
    valid_name("locale", &locale)?;
    let channel_value: Channel = parse_enum(&channel).ok_or_else(|| {
        ApiError::invalid("channel", "must be email, sms, whatsapp, push or webhook")
    })?;
    let parts: TemplateParts = parse_body(&body)?;
    render::validate(&parts, channel_value).map_err(render_error)?;
    render::check_complete(&name, &parts, channel_value).map_err(render_error)?;
    state
        .pipeline
        .store
        .put_template(
            tenant_id,
            &name,
            &channel,
            &locale,
            parts.subject.as_deref(),
            parts.text.as_deref(),
            parts.html.as_deref(),
        )
        .await?;
    Ok(Json(
        json!({ "name": name, "channel": channel, "locale": locale, "parts": parts }),
    ))
}

async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let tenant_id = caller.merchant_tenant()?;
    let rows = state.pipeline.store.templates(tenant_id).await?;
    let items: Vec<Value> = rows
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "channel": t.channel,
                "locale": t.locale,
                "parts": { "subject": t.subject, "text": t.text, "html": t.html },
                "updated_at": rfc3339(t.updated_at),
            })
        })
        .collect();
    Ok(Json(json!({ "items": items, "next": null })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewBody {
    template: String,
    channel: Channel,
    #[serde(default)]
    locale: Option<String>,
    event: Value,
    #[serde(default)]
    data: BTreeMap<String, String>,
}

async fn preview(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = caller.merchant_tenant()?;
    let body: PreviewBody = parse_body(&body)?;
    let event = ingest::parse(&body.event.to_string()).map_err(|e| match e {
        ingest::IngestError::Invalid { field, message } => {
            ApiError::invalid(format!("event.{field}"), message)
        }
        other => ApiError::from(other),
    })?;
    let (tenant, settings) = state.pipeline.tenant(tenant_id).await?;
    let channel = crate::pipeline::enum_str(&body.channel);
    let mut templates = TemplateSet::new();
    for t in state
        .pipeline
        .store
        .templates_for(tenant_id, &body.template, &channel)
        .await?
    {
        if let Some(c) = parse_enum::<Channel>(&t.channel) {
            templates.insert(
                (t.name, c, t.locale),
                TemplateParts {
                    subject: t.subject,
                    text: t.text,
                    html: t.html,
                },
            );
        }
    }
    let shop = settings.shop.info();
    let request = render::RenderRequest {
        template: &body.template,
        channel: body.channel,
        locale: body.locale.as_deref(),
        tenant_default_locale: &tenant.default_locale,
        event: &event,
        data: &body.data,
        shop: &shop,
        now: Timestamp::now(),
        fuel: render::DEFAULT_FUEL,
    };
    let rendered = render::render(&templates, &request).map_err(render_error)?;
    Ok(Json(json!(rendered)))
}
