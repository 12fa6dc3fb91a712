//! Tenants, their API tokens, and their settings of fair admission.
//!
//! A token is shown once, at creation, and stored only as its SHA-256 hash.
//! Lookup is by hash, so no comparison of secret bytes happens in Rust; the
//! hash of a 256-bit random token leaks nothing through timing.
//!
//! A tenant's weight and cap on runs in flight (migration 0015; NULL: the
//! configured default, [`FairConfig`]; a cap of 0, [`NO_CAP`]: no cap
//! whatever the default, migration 0016) are changed by [`set_fair`],
//! audited in the same transaction, and shown with the tenant's waiting and
//! in-flight runs by [`views`] (docs/DESIGN.md "Fair admission"). The CLI
//! and the console read a typed value with [`Setting::parse`], the API its
//! JSON with the same words.

use super::{
    audit::{self, Said},
    Error,
};
use crate::config::FairConfig;
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// Hashes a bearer token for storage and lookup.
pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A new random token: `ntr_` and 64 hex digits.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("ntr_{hex}")
}

/// Why a tenant could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// Names are 1-64 letters, digits, '-' or '_'.
    #[error("invalid tenant name: use 1-64 letters, digits, '-' or '_'")]
    InvalidName,
    /// Taken (by a live tenant, or by a deleted one: a name is never reused,
    /// so a new tenant cannot inherit an old one's runs).
    #[error("tenant {0} already exists or existed (names of deleted tenants are not reused)")]
    Exists(String),
    /// The broker user belongs to another tenant, live or deleted.
    #[error("broker user {0} is mapped to another tenant (or was, to a deleted one)")]
    AmqpUserTaken(String),
    /// No such live tenant.
    #[error("no tenant named {0}")]
    Missing(String),
    /// A weight outside 1-1000.
    #[error("weight must be from 1 to {MAX_WEIGHT} (got {0})")]
    InvalidWeight(u64),
    /// A cap on runs in flight below 1 (or too large to store).
    #[error("max_in_flight must be from 1 to {MAX_CAP}, or none for no cap (got {0})")]
    InvalidMaxInFlight(u64),
    /// A request rate below 1 (or too large to store).
    #[error("requests_per_min must be from 1 to {MAX_CAP}, or none for no limit (got {0})")]
    InvalidRequestsPerMin(u64),
    /// "No cap" given for the weight, which has no such value.
    #[error("cannot be none: a weight is 1 to {MAX_WEIGHT}, or default")]
    NoneWeight,
    /// A change of the settings that changes none of them.
    #[error("nothing to change: set the weight, the cap on runs in flight or the request rate, or clear one to the default")]
    NoChange,
    /// Database.
    #[error(transparent)]
    Db(#[from] Error),
}

/// Creates a tenant and returns its token (the only time it is visible),
/// recording who created it and why in the same transaction.
pub async fn create(
    pool: &PgPool,
    name: &str,
    amqp_user: Option<&str>,
    said: &Said,
) -> Result<String, TenantError> {
    if crate::config::validate_namespace(name).is_err() {
        return Err(TenantError::InvalidName);
    }
    let token = new_token();
    if amqp_user.is_some_and(|u| crate::config::validate_namespace(u).is_err()) {
        return Err(TenantError::InvalidName);
    }
    let mut tx = pool.begin().await.map_err(Error::from)?;
    let res = sqlx::query!(
        "INSERT INTO tenants (name, token_hash, amqp_user) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        name,
        hash_token(&token),
        amqp_user,
    )
    .execute(&mut *tx)
    .await
    .map_err(Error::from)?;
    if res.rows_affected() == 0 {
        let name_taken = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM tenants WHERE name = $1) AS "taken!""#,
            name,
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(Error::from)?;
        return Err(match (name_taken, amqp_user) {
            (false, Some(user)) => TenantError::AmqpUserTaken(user.to_string()),
            _ => TenantError::Exists(name.to_string()),
        });
    }
    let target = format!("tenant {name}");
    audit::record(
        &mut *tx,
        &audit::Entry {
            said,
            tenant: Some(name),
            action: "create_tenant",
            target: &target,
            runs: &[],
            detail: serde_json::json!({ "amqp_user": amqp_user }),
        },
    )
    .await?;
    tx.commit().await.map_err(Error::from)?;
    Ok(token)
}

