//! `/v1/tenants`: each tenant's share of fair admission, its weight and cap
//! on runs in flight (its own, or the configured default) with its runs
//! waiting and in flight, and the operators' change of the weight and cap
//! (audited, with a reason; docs/DESIGN.md "Fair admission").
//!
//! An operator sees every tenant, also one without a row that has runs
//! (the deployment's default tenant of AMQP requests); a tenant sees its
//! own only, and another tenant's name is 404.
//!
//! A setting in a `PATCH` is an integer, `null` or `"default"` (back to the
//! configured default) or, for the cap, `"none"` (no cap, even where the
//! deployment configures one); a view shows a cap as its number or
//! `"none"`, with whether it is the default.

use axum::{
    body::Bytes,
    extract::{Path, State},
    Json,
};
use serde_json::{json, Value};

use super::{auth::Caller, error::ApiError};
use crate::{
    model::{Principal, Reason},
    pipeline::Engine,
    store::{
        audit::Said,
        tenants::{self, FairChange, Field, Setting, TenantError, TenantView},
    },
};

/// `GET /v1/tenants`: every tenant for an operator, its own for a tenant.
pub async fn list(
    State(engine): State<Engine>,
    Caller(who): Caller,
) -> Result<Json<Value>, ApiError> {
    let views = tenants::views(&engine.pool, engine.config.fair, who.scope()).await?;
    Ok(Json(json!({ "tenants": views })))
}

/// One tenant's view, for `who` (404 when it may not see it, or there is
/// no such tenant).
async fn view(engine: &Engine, who: &Principal, name: &str) -> Result<TenantView, ApiError> {
    if !who.sees(name) {
        return Err(ApiError::NotFound("tenant"));
    }
    tenants::views(&engine.pool, engine.config.fair, Some(name))
        .await?
        .into_iter()
        .next()
        .ok_or(ApiError::NotFound("tenant"))
}

/// `GET /v1/tenants/{name}`: operators, or the tenant itself.
pub async fn get(
    State(engine): State<Engine>,
    Caller(who): Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(view(&engine, &who, &name).await?)))
}

/// `PATCH /v1/tenants/{name}` with `{"weight", "max_in_flight",
/// "requests_per_min", "reason"}` (operators only): sets or clears (`null`,
/// `"default"`) the weight, the cap and the request rate, or lifts the cap
/// or the rate (`"none"`); answers the tenant's view.
pub async fn patch(
    State(engine): State<Engine>,
    Caller(who): Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    if !matches!(who, Principal::Operator(_)) {
        return Err(ApiError::Forbidden(
            "only an operator may change a tenant's weight or cap: use an operator's token",
        ));
    }
    let (change, reason) = parse_patch(&body)?;
    let said = Said::new(who.actor(), reason);
    tenants::set_fair(&engine.pool, &name, &change, &said)
        .await
        .map_err(set_error)?;
    Ok(Json(json!(view(&engine, &who, &name).await?)))
}

