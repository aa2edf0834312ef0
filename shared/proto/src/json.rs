//! JSON ⇄ `google.protobuf.Struct`, for payloads and metadata that cross
//! gRPC as Structs and are stored or served as JSON.
//!
//! Protobuf numbers are doubles; whole numbers within ±2^53 come back as JSON
//! integers, so `2024` sent by a client still matches an integer filter.

use prost_types::{ListValue, Struct, Value, value::Kind};
use serde_json::{Map, Value as Json};

/// Largest integer a double holds exactly.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_992.0;

/// A Struct value that has no JSON form (NaN or an infinity), at `field`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{field}`: {value} is not a JSON number")]
pub struct NotJson {
    /// Dotted path of the offending value, from the caller's `field`.
    pub field: String,
    pub value: f64,
}

/// A Struct as a JSON object; `field` names it in errors.
pub fn struct_to_json(field: &str, s: Struct) -> Result<Map<String, Json>, NotJson> {
    s.fields
        .into_iter()
        .map(|(k, v)| {
            let value = value_to_json(&format!("{field}.{k}"), v)?;
            Ok((k, value))
        })
        .collect()
}

/// A Struct value as JSON; `field` names it in errors.
pub fn value_to_json(field: &str, v: Value) -> Result<Json, NotJson> {
    Ok(match v.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(b),
        Some(Kind::StringValue(s)) => Json::String(s),
        Some(Kind::NumberValue(n)) => {
            if !n.is_finite() {
                return Err(NotJson {
                    field: field.to_owned(),
                    value: n,
                });
            }
            if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER {
                Json::from(n as i64)
            } else {
                serde_json::Number::from_f64(n).map_or(Json::Null, Json::Number)
            }
        }
        Some(Kind::StructValue(s)) => Json::Object(struct_to_json(field, s)?),
        Some(Kind::ListValue(l)) => Json::Array(
            l.values
                .into_iter()
                .enumerate()
                .map(|(i, v)| value_to_json(&format!("{field}[{i}]"), v))
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// A JSON object as a Struct.
pub fn json_to_struct(p: Map<String, Json>) -> Struct {
    Struct {
        fields: p.into_iter().map(|(k, v)| (k, json_to_value(v))).collect(),
    }
}

/// A JSON value as a Struct value.
pub fn json_to_value(v: Json) -> Value {
    let kind = match v {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Json::String(s) => Kind::StringValue(s),
        Json::Array(a) => Kind::ListValue(ListValue {
            values: a.into_iter().map(json_to_value).collect(),
        }),
        Json::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_and_whole_numbers_become_integers() {
        let original =
            json!({"year": 2024, "score": 0.5, "tags": ["a", 1], "m": {"ok": true, "none": null}});
        let Json::Object(map) = original.clone() else {
            panic!("object")
        };
        let back = struct_to_json("payload", json_to_struct(map)).expect("valid");
        assert_eq!(Json::Object(back), original);
    }

    #[test]
    fn nan_is_refused_with_its_path() {
        let s = Struct {
            fields: [(
                "a".to_owned(),
                Value {
                    kind: Some(Kind::NumberValue(f64::NAN)),
                },
            )]
            .into(),
        };
        let e = struct_to_json("payload", s).expect_err("NaN");
        assert_eq!(e.field, "payload.a");
    }
}
