//! Validation and conversion between the gRPC messages and the domain model.
//! Every error names the request field it is about (`points[3].vector[7]`).

use std::collections::HashMap;

use mlmesh_proto::json::{self, json_to_struct};
use mlmesh_proto::vector::v1 as pb;
use prost_types::Struct;

use crate::{
    error::VectorError,
    model::{
        CollectionConfig, Condition, Distance, Filter, Hit, Hnsw, Payload, Point, PointId,
        Quantization, Range, Record, SearchQuery,
    },
    settings::{MAX_DIMENSION, VectorSettings},
};

type Result<T> = std::result::Result<T, VectorError>;

/// Deepest nesting of filters inside filters.
pub const MAX_FILTER_DEPTH: usize = 8;
/// Largest HNSW `ef` a search may ask for.
pub const MAX_EF: usize = 4096;
/// Most candidates per hit a search on a quantized collection may ask for.
pub const MAX_OVERSAMPLING: f32 = 16.0;
/// Page size and hit count when a request leaves them 0.
pub const DEFAULT_LIMIT: usize = 10;

/// Checks a collection name: 1–64 characters from `[A-Za-z0-9_-]`.
pub fn collection_name(field: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(VectorError::Empty {
            field: field.into(),
            hint: "a collection name is required",
        });
    }
    if name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(VectorError::invalid(
            field,
            format!("{name:?} must be 1 to 64 characters from [A-Za-z0-9_-]"),
        ));
    }
    Ok(())
}

pub fn collection_config(
    r: &pb::CreateCollectionRequest,
    defaults: &VectorSettings,
) -> Result<CollectionConfig> {
    collection_name("name", &r.name)?;
    let dimension = r.dimension as usize;
    if dimension == 0 || dimension > MAX_DIMENSION {
        return Err(VectorError::invalid(
            "dimension",
            format!("{dimension} is outside 1..={MAX_DIMENSION}"),
        ));
    }
    let distance = match pb::Distance::try_from(r.distance) {
        Ok(pb::Distance::Cosine) => Distance::Cosine,
        Ok(pb::Distance::Dot) => Distance::Dot,
        Ok(pb::Distance::Euclid) => Distance::Euclid,
        Ok(pb::Distance::Unspecified) | Err(_) => {
            return Err(VectorError::invalid(
                "distance",
                format!("{} is not one of COSINE, DOT, EUCLID", r.distance),
            ));
        }
    };
    let hnsw = r.hnsw.unwrap_or_default();
    let m = match hnsw.m as usize {
        0 => defaults.hnsw_m,
        m if (2..=128).contains(&m) => m,
        m => {
            return Err(VectorError::invalid(
                "hnsw.m",
                format!("{m} is outside 2..=128"),
            ));
        }
    };
    let ef_construct = match hnsw.ef_construct as usize {
        0 => defaults.hnsw_ef_construct,
        e if (4..=MAX_EF).contains(&e) => e,
        e => {
            return Err(VectorError::invalid(
                "hnsw.ef_construct",
                format!("{e} is outside 4..={MAX_EF}"),
            ));
        }
    };
    let quantization = match pb::Quantization::try_from(r.quantization) {
        Ok(pb::Quantization::Unspecified) => defaults.quantization,
        Ok(pb::Quantization::None) => Quantization::None,
        Ok(pb::Quantization::Int8) => Quantization::Int8,
        Err(_) => {
            return Err(VectorError::invalid(
                "quantization",
                format!(
                    "{} is not one of QUANTIZATION_UNSPECIFIED, QUANTIZATION_NONE, QUANTIZATION_INT8",
                    r.quantization
                ),
            ));
        }
    };
    Ok(CollectionConfig {
        dimension,
        distance,
        hnsw: Hnsw { m, ef_construct },
        quantization,
    })
}

/// Most metadata entries per collection, and the size of each key / value.
pub const MAX_METADATA_ENTRIES: usize = 32;
pub const MAX_METADATA_KEY_BYTES: usize = 64;
pub const MAX_METADATA_VALUE_BYTES: usize = 1024;

