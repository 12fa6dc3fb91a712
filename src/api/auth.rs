//! Bearer-token authentication: every `/v1` handler takes a [`Tenant`].

use axum::{extract::FromRequestParts, http::request::Parts};

use super::error::ApiError;
use crate::{pipeline::Engine, store::tenants};

/// The authenticated tenant of a request.
#[derive(Debug, Clone)]
pub struct Tenant(pub String);

impl FromRequestParts<Engine> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        engine: &Engine,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let name = tenants::authenticate(&engine.pool, token)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        if let Some(cache) = &engine.cache {
            if let Some(wait) = cache
                .rate_limit(&name, engine.config.rate_limit_per_min)
                .await
            {
                return Err(ApiError::RateLimited(wait));
            }
        }
        Ok(Tenant(name))
    }
}
