//! Bearer-token authentication: every `/v1` handler takes a [`Tenant`].
//!
//! Failed authentications are rate-limited per client address
//! (`NETRA_AUTH_FAILURES_PER_MIN`), so tokens cannot be guessed at speed;
//! authenticated calls are rate-limited per tenant
//! (`NETRA_RATE_LIMIT_PER_MIN`). Both use [`crate::ratelimit`].

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::request::Parts,
};

use super::error::ApiError;
use crate::{pipeline::Engine, store::tenants};

/// The authenticated tenant of a request.
#[derive(Debug, Clone)]
pub struct Tenant(pub String);

/// The client address of a request (set by [`super::serve`]).
fn client_ip(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

impl FromRequestParts<Engine> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        engine: &Engine,
    ) -> Result<Self, Self::Rejection> {
        let failures = format!("authfail:{}", client_ip(parts));
        let limit = engine.config.auth_failures_per_min;
        // An address over its budget of failures gets no more tries (not
        // even a lookup) until failures leave the window.
        if let Some(wait) = engine
            .limiter
            .peek(engine.cache.as_ref(), &failures, limit)
            .await
        {
            return Err(ApiError::RateLimited(wait));
        }
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let name = match token {
            Some(t) => tenants::authenticate(&engine.pool, t).await?,
            None => None,
        };
        let Some(name) = name else {
            engine
                .limiter
                .check(engine.cache.as_ref(), &failures, limit)
                .await;
            return Err(ApiError::Unauthorized);
        };
        if let Some(wait) = engine
            .limiter
            .check(
                engine.cache.as_ref(),
                &format!("tenant:{name}"),
                engine.config.rate_limit_per_min,
            )
            .await
        {
            return Err(ApiError::RateLimited(wait));
        }
        Ok(Tenant(name))
    }
}
