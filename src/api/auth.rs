//! Bearer-token authentication: every `/v1` handler takes a [`Tenant`] or,
//! where an operator may act too, a [`Caller`].
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
use crate::{model::Principal, pipeline::Engine, store::operators};

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

/// The authenticated caller of a request: a tenant or an operator (routes
/// that act across tenants, like dead letters and the audit trail, take
/// this; routes that create runs take [`Tenant`]).
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequestParts<Engine> for Caller {
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
        let principal = match token {
            Some(t) => operators::authenticate(&engine.pool, t).await?,
            None => None,
        };
        let Some(principal) = principal else {
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
                &principal.actor(),
                engine.config.rate_limit_per_min,
            )
            .await
        {
            return Err(ApiError::RateLimited(wait));
        }
        Ok(Caller(principal))
    }
}

impl FromRequestParts<Engine> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        engine: &Engine,
    ) -> Result<Self, Self::Rejection> {
        match Caller::from_request_parts(parts, engine).await?.0 {
            Principal::Tenant(name) => Ok(Tenant(name)),
            Principal::Operator(_) => Err(ApiError::Forbidden(
                "this route acts for one tenant: use that tenant's token",
            )),
        }
    }
}
