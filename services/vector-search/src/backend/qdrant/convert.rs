//! Our model to Qdrant's gRPC types and back: ids, payloads, the dense
//! and sparse vectors of a point, filters.

use std::collections::HashMap;

use qdrant_client::qdrant::{
    self as q, Condition as QCondition, Filter as QFilter, point_id::PointIdOptions,
    vector_output::Vector as QVector, vectors_output::VectorsOptions,
};

use crate::model::{Condition, Filter, Payload, PointId, SparseVector};

pub(super) fn to_q_id(id: PointId) -> q::PointId {
    match id {
        PointId::Num(n) => n.into(),
        PointId::Uuid(u) => u.to_string().into(),
    }
}

pub(super) fn from_q_id(id: Option<q::PointId>) -> Option<PointId> {
    match id?.point_id_options? {
        PointIdOptions::Num(n) => Some(PointId::Num(n)),
        PointIdOptions::Uuid(s) => uuid::Uuid::parse_str(&s).ok().map(PointId::Uuid),
    }
}

pub(super) fn payload_of(p: HashMap<String, q::Value>) -> Payload {
    p.into_iter().map(|(k, v)| (k, v.into_json())).collect()
}

/// The name of a collection's sparse vector on the server (the dense one is
/// the unnamed default, `""`).
pub(super) const SPARSE_NAME: &str = "text";

/// A point's dense and sparse vectors as the server returned them.
pub(super) fn vectors_of(v: Option<q::VectorsOutput>) -> (Option<Vec<f32>>, Option<SparseVector>) {
    let dense = |out: q::VectorOutput| match out.into_vector() {
        QVector::Dense(d) => Some(d.data),
        _ => None,
    };
    match v.and_then(|v| v.vectors_options) {
        Some(VectorsOptions::Vector(out)) => (dense(out), None),
        Some(VectorsOptions::Vectors(mut named)) => {
            let d = named.vectors.remove("").and_then(dense);
            let s = named
                .vectors
                .remove(SPARSE_NAME)
                .and_then(|out| match out.into_vector() {
                    QVector::Sparse(s) => Some(SparseVector {
                        indices: s.indices,
                        values: s.values,
                    }),
                    _ => None,
                });
            (d, s)
        }
        None => (None, None),
    }
}

pub(super) fn to_q_filter(f: &Filter) -> QFilter {
    let list = |cs: &[Condition]| cs.iter().map(to_q_condition).collect::<Vec<_>>();
    QFilter {
        must: list(&f.must),
        should: list(&f.should),
        must_not: list(&f.must_not),
        ..QFilter::default()
    }
}

pub(super) fn to_q_condition(c: &Condition) -> QCondition {
    match c {
        Condition::Keyword { key, value } => QCondition::matches(key.clone(), value.clone()),
        Condition::Integer { key, value } => QCondition::matches(key.clone(), *value),
        Condition::Bool { key, value } => QCondition::matches(key.clone(), *value),
        Condition::Range { key, range } => QCondition::range(
            key.clone(),
            q::Range {
                gt: range.gt,
                gte: range.gte,
                lt: range.lt,
                lte: range.lte,
            },
        ),
        Condition::HasId(ids) => QCondition::has_id(ids.iter().copied().map(to_q_id)),
        Condition::Filter(f) => QCondition::from(to_q_filter(f)),
    }
}
