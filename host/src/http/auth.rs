//! Bearer keys and scopes. Keys are random, shown once, and stored as
//! sha256 hashes; the operator key comes from configuration.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use rand::RngExt;
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant; tenant administration.
    Operator,
    /// One tenant's data.
    Merchant,
    /// One tenant's escalations and approvals.
    Agent,
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Key id (`operator` for the configured operator key).
    pub key_id: String,
    /// Scope.
    pub scope: Scope,
    /// The tenant of a merchant or agent key.
    pub tenant_id: Option<String>,
    /// `X-Tenant-Id`, which lets the operator act on one tenant.
    pub acting_for: Option<String>,
}

/// A new API key: `tdg_` and 64 hex characters.
pub fn new_key() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!("tdg_{}", hex::encode(bytes))
}

/// The stored form of a key.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Caller {
    /// The tenant this request acts on: a merchant's own, or the one the
    /// operator names with `X-Tenant-Id`. Agents get 403 here.
    pub fn merchant_tenant(&self) -> Result<&str, ApiError> {
        match self.scope {
            Scope::Merchant => self
                .tenant_id
                .as_deref()
                .ok_or_else(|| ApiError::forbidden("key without tenant")),
            Scope::Operator => self.acting_for.as_deref().ok_or_else(|| {
                ApiError::bad_request(
                    "operator keys must name the tenant with the X-Tenant-Id header",
                )
            }),
            Scope::Agent => Err(ApiError::forbidden(
                "agent keys may only use escalations and approvals",
            )),
        }
    }

    /// The tenant for escalation endpoints: merchants and agents use their
    /// own, the operator names one.
    pub fn agent_tenant(&self) -> Result<&str, ApiError> {
        match self.scope {
            Scope::Merchant | Scope::Agent => self
                .tenant_id
                .as_deref()
                .ok_or_else(|| ApiError::forbidden("key without tenant")),
            Scope::Operator => self.merchant_tenant(),
        }
    }

    /// Only the operator.
    pub fn require_operator(&self) -> Result<(), ApiError> {
        if self.scope == Scope::Operator {
            Ok(())
        } else {
            Err(ApiError::forbidden("this needs the operator key"))
        }
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing Authorization: Bearer <key>"))?;
    let value = value
        .to_str()
        .map_err(|_| unauthorized("invalid Authorization header"))?;
    value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| unauthorized("expected Authorization: Bearer <key>"))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = bearer(&parts.headers)?;
        let acting_for = parts
            .headers
            .get("x-tenant-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        if let Some(operator) = &state.operator_key_hash
            && constant_time_eq(&digest, operator)
        {
            return Ok(Caller {
                key_id: "operator".into(),
                scope: Scope::Operator,
                tenant_id: None,
                acting_for,
            });
        }
        let row = state
            .pipeline
            .store
            .api_key_by_hash(&hex::encode(digest))
            .await?
            .ok_or_else(|| {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown API key")
            })?;
        let scope = match row.scope.as_str() {
            "merchant" => Scope::Merchant,
            "agent" => Scope::Agent,
            "operator" => Scope::Operator,
            other => {
                return Err(ApiError::internal(format!(
                    "stored key with unknown scope {other}"
                )));
            }
        };
        Ok(Caller {
            key_id: row.id,
            scope,
            tenant_id: row.tenant_id,
            acting_for: if scope == Scope::Operator {
                acting_for
            } else {
                None
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hashes_are_stable() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        assert!(a.starts_with("tdg_") && a.len() == 68);
        assert_eq!(hash_key(&a), hash_key(&a));
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd"));
    }
}