/// The tenant a bearer token belongs to.
pub async fn authenticate(pool: &PgPool, token: &str) -> Result<Option<String>, Error> {
    Ok(sqlx::query_scalar!(
        "SELECT name FROM tenants WHERE token_hash = $1 AND deleted_at IS NULL",
        hash_token(token),
    )
    .fetch_optional(pool)
    .await?)
}

/// The tenant mapped to a broker user (validated `user_id` of AMQP requests).
pub async fn by_amqp_user(pool: &PgPool, user: &str) -> Result<Option<String>, Error> {
    Ok(sqlx::query_scalar!(
        "SELECT name FROM tenants WHERE amqp_user = $1 AND deleted_at IS NULL",
        user,
    )
    .fetch_optional(pool)
    .await?)
}

/// Gives a tenant a new token (the old one stops working at once) and
/// returns it; shown only this once.
pub async fn rotate_token(pool: &PgPool, name: &str) -> Result<String, TenantError> {
    let token = new_token();
    let res = sqlx::query!(
        "UPDATE tenants SET token_hash = $2 WHERE name = $1 AND deleted_at IS NULL",
        name,
        hash_token(&token),
    )
    .execute(pool)
    .await
    .map_err(Error::from)?;
    if res.rows_affected() == 0 {
        return Err(TenantError::Missing(name.to_string()));
    }
    Ok(token)
}

/// Deletes a tenant: its token and broker user stop working at once, and
/// its row stays as a tombstone, so neither the name nor the broker user
/// can be given to a new tenant (which would see the old one's runs, or
/// receive its in-flight replies). Its runs and
/// telemetry stay for the record; no live tenant can read them.
pub async fn delete(pool: &PgPool, name: &str) -> Result<(), TenantError> {
    let res = sqlx::query!(
        "UPDATE tenants SET deleted_at = now(), token_hash = NULL \
         WHERE name = $1 AND deleted_at IS NULL",
        name,
    )
    .execute(pool)
    .await
    .map_err(Error::from)?;
    if res.rows_affected() == 0 {
        return Err(TenantError::Missing(name.to_string()));
    }
    Ok(())
}

/// All live tenant names.
pub async fn list(pool: &PgPool) -> Result<Vec<String>, Error> {
    Ok(
        sqlx::query_scalar!("SELECT name FROM tenants WHERE deleted_at IS NULL ORDER BY name")
            .fetch_all(pool)
            .await?,
    )
}

/// The largest weight of a tenant.
pub const MAX_WEIGHT: u64 = 1000;
/// The largest cap on a tenant's runs in flight (the column is an `integer`).
pub const MAX_CAP: u64 = i32::MAX as u64;
/// The stored cap that means "no cap", whatever `NETRA_FAIR_MAX_IN_FLIGHT`
/// says (migration 0016); NULL is "the configured default".
pub const NO_CAP: i32 = 0;

/// A change of one setting of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Setting {
    /// Leave it as it is.
    #[default]
    Keep,
    /// Give the tenant its own value.
    Set(u64),
    /// Clear the tenant's own value: the configured default applies.
    Default,
    /// The cap and the rate only: no cap on the tenant's runs in flight,
    /// or no limit on its request rate, even where the deployment
    /// configures a default (stored as [`NO_CAP`]).
    NoCap,
}

/// Which of a tenant's settings a value is for (they take different values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The weight: 1-[`MAX_WEIGHT`] or `default`.
    Weight,
    /// The cap on runs in flight: 1-[`MAX_CAP`], `none` or `default`.
    MaxInFlight,
    /// The request rate, new runs per minute: 1-[`MAX_CAP`], `none` or
    /// `default`.
    RequestsPerMin,
}

impl Field {
    /// Its name in the API's body, the console's form and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Field::Weight => "weight",
            Field::MaxInFlight => "max_in_flight",
            Field::RequestsPerMin => "requests_per_min",
        }
    }

    /// Its largest value.
    pub fn max(self) -> u64 {
        match self {
            Field::Weight => MAX_WEIGHT,
            Field::MaxInFlight | Field::RequestsPerMin => MAX_CAP,
        }
    }

    /// What it takes, in words, for a message that refuses a value.
    pub fn accepts(self) -> String {
        match self {
            Field::Weight => format!("must be an integer from 1 to {MAX_WEIGHT}, or default"),
            Field::MaxInFlight => format!(
                "must be an integer from 1 to {MAX_CAP}, none (no cap), or default (NETRA_FAIR_MAX_IN_FLIGHT)"
            ),
            Field::RequestsPerMin => format!(
                "must be an integer from 1 to {MAX_CAP}, none (no limit), or default (NETRA_FAIR_REQUESTS_PER_MIN)"
            ),
        }
    }
}

