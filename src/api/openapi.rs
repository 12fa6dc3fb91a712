//! The OpenAPI 3.1 document, generated from the route table in
//! [`super::routes`] so that it lists exactly the routes the server serves.

use axum::Json;
use serde_json::{json, Map, Value};

fn schemas() -> Value {
    json!({
        "RunRequest": {
            "type": "object",
            "required": ["message"],
            "properties": {
                "message": {"type": "string", "minLength": 1, "maxLength": crate::pipeline::intake::MAX_MESSAGE_CHARS},
                "thread_id": {"type": "string", "format": "uuid"},
                "workload_id": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,128}$"},
                "context": {"type": "object"}
            }
        },
        "ReplayRequest": {
            "type": "object",
            "properties": {
                "ids": {"type": "array", "items": {"type": "string", "format": "uuid"}},
                "fingerprint": {"type": "string"},
                "phase": {"type": "string"},
                "patch": {"type": "object", "description": "JSON merge patch keyed by phase name"},
                "dry_run": {"type": "boolean"},
                "limit": {"type": "integer", "minimum": 1},
                "requests_per_min": {"anyOf": [
                    {"type": "integer", "minimum": 1, "maximum": crate::store::tenants::MAX_CAP},
                    {"type": "null"},
                    {"enum": ["default", "none"]}
                ], "description": "the tenant's request rate, new runs per minute on AMQP and POST /v1/runs together (beyond it runs wait `over its rate`); null or \"default\": NETRA_FAIR_REQUESTS_PER_MIN (no limit when 0); \"none\": no limit"},
                "reason": {"type": "string", "minLength": 1, "maxLength": crate::model::principal::MAX_REASON_CHARS, "description": "why: required unless dry_run; recorded in the audit trail"},
                "rate": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000, "description": "replays per second (POST /v1/replays)"}
            }
        },
        "ReasonRequest": {
            "type": "object",
            "required": ["reason"],
            "properties": {
                "reason": {"type": "string", "minLength": 1, "maxLength": crate::model::principal::MAX_REASON_CHARS}
            }
        },
        "TenantPatch": {
            "type": "object",
            "required": ["reason"],
            "anyOf": [{"required": ["weight"]}, {"required": ["max_in_flight"]}, {"required": ["requests_per_min"]}],
            "additionalProperties": false,
            "properties": {
                "weight": {"anyOf": [
                    {"type": "integer", "minimum": 1, "maximum": crate::store::tenants::MAX_WEIGHT},
                    {"type": "null"},
                    {"const": "default"}
                ], "description": "the tenant's weight; null or \"default\": NETRA_FAIR_WEIGHT"},
                "max_in_flight": {"anyOf": [
                    {"type": "integer", "minimum": 1, "maximum": crate::store::tenants::MAX_CAP},
                    {"type": "null"},
                    {"enum": ["default", "none"]}
                ], "description": "the tenant's cap on runs in flight; null or \"default\": NETRA_FAIR_MAX_IN_FLIGHT (no cap when unset); \"none\": no cap, even where NETRA_FAIR_MAX_IN_FLIGHT is set"},
                "reason": {"type": "string", "minLength": 1, "maxLength": crate::model::principal::MAX_REASON_CHARS, "description": "why: recorded in the audit trail"}
            }
        },
        "Tenant": {
            "type": "object",
            "required": ["name", "weight", "weight_is_default", "max_in_flight", "max_in_flight_is_default", "requests_per_min", "requests_per_min_is_default", "in_flight", "waiting"],
            "properties": {
                "name": {"type": "string"},
                "weight": {"type": "integer", "minimum": 1, "maximum": crate::store::tenants::MAX_WEIGHT, "description": "its weight, its own or NETRA_FAIR_WEIGHT"},
                "weight_is_default": {"type": "boolean"},
                "max_in_flight": {"anyOf": [{"type": "integer", "minimum": 1}, {"const": "none"}], "description": "its cap on runs in flight, its own or NETRA_FAIR_MAX_IN_FLIGHT; \"none\": no cap (its own \"none\", or the default when none is configured)"},
                "max_in_flight_is_default": {"type": "boolean"},
                "requests_per_min": {"anyOf": [{"type": "integer", "minimum": 1}, {"const": "none"}], "description": "its request rate, its own or NETRA_FAIR_REQUESTS_PER_MIN; \"none\": no limit"},
                "requests_per_min_is_default": {"type": "boolean"},
                "in_flight": {"type": "integer", "description": "runs admitted and not finished"},
                "waiting": {"type": "integer", "description": "runs waiting to be admitted"}
            }
        },
        "TenantList": {
            "type": "object",
            "required": ["tenants"],
            "properties": {"tenants": {"type": "array", "items": {"$ref": "#/components/schemas/Tenant"}}}
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}}}}
        }
    })
}

/// The schema of a route's `200` body, where the document names one.
fn ok_schema(method: &str, path: &str) -> Option<&'static str> {
    match (method, path) {
        ("GET", "/v1/tenants") => Some("TenantList"),
        ("GET" | "PATCH", "/v1/tenants/{name}") => Some("Tenant"),
        _ => None,
    }
}

/// True for a route that answers HTML (`…/report.html`), not JSON; its
/// errors are JSON like every other's.
fn is_html(path: &str) -> bool {
    path.ends_with(".html")
}

