//! Points: ids, vectors, the points of an Upsert, payloads, records.

use std::collections::HashMap;

use mlmesh_proto::json::{self, json_to_struct};
use mlmesh_proto::vector::v1 as pb;
use prost_types::Struct;

use super::Result;
use crate::{
    error::VectorError,
    model::{CollectionConfig, Payload, Point, PointId, Record, SparseVector, TextIndex},
    settings::VectorSettings,
    text::Bm25,
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

/// A client's sparse vector: as many values as indices, unique indices, at
/// most `vector.max_sparse_terms`, finite values.
pub fn sparse_vector(
    field: &str,
    v: pb::SparseVector,
    limits: &VectorSettings,
) -> Result<SparseVector> {
    if v.indices.len() != v.values.len() {
        return Err(VectorError::invalid(
            field,
            format!(
                "{} indices but {} values; they pair up one to one",
                v.indices.len(),
                v.values.len()
            ),
        ));
    }
    if v.indices.len() > limits.max_sparse_terms {
        return Err(VectorError::OverLimit {
            field: format!("{field}.indices count"),
            got: v.indices.len(),
            max: limits.max_sparse_terms,
            setting: "vector.max_sparse_terms",
        });
    }
    if let Some((i, x)) = v.values.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return Err(VectorError::NotFinite {
            field: format!("{field}.values"),
            index: i,
            value: *x,
        });
    }
    let mut seen = std::collections::HashSet::with_capacity(v.indices.len());
    if let Some(d) = v.indices.iter().find(|&&i| !seen.insert(i)) {
        return Err(VectorError::invalid(
            format!("{field}.indices"),
            format!("{d} appears twice; indices must be unique"),
        ));
    }
    Ok(SparseVector {
        indices: v.indices,
        values: v.values,
    })
}

/// A text within `vector.max_text_bytes`.
pub fn text_within(field: &str, text: &str, limits: &VectorSettings) -> Result<()> {
    if text.len() > limits.max_text_bytes {
        return Err(VectorError::OverLimit {
            field: format!("{field} bytes"),
            got: text.len(),
            max: limits.max_text_bytes,
            setting: "vector.max_text_bytes",
        });
    }
    Ok(())
}

/// A point's sparse vector from its `text` or `sparse`, per the collection's
/// text index. `None` when it gives neither (the point is then found by its
/// dense vector only).
fn point_sparse(
    field: &str,
    text: String,
    sparse: Option<pb::SparseVector>,
    collection: &str,
    config: &CollectionConfig,
    limits: &VectorSettings,
    bm25: &Bm25,
) -> Result<Option<SparseVector>> {
    let refuse = |name: &str, reason| {
        Err(VectorError::NoTextIndex {
            field: format!("{field}.{name}"),
            collection: collection.into(),
            reason,
        })
    };
    match (text.is_empty(), sparse) {
        (true, None) => Ok(None),
        (false, Some(_)) => Err(VectorError::invalid(
            format!("{field}.sparse"),
            "give `text` or `sparse`, not both",
        )),
        (false, None) => match config.text_index {
            TextIndex::Bm25 => {
                text_within(&format!("{field}.text"), &text, limits)?;
                Ok(Some(bm25.document(&text)))
            }
            TextIndex::Sparse => refuse(
                "text",
                "takes client-computed sparse vectors (TEXT_INDEX_SPARSE), not text",
            ),
            TextIndex::None => refuse("text", "has no text index (created with TEXT_INDEX_NONE)"),
        },
        (true, Some(v)) => {
            if !config.text_index.exists() {
                return refuse("sparse", "has no text index (created with TEXT_INDEX_NONE)");
            }
            sparse_vector(&format!("{field}.sparse"), v, limits).map(Some)
        }
    }
}

/// The points of an Upsert, validated against the collection; texts turned
/// into sparse vectors (CPU work: call off the reactor).
pub fn points(
    r: pb::UpsertRequest,
    config: &CollectionConfig,
    limits: &VectorSettings,
    bm25: &Bm25,
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
            let sparse = point_sparse(
                &format!("points[{i}]"),
                p.text,
                p.sparse,
                &collection,
                config,
                limits,
                bm25,
            )?;
            Ok(Point {
                id,
                vector: p.vector,
                payload,
                sparse,
            })
        })
        .collect()
}

pub fn record_out(r: Record) -> pb::Point {
    pb::Point {
        id: Some(point_id_out(r.id)),
        vector: r.vector.unwrap_or_default(),
        payload: r.payload.map(json_to_struct),
        text: String::new(),
        sparse: r.sparse.map(|s| pb::SparseVector {
            indices: s.indices,
            values: s.values,
        }),
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
