//! A small subset of JSON Schema, checked by hand: `type`, `properties`,
//! `required`, `additionalProperties: false`, `enum`, `minimum`, `maximum`
//! and `items`. Enough to reject a bad tool call with the exact field named,
//! and the same schema doubles as the function signature an LLM would see.

use serde_json::Value;

/// Why parameters do not match a schema: the field path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Dotted path of the offending field (`config.compute`), `` for the root.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "null" => v.is_null(),
        _ => false,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Checks `value` against `schema`; the first violation found is returned.
pub fn validate(schema: &Value, value: &Value) -> Result<(), Invalid> {
    check(schema, value, "")
}

fn check(schema: &Value, v: &Value, path: &str) -> Result<(), Invalid> {
    let bad = |reason: String| Invalid {
        field: path.to_string(),
        reason,
    };
    if let Some(ty) = schema.get("type") {
        let ok = match ty {
            Value::String(t) => type_ok(t, v),
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(|t| type_ok(t, v)),
            _ => true,
        };
        if !ok {
            return Err(bad(format!("must be of type {ty}, got {v}")));
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(v) {
            return Err(bad(format!(
                "must be one of {}",
                Value::Array(options.clone())
            )));
        }
    }
    if let Some(x) = v.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
            if x < min {
                return Err(bad(format!("must be >= {min}, got {x}")));
            }
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
            if x > max {
                return Err(bad(format!("must be <= {max}, got {x}")));
            }
        }
    }
    if let Some(obj) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !obj.contains_key(req) {
                return Err(Invalid {
                    field: join(path, req),
                    reason: "is required".into(),
                });
            }
        }
        let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
        for (k, child) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(s, child, &join(path, k))?,
                None if closed => {
                    return Err(Invalid {
                        field: join(path, k),
                        reason: "is not a parameter of this tool".into(),
                    })
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, item) in arr.iter().enumerate() {
            check(items, item, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object", "additionalProperties": false, "required": ["workload_id"],
            "properties": {
                "workload_id": {"type": "string"},
                "days": {"type": "integer", "minimum": 1, "maximum": 3650},
                "kind": {"type": "string", "enum": ["models", "gpus"]},
                "ids": {"type": "array", "items": {"type": "string"}},
            }
        })
    }

    #[test]
    fn names_the_field_and_the_rule() {
        let s = schema();
        assert!(validate(&s, &json!({"workload_id": "w", "days": 7})).is_ok());
        let e = validate(&s, &json!({"days": 7})).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("workload_id", "is required")
        );
        let e = validate(&s, &json!({"workload_id": "w", "days": 0})).unwrap_err();
        assert_eq!(e.field, "days");
        assert!(e.reason.contains(">= 1"), "{}", e.reason);
        let e = validate(&s, &json!({"workload_id": "w", "days": 2.5})).unwrap_err();
        assert!(e.reason.contains("integer"));
        let e = validate(&s, &json!({"workload_id": "w", "kind": "tpus"})).unwrap_err();
        assert_eq!(e.field, "kind");
        let e = validate(&s, &json!({"workload_id": "w", "tenant": "other"})).unwrap_err();
        assert_eq!(e.field, "tenant");
        let e = validate(&s, &json!({"workload_id": "w", "ids": ["a", 3]})).unwrap_err();
        assert_eq!(e.field, "ids[1]");
        assert!(validate(&s, &json!([1])).is_err());
    }
}