pub fn metadata(m: &std::collections::HashMap<String, String>) -> Result<crate::model::Metadata> {
    if m.len() > MAX_METADATA_ENTRIES {
        return Err(VectorError::invalid(
            "metadata",
            format!("{} entries; the limit is {MAX_METADATA_ENTRIES}", m.len()),
        ));
    }
    for (k, v) in m {
        if k.is_empty() || k.len() > MAX_METADATA_KEY_BYTES {
            return Err(VectorError::invalid(
                "metadata",
                format!("key {k:?} must be 1 to {MAX_METADATA_KEY_BYTES} bytes"),
            ));
        }
        if v.len() > MAX_METADATA_VALUE_BYTES {
            return Err(VectorError::invalid(
                format!("metadata[{k:?}]"),
                format!("{} bytes; the limit is {MAX_METADATA_VALUE_BYTES}", v.len()),
            ));
        }
    }
    Ok(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

pub fn collection_info(info: crate::model::CollectionInfo) -> pb::CollectionInfo {
    use crate::model::IndexStatus;
    let distance = match info.config.distance {
        Distance::Cosine => pb::Distance::Cosine,
        Distance::Dot => pb::Distance::Dot,
        Distance::Euclid => pb::Distance::Euclid,
    };
    let status = match info.status {
        IndexStatus::Ready => pb::IndexStatus::Ready,
        IndexStatus::Pending => pb::IndexStatus::Pending,
        IndexStatus::Optimizing => pb::IndexStatus::Optimizing,
    };
    pb::CollectionInfo {
        name: info.name,
        dimension: info.config.dimension as u32,
        distance: distance.into(),
        hnsw: Some(pb::HnswConfig {
            m: info.config.hnsw.m as u32,
            ef_construct: info.config.hnsw.ef_construct as u32,
        }),
        points_count: info.points_count,
        indexed_vectors_count: info.indexed_vectors_count,
        segments_count: info.segments_count,
        status: status.into(),
        metadata: info.metadata.into_iter().collect(),
        quantization: match info.config.quantization {
            Quantization::None => pb::Quantization::None,
            Quantization::Int8 => pb::Quantization::Int8,
        }
        .into(),
    }
}

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

pub fn hit_out(h: Hit) -> pb::ScoredPoint {
    pb::ScoredPoint {
        id: Some(point_id_out(h.id)),
        score: h.score,
        payload: h.payload.map(json_to_struct),
        vector: h.vector.unwrap_or_default(),
    }
}

/// Converts and bounds a filter (`max_conditions` in total, nested at most
/// [`MAX_FILTER_DEPTH`] deep).
pub fn filter(field: &str, f: pb::Filter, max_conditions: usize) -> Result<Filter> {
    let mut budget = max_conditions;
    filter_at(field, f, 1, &mut budget, max_conditions)
}

fn filter_at(
    field: &str,
    f: pb::Filter,
    depth: usize,
    budget: &mut usize,
    max: usize,
) -> Result<Filter> {
    if depth > MAX_FILTER_DEPTH {
        return Err(VectorError::OverLimit {
            field: format!("{field} nesting depth"),
            got: depth,
            max: MAX_FILTER_DEPTH,
            setting: "fixed",
        });
    }
    let mut list = |name: &str, cs: Vec<pb::Condition>| -> Result<Vec<Condition>> {
        cs.into_iter()
            .enumerate()
            .map(|(i, c)| condition(&format!("{field}.{name}[{i}]"), c, depth, budget, max))
            .collect()
    };
    Ok(Filter {
        must: list("must", f.must)?,
        should: list("should", f.should)?,
        must_not: list("must_not", f.must_not)?,
    })
}

fn condition(
    field: &str,
    c: pb::Condition,
    depth: usize,
    budget: &mut usize,
    max: usize,
) -> Result<Condition> {
    if *budget == 0 {
        return Err(VectorError::OverLimit {
            field: "filter conditions".into(),
            got: max + 1,
            max,
            setting: "vector.max_filter_conditions",
        });
    }
    *budget -= 1;
    use pb::condition::Condition as C;
    match c.condition {
        None => Err(VectorError::Empty {
            field: field.into(),
            hint: "set one of field, has_id, filter",
        }),
        Some(C::HasId(h)) => Ok(Condition::HasId(point_ids(
            &format!("{field}.has_id.ids"),
            &h.ids,
            usize::MAX,
            "",
        )?)),
        Some(C::Filter(f)) => Ok(Condition::Filter(filter_at(
            &format!("{field}.filter"),
            f,
            depth + 1,
            budget,
            max,
        )?)),
        Some(C::Field(fc)) => field_condition(&format!("{field}.field"), fc),
    }
}

fn field_condition(field: &str, fc: pb::FieldCondition) -> Result<Condition> {
    use pb::field_condition::Test;
    let key = fc.key;
    if key.is_empty() {
        return Err(VectorError::Empty {
            field: format!("{field}.key"),
            hint: "a payload key is required",
        });
    }
    if key.parse::<qdrant_edge::JsonPath>().is_err() {
        return Err(VectorError::invalid(
            format!("{field}.key"),
            format!("{key:?} is not a payload path like `a`, `a.b` or `a[].b`"),
        ));
    }
    match fc.test {
        None => Err(VectorError::Empty {
            field: field.into(),
            hint: "set one of keyword, integer, boolean, range",
        }),
        Some(Test::Keyword(value)) => Ok(Condition::Keyword { key, value }),
        Some(Test::Integer(value)) => Ok(Condition::Integer { key, value }),
        Some(Test::Boolean(value)) => Ok(Condition::Bool { key, value }),
        Some(Test::Range(r)) => {
            let range = Range {
                gt: r.gt,
                gte: r.gte,
                lt: r.lt,
                lte: r.lte,
            };
            let bounds = [range.gt, range.gte, range.lt, range.lte];
            if bounds.iter().all(Option::is_none) {
                return Err(VectorError::Empty {
                    field: format!("{field}.range"),
                    hint: "set at least one of gt, gte, lt, lte",
                });
            }
            if bounds.iter().flatten().any(|b| !b.is_finite()) {
                return Err(VectorError::invalid(
                    format!("{field}.range"),
                    "bounds must be finite numbers",
                ));
            }
            Ok(Condition::Range { key, range })
        }
    }
}

/// A filter with no conditions at all.
pub fn filter_is_empty(f: &Filter) -> bool {
    f.must.is_empty() && f.should.is_empty() && f.must_not.is_empty()
}

/// One search, validated; `prefix` is `""` for Search, `searches[i].` in a batch.
pub fn search_query(
    prefix: &str,
    r: pb::SearchRequest,
    collection: &str,
    config: &CollectionConfig,
    limits: &VectorSettings,
) -> Result<SearchQuery> {
    vector(&format!("{prefix}vector"), &r.vector, collection, config)?;
    let limit = match r.limit as usize {
        0 => DEFAULT_LIMIT,
        l if l > limits.max_search_limit => {
            return Err(VectorError::OverLimit {
                field: format!("{prefix}limit"),
                got: l,
                max: limits.max_search_limit,
                setting: "vector.max_search_limit",
            });
        }
        l => l,
    };
    let ef = match r.ef as usize {
        0 => None,
        e if e > MAX_EF => {
            return Err(VectorError::OverLimit {
                field: format!("{prefix}ef"),
                got: e,
                max: MAX_EF,
                setting: "fixed",
            });
        }
        e => Some(e),
    };
    if let Some(t) = r.score_threshold
        && !t.is_finite()
    {
        return Err(VectorError::invalid(
            format!("{prefix}score_threshold"),
            format!("{t} is not a finite number"),
        ));
    }
    let o = r.oversampling;
    let oversampling = if o == 0.0 {
        None
    } else if (1.0..=MAX_OVERSAMPLING).contains(&o) {
        Some(f64::from(o))
    } else {
        return Err(VectorError::invalid(
            format!("{prefix}oversampling"),
            format!("{o} is outside 1..={MAX_OVERSAMPLING} (0 means 1)"),
        ));
    };
    let filter = r
        .filter
        .map(|f| filter(&format!("{prefix}filter"), f, limits.max_filter_conditions))
        .transpose()?;
    Ok(SearchQuery {
        vector: r.vector,
        limit,
        filter,
        score_threshold: r.score_threshold,
        ef,
        exact: r.exact,
        with_payload: r.with_payload,
        with_vectors: r.with_vectors,
        oversampling,
        rescore: !r.skip_rescore,
    })
}

/// A page size: 0 means [`DEFAULT_LIMIT`], at most `vector.max_page_size`.
pub fn page_size(field: &str, limit: u32, limits: &VectorSettings) -> Result<usize> {
    match limit as usize {
        0 => Ok(DEFAULT_LIMIT),
        l if l > limits.max_page_size => Err(VectorError::OverLimit {
            field: field.into(),
            got: l,
            max: limits.max_page_size,
            setting: "vector.max_page_size",
        }),
        l => Ok(l),
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
    fn metadata_limits_name_the_field() {
        let ok: std::collections::HashMap<String, String> = [("model".into(), "m".into())].into();
        assert_eq!(metadata(&ok).expect("valid").len(), 1);
        let many = (0..=MAX_METADATA_ENTRIES)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        let e = metadata(&many).expect_err("too many").to_string();
        assert!(e.contains("metadata") && e.contains("32"), "{e}");
        let big = [("k".into(), "x".repeat(MAX_METADATA_VALUE_BYTES + 1))].into();
        let e = metadata(&big).expect_err("too big").to_string();
        assert!(e.contains("metadata[\"k\"]") && e.contains("1024"), "{e}");
        let empty_key = [(String::new(), "v".into())].into();
        assert!(metadata(&empty_key).is_err());
    }

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

    #[test]
    fn filters_are_bounded_in_size_and_depth() {
        let leaf = || pb::Condition {
            condition: Some(pb::condition::Condition::Field(pb::FieldCondition {
                key: "k".into(),
                test: Some(pb::field_condition::Test::Boolean(true)),
            })),
        };
        let wide = pb::Filter {
            must: (0..5).map(|_| leaf()).collect(),
            ..Default::default()
        };
        let e = filter("filter", wide.clone(), 4).expect_err("too many");
        assert!(
            e.to_string().contains("vector.max_filter_conditions"),
            "{e}"
        );
        assert!(filter("filter", wide, 5).is_ok());

        let mut deep = pb::Filter::default();
        for _ in 0..MAX_FILTER_DEPTH {
            deep = pb::Filter {
                must: vec![pb::Condition {
                    condition: Some(pb::condition::Condition::Filter(deep)),
                }],
                ..Default::default()
            };
        }
        let e = filter("filter", deep, 1000).expect_err("too deep");
        assert!(e.to_string().contains("depth"), "{e}");
    }

    #[test]
    fn a_range_needs_a_finite_bound() {
        let f = |r: pb::Range| pb::Filter {
            must: vec![pb::Condition {
                condition: Some(pb::condition::Condition::Field(pb::FieldCondition {
                    key: "price".into(),
                    test: Some(pb::field_condition::Test::Range(r)),
                })),
            }],
            ..Default::default()
        };
        let e = filter("filter", f(pb::Range::default()), 10).expect_err("no bound");
        assert!(e.to_string().contains("filter.must[0].field.range"), "{e}");
        let e = filter(
            "filter",
            f(pb::Range {
                lt: Some(f64::INFINITY),
                ..Default::default()
            }),
            10,
        )
        .expect_err("infinite");
        assert!(e.to_string().contains("finite"), "{e}");
    }
}
