//! Signing in to the console: a token (a tenant's or an operator's) is
//! exchanged once for a session cookie (`HttpOnly`, `SameSite=Strict`,
//! `Path=/console`; `Secure` behind HTTPS). Every request that changes
//! something must carry the session's form token (`csrf` field or
//! `X-CSRF-Token` header) and, when the browser sends one, an `Origin` of
//! this host: a cross-site request has neither.

use axum::{
    extract::{FromRequestParts, State},
    http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Redirect, Response},
    Form,
};
use maud::html;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{layout, ConsoleError};
use crate::{
    model::Principal,
    pipeline::Engine,
    store::{operators, sessions},
};

/// The cookie's name.
pub const COOKIE: &str = "netra_session";
/// How long a session lasts.
pub const SESSION_HOURS: i64 = 12;

/// A signed-in browser: who it is and its form token.
#[derive(Debug, Clone)]
pub struct Signed {
    /// Who.
    pub who: Principal,
    /// The session's form token.
    pub csrf: String,
}

impl Signed {
    /// The tenant whose data it may see (`None`: every tenant's).
    pub fn scope(&self) -> Option<&str> {
        self.who.scope()
    }

    /// Whether it is an operator.
    pub fn is_operator(&self) -> bool {
        matches!(self.who, Principal::Operator(_))
    }

    /// Checks the form token and the origin of a request that changes
    /// something; `given` is the form's `csrf` field, if it has one.
    pub fn check(&self, headers: &HeaderMap, given: Option<&str>) -> Result<(), ConsoleError> {
        let token = given.or_else(|| headers.get("x-csrf-token").and_then(|v| v.to_str().ok()));
        let ok = token.is_some_and(|t| same(t, &self.csrf)) && same_origin(headers);
        if ok {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden)
        }
    }
}

/// Compares two secrets by their hashes (no early exit on the secret bytes).
fn same(a: &str, b: &str) -> bool {
    Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes())
}

/// True unless the browser says the request came from another origin.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or_default();
    !host.is_empty() && origin_host == host
}

/// The session cookie's value in a request.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

impl FromRequestParts<Engine> for Signed {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        engine: &Engine,
    ) -> Result<Self, Self::Rejection> {
        let Some(id) = cookie(&parts.headers) else {
            return Err(ConsoleError::SignIn);
        };
        match sessions::find(&engine.pool, &id).await? {
            Some(s) => Ok(Signed {
                who: s.principal,
                csrf: s.csrf,
            }),
            None => Err(ConsoleError::SignIn),
        }
    }
}

/// `GET /console/login`.
pub async fn login_page() -> Response {
    login_form(None, StatusCode::OK)
}

fn login_form(error: Option<&str>, status: StatusCode) -> Response {
    let body = html! {
        section.login {
            h1 { "Sign in to netra" }
            p { "Paste a tenant's token (it sees its own runs) or an operator's (it sees every tenant). "
                "Operators are created with " code { "netra operator create NAME --reason …" } "." }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form method="post" action="/console/login" {
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="off" required;
                button #sign-in type="submit" { "Sign in" }
            }
        }
    };
    (status, layout::bare("Sign in", body)).into_response()
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    /// The bearer token.
    pub token: String,
}

/// `POST /console/login`: a good token gets a session cookie and goes to the
/// runs; a bad one sees the form again (failures are rate-limited per
/// address, like the API's).
pub async fn login(
    State(engine): State<Engine>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, ConsoleError> {
    if !same_origin(&headers) {
        return Err(ConsoleError::Forbidden);
    }
    let failures = "authfail:console".to_string();
    let limit = engine.config.auth_failures_per_min;
    if engine
        .limiter
        .peek(engine.cache.as_ref(), &failures, limit)
        .await
        .is_some()
    {
        return Ok(login_form(
            Some("Too many failed sign-ins; wait a minute."),
            StatusCode::TOO_MANY_REQUESTS,
        ));
    }
    let token = form.token.trim();
    let who = if token.is_empty() || token.len() > 200 {
        None
    } else {
        operators::authenticate(&engine.pool, token).await?
    };
    let Some(who) = who else {
        engine
            .limiter
            .check(engine.cache.as_ref(), &failures, limit)
            .await;
        return Ok(login_form(
            Some("That token is not valid."),
            StatusCode::UNAUTHORIZED,
        ));
    };
    let (id, _) = sessions::open(&engine.pool, &who, SESSION_HOURS).await?;
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes() == b"https");
    let cookie = format!(
        "{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_HOURS * 3600,
        if secure { "; Secure" } else { "" }
    );
    let mut resp = Redirect::to("/console").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

/// The form of an action that needs only the form token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    /// The session's form token.
    pub csrf: String,
}

/// `POST /console/logout`.
pub async fn logout(
    State(engine): State<Engine>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ConsoleError> {
    signed.check(&headers, Some(&form.csrf))?;
    if let Some(id) = cookie(&headers) {
        sessions::close(&engine.pool, &id).await?;
    }
    let mut resp = Redirect::to("/console/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "netra_session=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; netra_session=abc; b=2")]);
        assert_eq!(cookie(&h).as_deref(), Some("abc"));
        assert_eq!(cookie(&headers(&[("cookie", "a=1")])), None);
    }

    #[test]
    fn a_change_needs_the_form_token_and_this_origin() {
        let s = Signed {
            who: Principal::Tenant("a".into()),
            csrf: "tok".into(),
        };
        let here = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
        ]);
        assert!(s.check(&here, Some("tok")).is_ok());
        assert!(s.check(&here, Some("nope")).is_err());
        assert!(s.check(&here, None).is_err());
        let elsewhere = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://evil.example"),
        ]);
        assert!(s.check(&elsewhere, Some("tok")).is_err());
        let by_header = headers(&[("host", "h"), ("x-csrf-token", "tok")]);
        assert!(s.check(&by_header, None).is_ok());
    }
}