impl Setting {
    /// A setting as an operator types it (the CLI's flag, the console's
    /// field): an integer in the field's range, `default`, or, for the cap,
    /// `none`; empty (or blank) keeps the current value. Anything else is
    /// refused with what the field takes (see [`Field::accepts`]).
    pub fn parse(text: &str, field: Field) -> Result<Setting, String> {
        let t = text.trim();
        if t.is_empty() {
            return Ok(Setting::Keep);
        }
        if t.eq_ignore_ascii_case("default") {
            return Ok(Setting::Default);
        }
        if t.eq_ignore_ascii_case("none") {
            return match field {
                Field::MaxInFlight | Field::RequestsPerMin => Ok(Setting::NoCap),
                Field::Weight => Err(TenantError::NoneWeight.to_string()),
            };
        }
        match t.parse::<u64>() {
            Ok(n) if (1..=field.max()).contains(&n) => Ok(Setting::Set(n)),
            _ => Err(field.accepts()),
        }
    }

    /// The stored value after the change (`None`: the default).
    fn apply(self, stored: Option<i32>) -> Option<i32> {
        match self {
            Setting::Keep => stored,
            // Checked by `FairChange::check` before.
            Setting::Set(v) => i32::try_from(v).ok(),
            Setting::Default => None,
            Setting::NoCap => Some(NO_CAP),
        }
    }
}

/// A stored setting as the audit trail records it: `null` for the
/// default, `"none"` for [`NO_CAP`], else the number.
fn stored_json(v: Option<i32>) -> serde_json::Value {
    match v {
        None => serde_json::Value::Null,
        Some(NO_CAP) => json!("none"),
        Some(n) => json!(n),
    }
}

/// A change of a tenant's fair-admission settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FairChange {
    /// Its weight (1-1000).
    pub weight: Setting,
    /// Its cap on runs in flight (at least 1, or no cap).
    pub max_in_flight: Setting,
    /// Its request rate, new runs per minute (at least 1, or no limit).
    pub requests_per_min: Setting,
}

impl FairChange {
    /// Refuses values outside their ranges and a change of nothing.
    pub fn check(&self) -> Result<(), TenantError> {
        match self.weight {
            Setting::Set(w) if !(1..=MAX_WEIGHT).contains(&w) => {
                return Err(TenantError::InvalidWeight(w));
            }
            Setting::NoCap => return Err(TenantError::NoneWeight),
            _ => {}
        }
        if let Setting::Set(n) = self.max_in_flight {
            if !(1..=MAX_CAP).contains(&n) {
                return Err(TenantError::InvalidMaxInFlight(n));
            }
        }
        if let Setting::Set(n) = self.requests_per_min {
            if !(1..=MAX_CAP).contains(&n) {
                return Err(TenantError::InvalidRequestsPerMin(n));
            }
        }
        if self.weight == Setting::Keep
            && self.max_in_flight == Setting::Keep
            && self.requests_per_min == Setting::Keep
        {
            return Err(TenantError::NoChange);
        }
        Ok(())
    }
}

/// A tenant's stored settings (`None`: the configured default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FairSettings {
    /// The tenant.
    pub name: String,
    /// Its own weight.
    pub weight: Option<i32>,
    /// Its own cap on runs in flight ([`NO_CAP`]: none).
    pub max_in_flight: Option<i32>,
    /// Its own request rate ([`NO_CAP`]: no limit).
    pub requests_per_min: Option<i32>,
    /// Whether it is a live tenant (a row, not deleted): only those can be
    /// changed; the others are shown for their runs.
    pub live: bool,
}

