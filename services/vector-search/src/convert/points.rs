//! Points: ids, vectors, the points of an Upsert, payloads, records.

use std::collections::HashMap;

use mlmesh_proto::json::{self, json_to_struct};
use mlmesh_proto::vector::v1 as pb;
use prost_types::Struct;

use super::Result;
use crate::{
    error::VectorError,
    model::{CollectionConfig, Payload, Point, PointId, Record},
    settings::VectorSettings,
};

pub fn point_id(field: &str, id: Option<&pb::PointId>) -> Result<PointId> {
    match id.and_then(|i| i.kind.as_ref()) {
        None => Err(VectorError::Empty {
            field: field.into(),
            hint: "an id (num or uuid) is required",
        }),
        Some(pb::point_id::Kind::Num(n)) => Ok(PointId::Num(*n)),
        Some(pb::point_id::Kind::Uuid(s)) => uuid::Uuid::parse_str(s)
            .map(PointId::Uuid)
            .map_err(|e| VectorError::invalid(field, format!("{s:?} is not a UUID: {e}"))),
    }
}

pub fn point_id_out(id: PointId) -> pb::PointId {
    pb::PointId {
        kind: Some(match id {
            PointId::Num(n) => pb::point_id::Kind::Num(n),
            PointId::Uuid(u) => pb::point_id::Kind::Uuid(u.to_string()),
        }),
    }
}

/// A list of ids: 1 to `max` of them.
pub fn point_ids(
    field: &str,
    ids: &[pb::PointId],
    max: usize,
    setting: &'static str,
) -> Result<Vec<PointId>> {
    if ids.is_empty() {
        return Err(VectorError::Empty {
            field: field.into(),
            hint: "at least one id is required",
        });
    }
    if ids.len() > max {
        return Err(VectorError::OverLimit {
            field: format!("{field} count"),
            got: ids.len(),
            max,
            setting,
        });
    }
    ids.iter()
        .enumerate()
        .map(|(i, id)| point_id(&format!("{field}[{i}]"), Some(id)))
        .collect()
}

/// Checks a vector against the collection: dimension and finite components.
pub fn vector(field: &str, v: &[f32], collection: &str, config: &CollectionConfig) -> Result<()> {
    if v.len() != config.dimension {
        return Err(VectorError::WrongDimension {
            field: field.into(),
            got: v.len(),
            expected: config.dimension,
            collection: collection.into(),
        });
    }
    if let Some((index, value)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return Err(VectorError::NotFinite {
            field: field.into(),
            index,
            value: *value,
        });
    }
    Ok(())
}

/// The points of an Upsert, validated against the collection.
pub fn points(
    r: pb::UpsertRequest,
    config: &CollectionConfig,
    limits: &VectorSettings,
) -> Result<Vec<Point>> {
    if r.points.is_empty() {
        return Err(VectorError::Empty {
            field: "points".into(),
            hint: "at least one point is required",
        });
    }
    if r.points.len() > limits.max_upsert_points {
        return Err(VectorError::OverLimit {
            field: "points count".into(),
            got: r.points.len(),
            max: limits.max_upsert_points,
            setting: "vector.max_upsert_points",
        });
    }
    let mut seen: HashMap<PointId, usize> = HashMap::with_capacity(r.points.len());
    let collection = r.collection;
    r.points
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let id = point_id(&format!("points[{i}].id"), p.id.as_ref())?;
            if let Some(first) = seen.insert(id, i) {
                return Err(VectorError::invalid(
                    format!("points[{i}].id"),
                    format!("{id} is also points[{first}].id; ids must be unique in a batch"),
                ));
            }
            vector(
                &format!("points[{i}].vector"),
                &p.vector,
                &collection,
                config,
            )?;
            let payload = match p.payload {
                Some(s) => struct_to_json(&format!("points[{i}].payload"), s)?,
                None => Payload::new(),
            };
            Ok(Point {
                id,
                vector: p.vector,
                payload,
            })
        })
        .collect()
}

pub fn record_out(r: Record) -> pb::Point {
    pb::Point {
        id: Some(point_id_out(r.id)),
        vector: r.vector.unwrap_or_default(),
        payload: r.payload.map(json_to_struct),
    }
}

/// A payload Struct as JSON; a NaN or infinity is INVALID_ARGUMENT at its path.
pub fn struct_to_json(field: &str, s: Struct) -> Result<Payload> {
    json::struct_to_json(field, s)
        .map_err(|e| VectorError::invalid(e.field, format!("{} is not a JSON number", e.value)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::{Value, value::Kind};
    #[test]
    fn non_finite_payload_numbers_are_refused_with_their_path() {
        let s = Struct {
            fields: [(
                "x".to_string(),
                Value {
                    kind: Some(Kind::NumberValue(f64::NAN)),
                },
            )]
            .into(),
        };
        let e = struct_to_json("points[2].payload", s).expect_err("NaN");
        assert!(e.to_string().contains("points[2].payload.x"), "{e}");
    }
}