/// Why [`tenants::set_fair`] refused, as the API answers it (the console's
/// form answers the same): 404 for no such live tenant, 422 naming the
/// field.
pub(crate) fn set_error(e: TenantError) -> ApiError {
    match e {
        TenantError::Missing(_) => ApiError::NotFound("tenant"),
        TenantError::Db(e) => e.into(),
        TenantError::InvalidWeight(_) | TenantError::NoneWeight => invalid("weight", e.to_string()),
        TenantError::InvalidMaxInFlight(_) => invalid("max_in_flight", e.to_string()),
        TenantError::InvalidRequestsPerMin(_) => invalid("requests_per_min", e.to_string()),
        other => invalid("body", other.to_string()),
    }
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A setting of the body: `null` or `"default"` clears it to the default,
/// `"none"` lifts the cap, an integer in the field's range sets it.
fn setting(v: &Value, field: Field) -> Result<Setting, ApiError> {
    match v {
        Value::Null => Ok(Setting::Default),
        // The words only: a number in a string is refused, as before.
        Value::String(w) if w == "default" || w == "none" => {
            Setting::parse(w, field).map_err(|m| invalid(field.name(), m))
        }
        _ => match v.as_u64() {
            Some(n) if (1..=field.max()).contains(&n) => Ok(Setting::Set(n)),
            _ => Err(invalid(
                field.name(),
                format!("{}; null is the default too", field.accepts()),
            )),
        },
    }
}

/// Decodes the body of a `PATCH`, naming the offending field.
fn parse_patch(body: &[u8]) -> Result<(FairChange, Reason), ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid("body", format!("must be a JSON object: {e}")))?;
    let Value::Object(map) = value else {
        return Err(invalid("body", "must be a JSON object"));
    };
    let mut change = FairChange::default();
    let mut reason = None;
    for (key, v) in &map {
        match key.as_str() {
            "weight" => change.weight = setting(v, Field::Weight)?,
            "max_in_flight" => change.max_in_flight = setting(v, Field::MaxInFlight)?,
            "requests_per_min" => change.requests_per_min = setting(v, Field::RequestsPerMin)?,
            "reason" => match v {
                Value::String(s) => reason = Some(s.as_str()),
                Value::Null => {}
                _ => return Err(invalid("reason", "must be a string")),
            },
            other => {
                let shown: String = other.chars().take(64).collect();
                return Err(invalid(
                    &shown,
                    "unknown field: the body takes weight, max_in_flight, requests_per_min and reason",
                ));
            }
        }
    }
    let reason = Reason::parse(reason)?;
    if change == FairChange::default() {
        return Err(invalid("body", TenantError::NoChange.to_string()));
    }
    Ok((change, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(body: &str) -> String {
        match parse_patch(body.as_bytes()) {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn a_patch_names_the_bad_field() {
        assert_eq!(field(r#"{"weight": 0, "reason": "r"}"#), "weight");
        assert_eq!(field(r#"{"weight": 1001, "reason": "r"}"#), "weight");
        assert_eq!(field(r#"{"weight": 2.5, "reason": "r"}"#), "weight");
        assert_eq!(field(r#"{"weight": "3", "reason": "r"}"#), "weight");
        assert_eq!(
            field(r#"{"max_in_flight": 0, "reason": "r"}"#),
            "max_in_flight"
        );
        assert_eq!(
            field(r#"{"max_in_flight": -1, "reason": "r"}"#),
            "max_in_flight"
        );
        assert_eq!(field(r#"{"weight": "none", "reason": "r"}"#), "weight");
        assert_eq!(
            field(r#"{"max_in_flight": "None ", "reason": "r"}"#),
            "max_in_flight"
        );
        assert_eq!(
            field(r#"{"max_in_flight": "7", "reason": "r"}"#),
            "max_in_flight"
        );
        assert_eq!(field(r#"{"weight": 3}"#), "reason");
        assert_eq!(field(r#"{"weight": 3, "reason": "  "}"#), "reason");
        assert_eq!(field(r#"{"reason": "r"}"#), "body");
        assert_eq!(field(r#"{"wieght": 3, "reason": "r"}"#), "wieght");
        assert_eq!(field("[1]"), "body");
        assert_eq!(field("not json"), "body");
    }

    #[test]
    fn a_patch_sets_and_clears() {
        let (c, r) =
            parse_patch(br#"{"weight": 3, "max_in_flight": null, "reason": " more "}"#).unwrap();
        assert_eq!(c.weight, Setting::Set(3));
        assert_eq!(c.max_in_flight, Setting::Default);
        assert_eq!(r.as_str(), "more");
        let (c, _) = parse_patch(br#"{"requests_per_min": "none", "reason": "r"}"#).unwrap();
        assert_eq!(c.requests_per_min, Setting::NoCap);
        let (c, _) = parse_patch(br#"{"requests_per_min": 600, "reason": "r"}"#).unwrap();
        assert_eq!(c.requests_per_min, Setting::Set(600));
        let (c, _) = parse_patch(br#"{"max_in_flight": 50, "reason": "r"}"#).unwrap();
        assert_eq!(c.weight, Setting::Keep);
        assert_eq!(c.max_in_flight, Setting::Set(50));
        let (c, _) =
            parse_patch(br#"{"weight": "default", "max_in_flight": "none", "reason": "r"}"#)
                .unwrap();
        assert_eq!(c.weight, Setting::Default);
        assert_eq!(c.max_in_flight, Setting::NoCap);
    }
}
