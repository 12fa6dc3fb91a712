//! Console sessions: a signed-in browser's cookie is a random id, stored
//! only as its SHA-256, with the principal it signs in as and the form token
//! (`csrf`) every change must present. Sessions expire; signing out deletes
//! the row.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{
    tenants::{hash_token, new_token},
    Error,
};
use crate::model::Principal;

/// A live session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who it signs in as.
    pub principal: Principal,
    /// The form token of this session.
    pub csrf: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// Opens a session for `principal` for `hours`; returns the cookie value
/// (shown to nobody but the browser) and the session.
pub async fn open(
    pool: &PgPool,
    principal: &Principal,
    hours: i64,
) -> Result<(String, Session), Error> {
    let id = new_token();
    let csrf = new_token();
    let expires_at = sqlx::query_scalar!(
        "INSERT INTO console_sessions (id_hash, kind, name, csrf, expires_at) \
         VALUES ($1, $2, $3, $4, now() + make_interval(hours => $5)) RETURNING expires_at",
        hash_token(&id),
        principal.kind(),
        principal.name(),
        csrf,
        hours.clamp(1, 24 * 30) as i32,
    )
    .fetch_one(pool)
    .await?;
    // Expired sessions of anyone go now and then; there are few.
    sqlx::query!("DELETE FROM console_sessions WHERE expires_at < now() - interval '1 day'")
        .execute(pool)
        .await?;
    Ok((
        id,
        Session {
            principal: principal.clone(),
            csrf,
            expires_at,
        },
    ))
}

/// The live session of a cookie value, whose principal still exists.
pub async fn find(pool: &PgPool, cookie: &str) -> Result<Option<Session>, Error> {
    let row = sqlx::query!(
        r#"SELECT s.kind, s.name, s.csrf, s.expires_at FROM console_sessions s
         WHERE s.id_hash = $1 AND s.expires_at > now()
           AND CASE s.kind
                 WHEN 'tenant' THEN EXISTS (SELECT 1 FROM tenants t
                                            WHERE t.name = s.name AND t.deleted_at IS NULL)
                 ELSE EXISTS (SELECT 1 FROM operators o
                              WHERE o.name = s.name AND o.deleted_at IS NULL)
               END"#,
        hash_token(cookie),
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|r| {
        Some(Session {
            principal: Principal::from_kind(&r.kind, r.name)?,
            csrf: r.csrf,
            expires_at: r.expires_at,
        })
    }))
}

/// Ends a session.
pub async fn close(pool: &PgPool, cookie: &str) -> Result<(), Error> {
    sqlx::query!(
        "DELETE FROM console_sessions WHERE id_hash = $1",
        hash_token(cookie)
    )
    .execute(pool)
    .await?;
    Ok(())
}