/// Changes a live tenant's weight and cap, recording who changed what and
/// why (action `set_tenant`, the old and new stored values, `null` for the
/// default, `"none"` for no cap) in the same transaction; returns the
/// stored settings.
pub async fn set_fair(
    pool: &PgPool,
    name: &str,
    change: &FairChange,
    said: &Said,
) -> Result<FairSettings, TenantError> {
    change.check()?;
    // Postgres takes no NUL in text; no tenant has one in its name.
    if name.contains('\0') {
        return Err(TenantError::Missing(name.replace('\0', "\\0")));
    }
    let mut tx = pool.begin().await.map_err(Error::from)?;
    let before = sqlx::query!(
        "SELECT weight, max_in_flight, requests_per_min FROM tenants \
         WHERE name = $1 AND deleted_at IS NULL FOR UPDATE",
        name,
    )
    .fetch_optional(&mut *tx)
    .await
    .map_err(Error::from)?
    .ok_or_else(|| TenantError::Missing(name.to_string()))?;
    let weight = change.weight.apply(before.weight);
    let max_in_flight = change.max_in_flight.apply(before.max_in_flight);
    let requests_per_min = change.requests_per_min.apply(before.requests_per_min);
    sqlx::query!(
        "UPDATE tenants SET weight = $2, max_in_flight = $3, requests_per_min = $4 WHERE name = $1",
        name,
        weight,
        max_in_flight,
        requests_per_min,
    )
    .execute(&mut *tx)
    .await
    .map_err(Error::from)?;
    let mut detail = serde_json::Map::new();
    if change.weight != Setting::Keep {
        detail.insert(
            "weight".into(),
            json!({"from": before.weight, "to": weight}),
        );
    }
    if change.max_in_flight != Setting::Keep {
        detail.insert(
            "max_in_flight".into(),
            json!({"from": stored_json(before.max_in_flight), "to": stored_json(max_in_flight)}),
        );
    }
    if change.requests_per_min != Setting::Keep {
        detail.insert(
            "requests_per_min".into(),
            json!({"from": stored_json(before.requests_per_min), "to": stored_json(requests_per_min)}),
        );
    }
    let target = format!("tenant {name}");
    audit::record(
        &mut *tx,
        &audit::Entry {
            said,
            tenant: Some(name),
            action: "set_tenant",
            target: &target,
            runs: &[],
            detail: serde_json::Value::Object(detail),
        },
    )
    .await?;
    tx.commit().await.map_err(Error::from)?;
    Ok(FairSettings {
        name: name.to_string(),
        weight,
        max_in_flight,
        requests_per_min,
        live: true,
    })
}

/// A tenant's admission as the API, the console and the CLI show it: its
/// effective weight and cap (the configured default where it has none of
/// its own) and its runs waiting and in flight.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TenantView {
    /// The tenant.
    pub name: String,
    /// Its weight.
    pub weight: u32,
    /// Whether that is the default (`NETRA_FAIR_WEIGHT`).
    pub weight_is_default: bool,
    /// Its cap on runs in flight (`None`: no cap, `"none"` in JSON: its own
    /// "no cap", or no default configured).
    #[serde(serialize_with = "cap_or_none")]
    pub max_in_flight: Option<u32>,
    /// Whether that is the default (`NETRA_FAIR_MAX_IN_FLIGHT`).
    pub max_in_flight_is_default: bool,
    /// Its request rate, new runs per minute on every way in (`None`,
    /// `"none"` in JSON: no limit).
    #[serde(serialize_with = "cap_or_none")]
    pub requests_per_min: Option<u32>,
    /// Whether that is the default (`NETRA_FAIR_REQUESTS_PER_MIN`).
    pub requests_per_min_is_default: bool,
    /// Runs admitted and not finished.
    pub in_flight: i64,
    /// Runs waiting to be admitted.
    pub waiting: i64,
    /// Whether its settings can be changed (a live tenant; a tenant without
    /// a row or a deleted one is shown for its runs only).
    #[serde(skip)]
    pub live: bool,
}

/// A bound (the cap, the rate) in effect, and whether it is the default:
/// the tenant's own value, [`NO_CAP`] being none, else `default`.
fn bound(own: Option<i32>, default: Option<u32>) -> (Option<u32>, bool) {
    match own {
        None => (default, true),
        Some(NO_CAP) => (None, false),
        Some(n) => (u32::try_from(n).ok(), false),
    }
}

/// A cap as JSON: the number, or `"none"`, the word a change takes for it.
fn cap_or_none<S: serde::Serializer>(cap: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    match cap {
        Some(n) => s.serialize_u32(*n),
        None => s.serialize_str("none"),
    }
}

impl TenantView {
    /// The view of stored settings under the configured defaults (a stored
    /// cap of [`NO_CAP`] is no cap, whatever the default).
    pub fn of(settings: &FairSettings, fair: FairConfig, in_flight: i64, waiting: i64) -> Self {
        let own = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok());
        let weight = own(settings.weight);
        let (max_in_flight, max_in_flight_is_default) =
            bound(settings.max_in_flight, fair.max_in_flight);
        let (requests_per_min, requests_per_min_is_default) = bound(
            settings.requests_per_min,
            (fair.requests_per_min > 0).then_some(fair.requests_per_min),
        );
        Self {
            name: settings.name.clone(),
            weight: weight.unwrap_or(fair.weight),
            weight_is_default: weight.is_none(),
            max_in_flight,
            max_in_flight_is_default,
            requests_per_min,
            requests_per_min_is_default,
            in_flight,
            waiting,
            live: settings.live,
        }
    }
}