fn describe(status: u16, path: &str) -> &'static str {
    match status {
        200 if is_html(path) => "OK (text/html; charset=utf-8)",
        409 if is_html(path) => "The run has no report (yet): error.message names its status",
        200 => "OK",
        202 => "Accepted",
        400 => "Malformed path, query or body",
        409 => "Conflict: an Idempotency-Key reused for another request, or a replay job that already ended",
        403 => "The token may not do this (an operator token on a route for one tenant, a tenant token on a route for operators)",
        401 => "Missing or invalid bearer token",
        404 => "Not found (or another tenant's)",
        413 => "Body too large",
        422 => "Invalid field (named in error.field)",
        429 => "Rate limited (see Retry-After)",
        503 => "Not ready",
        _ => "See body",
    }
}

/// Builds the document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for r in super::routes() {
        let mut op = json!({
            "summary": r.summary,
            "operationId": format!("{}_{}", r.method.to_lowercase(), r.path.trim_start_matches('/').replace(['/', '{', '}', '-', '.'], "_")),
            "responses": {},
        });
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                let schema = if name == "id" {
                    json!({"type": "string", "format": "uuid"})
                } else {
                    json!({"type": "string"})
                };
                json!({"name": name, "in": "path", "required": true, "schema": schema})
            })
            .chain(r.params.iter().map(|p| json!({"name": p.name, "in": p.location, "required": false, "description": p.description, "schema": {"type": p.kind}})))
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some(body) = r.body {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{body}")}}}});
        }
        if r.auth {
            op["security"] = json!([{"bearer": []}]);
        }
        for s in r.statuses {
            let mut resp = json!({"description": describe(*s, r.path)});
            if *s == 200 && is_html(r.path) {
                resp["content"] = json!({"text/html": {"schema": {"type": "string"}}});
            }
            if let Some(schema) = ok_schema(r.method, r.path).filter(|_| *s == 200) {
                resp["content"] = json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}});
            }
            if *s >= 400 {
                resp["content"] =
                    json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
            }
            op["responses"][s.to_string()] = resp;
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method.to_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "netra", "version": env!("CARGO_PKG_VERSION"), "description": "Enqueue, poll, cancel, threads, dead letters, language-model usage, tenants' fair admission, metrics and health of netra."},
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        }
    })
}

/// `GET /v1/openapi.json`.
pub async fn serve() -> Json<Value> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_lists_every_route_with_its_method() {
        let doc = document();
        for r in super::super::routes() {
            let op = &doc["paths"][r.path][r.method.to_lowercase()];
            assert!(op.is_object(), "{} {} missing", r.method, r.path);
            assert!(op["responses"].as_object().is_some_and(|m| !m.is_empty()));
            if r.path.contains('{') {
                assert_eq!(op["parameters"][0]["in"], "path");
            }
            for p in r.params {
                let listed = op["parameters"].as_array().is_some_and(|ps| {
                    ps.iter()
                        .any(|x| x["name"] == p.name && x["in"] == p.location)
                });
                assert!(listed, "{} {}: {} missing", r.method, r.path, p.name);
            }
        }
        // The query parameters and headers the handlers read are listed.
        let names = |path: &str, method: &str| -> Vec<String> {
            doc["paths"][path][method]["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter_map(|p| p["name"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        assert!(names("/v1/runs", "get").contains(&"cursor".to_string()));
        assert!(names("/v1/runs/{id}", "get").contains(&"wait".to_string()));
        assert!(names("/v1/runs", "post").contains(&"Idempotency-Key".to_string()));
        assert!(names("/v1/dead-letters", "get").contains(&"fingerprint".to_string()));
        assert_eq!(names("/v1/usage", "get"), ["from", "to", "group_by"]);
        // The tenants' routes, their name a plain string.
        for method in ["get", "patch"] {
            let op = &doc["paths"]["/v1/tenants/{name}"][method];
            assert_eq!(op["parameters"][0]["name"], "name");
            assert!(op["parameters"][0]["schema"]["format"].is_null());
        }
        assert!(doc["paths"]["/v1/tenants"]["get"].is_object());
        assert!(doc["paths"]["/v1/tenants/{name}"]["patch"]["responses"]["403"].is_object());
        // A cap is a number or "none" both ways.
        let cap = &doc["components"]["schemas"]["TenantPatch"]["properties"]["max_in_flight"];
        assert!(cap.to_string().contains("\"none\""), "{cap}");
        let shown = &doc["components"]["schemas"]["Tenant"]["properties"]["max_in_flight"];
        assert!(shown.to_string().contains("\"none\""), "{shown}");
        assert_eq!(
            doc["paths"]["/v1/runs/{id}"]["get"]["parameters"][0]["schema"]["format"],
            "uuid"
        );
        // The report page answers HTML, its errors JSON.
        let html = &doc["paths"]["/v1/runs/{id}/report.html"]["get"]["responses"];
        assert!(html["200"]["content"]["text/html"].is_object());
        assert!(html["409"]["content"]["application/json"].is_object());
        // Every $ref resolves.
        let text = doc.to_string();
        for name in [
            "RunRequest",
            "ReplayRequest",
            "ReasonRequest",
            "TenantPatch",
            "Tenant",
            "TenantList",
            "Error",
        ] {
            assert!(doc["components"]["schemas"][name].is_object());
            assert!(text.contains(&format!("#/components/schemas/{name}")));
        }
    }
}
