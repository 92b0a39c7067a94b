//! Request guards: the caller's key, its scope and its rate limit.

use super::auth::{Caller, bearer};
use super::error::ApiError;
use super::state::AppState;
use crate::events::Scope;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use std::sync::Arc;

fn authenticate(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <key>"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(bearer)
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be \"Bearer <key>\""))?;
    let caller =
        state.shared.keys.authenticate(token).ok_or_else(|| ApiError::unauthorized("unknown or revoked key"))?;
    let trust = state.shared.key_trust(&caller.key_id);
    if let Err((wait, tier)) = state.key_limiter.check(&caller.key_id, trust, state.clock_s()) {
        metrics::counter!("guardrank_rate_limited_total", "scope" => "key", "tier" => tier.name()).increment(1);
        return Err(ApiError::rate_limited(
            wait.ceil() as u64,
            format!("rate limit of this key exceeded (rate-limit tier {})", tier.name()),
        ));
    }
    Ok(caller)
}

/// A caller with the `plugin` scope (admin keys may do everything a plugin key may).
pub struct Plugin(pub Caller);

/// A caller with the `admin` scope.
pub struct Admin(pub Caller);

impl FromRequestParts<Arc<AppState>> for Plugin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        authenticate(parts, state).map(Plugin)
    }
}

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let c = authenticate(parts, state)?;
        if c.scope != Scope::Admin {
            return Err(ApiError::forbidden("this route needs an admin key"));
        }
        Ok(Admin(c))
    }
}