/// The admission of every live tenant, and of every tenant with runs
/// waiting or in flight (also one without a row, such as the deployment's
/// default tenant of AMQP requests without `user_id`, and a deleted one,
/// whose stored settings admission still applies), by name; only `only`'s
/// when given.
pub async fn views(
    pool: &PgPool,
    fair: FairConfig,
    only: Option<&str>,
) -> Result<Vec<TenantView>, Error> {
    // Postgres takes no NUL in text; no tenant has one in its name.
    if only.is_some_and(|t| t.contains('\0')) {
        return Ok(Vec::new());
    }
    let rows = sqlx::query!(
        r#"SELECT name, weight, max_in_flight, requests_per_min, deleted_at IS NOT NULL AS "deleted!"
           FROM tenants WHERE ($1::text IS NULL OR name = $1) ORDER BY name"#,
        only,
    )
    .fetch_all(pool)
    .await?;
    let mut counts: std::collections::BTreeMap<String, (i64, i64)> = super::fair::counts(pool)
        .await?
        .into_iter()
        .filter(|c| only.is_none_or(|t| t == c.tenant))
        .map(|c| (c.tenant, (c.in_flight, c.waiting)))
        .collect();
    let mut out: Vec<TenantView> = Vec::new();
    for r in rows {
        let n = counts.remove(&r.name);
        if r.deleted && n.is_none() {
            continue;
        }
        let (in_flight, waiting) = n.unwrap_or_default();
        let settings = FairSettings {
            name: r.name,
            weight: r.weight,
            max_in_flight: r.max_in_flight,
            requests_per_min: r.requests_per_min,
            live: !r.deleted,
        };
        out.push(TenantView::of(&settings, fair, in_flight, waiting));
    }
    for (name, (in_flight, waiting)) in counts {
        let settings = FairSettings {
            name,
            weight: None,
            max_in_flight: None,
            requests_per_min: None,
            live: false,
        };
        out.push(TenantView::of(&settings, fair, in_flight, waiting));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_checked() {
        let set = |w, n| FairChange {
            weight: w,
            max_in_flight: n,
            requests_per_min: Setting::Keep,
        };
        assert!(matches!(
            set(Setting::Set(0), Setting::Keep).check(),
            Err(TenantError::InvalidWeight(0))
        ));
        assert!(matches!(
            set(Setting::Set(1001), Setting::Keep).check(),
            Err(TenantError::InvalidWeight(1001))
        ));
        assert!(matches!(
            set(Setting::Keep, Setting::Set(0)).check(),
            Err(TenantError::InvalidMaxInFlight(0))
        ));
        assert!(matches!(
            set(Setting::Keep, Setting::Set(MAX_CAP + 1)).check(),
            Err(TenantError::InvalidMaxInFlight(_))
        ));
        assert!(matches!(
            set(Setting::Keep, Setting::Keep).check(),
            Err(TenantError::NoChange)
        ));
        assert!(matches!(
            set(Setting::NoCap, Setting::Keep).check(),
            Err(TenantError::NoneWeight)
        ));
        assert!(set(Setting::Set(1000), Setting::Default).check().is_ok());
        assert!(set(Setting::Default, Setting::Set(1)).check().is_ok());
        assert!(set(Setting::Keep, Setting::NoCap).check().is_ok());
        let rate = |r| FairChange {
            requests_per_min: r,
            ..FairChange::default()
        };
        assert!(matches!(
            rate(Setting::Set(0)).check(),
            Err(TenantError::InvalidRequestsPerMin(0))
        ));
        assert!(rate(Setting::Set(600)).check().is_ok());
        assert!(rate(Setting::NoCap).check().is_ok());
        assert!(rate(Setting::Default).check().is_ok());
        assert_eq!(
            Setting::parse("none", Field::RequestsPerMin),
            Ok(Setting::NoCap)
        );
        assert!(Setting::parse("0", Field::RequestsPerMin)
            .unwrap_err()
            .contains("none (no limit)"));
    }

    #[test]
    fn a_typed_setting_is_a_number_default_or_none() {
        use Field::{MaxInFlight as Cap, Weight};
        assert_eq!(Setting::parse("", Weight), Ok(Setting::Keep));
        assert_eq!(Setting::parse("  ", Cap), Ok(Setting::Keep));
        assert_eq!(Setting::parse(" 7 ", Weight), Ok(Setting::Set(7)));
        assert_eq!(Setting::parse("1000", Weight), Ok(Setting::Set(1000)));
        assert_eq!(Setting::parse("Default", Weight), Ok(Setting::Default));
        assert_eq!(Setting::parse("default", Cap), Ok(Setting::Default));
        assert_eq!(Setting::parse("none", Cap), Ok(Setting::NoCap));
        assert_eq!(Setting::parse("NONE", Cap), Ok(Setting::NoCap));
        assert_eq!(
            Setting::parse(&MAX_CAP.to_string(), Cap),
            Ok(Setting::Set(MAX_CAP))
        );
        for bad in [
            "0",
            "-1",
            "1001",
            "2.5",
            "ten",
            "1\0",
            "\0",
            "99999999999999999999999",
        ] {
            let e = Setting::parse(bad, Weight).unwrap_err();
            assert!(e.contains("from 1 to 1000"), "{bad:?}: {e}");
        }
        assert!(Setting::parse("none", Weight)
            .unwrap_err()
            .contains("cannot be none"));
        for bad in ["0", "-3", &(MAX_CAP + 1).to_string(), "nope", "5\0"] {
            let e = Setting::parse(bad, Cap).unwrap_err();
            assert!(e.contains("none (no cap)"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_change_is_applied_to_the_stored_value() {
        assert_eq!(Setting::Keep.apply(Some(3)), Some(3));
        assert_eq!(Setting::Set(5).apply(Some(3)), Some(5));
        assert_eq!(Setting::Default.apply(Some(3)), None);
        assert_eq!(Setting::NoCap.apply(None), Some(NO_CAP));
        assert_eq!(stored_json(None), serde_json::Value::Null);
        assert_eq!(stored_json(Some(NO_CAP)), json!("none"));
        assert_eq!(stored_json(Some(9)), json!(9));
    }

    #[test]
    fn a_view_falls_back_to_the_configuration() {
        let fair = FairConfig {
            in_flight: 10,
            weight: 2,
            max_in_flight: Some(5),
            ..FairConfig::default()
        };
        let none = FairSettings {
            name: "a".into(),
            weight: None,
            max_in_flight: None,
            requests_per_min: None,
            live: true,
        };
        let v = TenantView::of(&none, fair, 3, 4);
        assert_eq!((v.weight, v.weight_is_default), (2, true));
        assert_eq!(
            (v.max_in_flight, v.max_in_flight_is_default),
            (Some(5), true)
        );
        assert_eq!((v.in_flight, v.waiting), (3, 4));
        let own = FairSettings {
            weight: Some(7),
            max_in_flight: Some(9),
            ..none.clone()
        };
        let v = TenantView::of(&own, FairConfig::default(), 0, 0);
        assert_eq!((v.weight, v.weight_is_default), (7, false));
        assert_eq!(
            (v.max_in_flight, v.max_in_flight_is_default),
            (Some(9), false)
        );
        let v = TenantView::of(&none, FairConfig::default(), 0, 0);
        assert_eq!(v.max_in_flight, None, "no cap unless configured");
        // Its own "no cap" lifts the configured one, and says so in JSON.
        let lifted = FairSettings {
            max_in_flight: Some(NO_CAP),
            ..none.clone()
        };
        let v = TenantView::of(&lifted, fair, 0, 0);
        assert_eq!((v.max_in_flight, v.max_in_flight_is_default), (None, false));
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(j["max_in_flight"], "none");
        assert_eq!(j["max_in_flight_is_default"], false);
        assert!(j.get("live").is_none(), "not part of the API");
        let j = serde_json::to_value(TenantView::of(&own, fair, 0, 0)).unwrap();
        assert_eq!(j["max_in_flight"], 9);
        // The rate: none unless configured or set; its own value wins.
        assert_eq!(j["requests_per_min"], "none");
        let rated = FairConfig {
            requests_per_min: 600,
            ..fair
        };
        let v = TenantView::of(&none, rated, 0, 0);
        assert_eq!(
            (v.requests_per_min, v.requests_per_min_is_default),
            (Some(600), true)
        );
        let unlimited = FairSettings {
            requests_per_min: Some(NO_CAP),
            ..none.clone()
        };
        let v = TenantView::of(&unlimited, rated, 0, 0);
        assert_eq!(
            (v.requests_per_min, v.requests_per_min_is_default),
            (None, false)
        );
    }
}
