//! Our model (points, ids, filters, distances) to the engine's and back.

use super::*;

pub(super) fn edge_distance(d: Distance) -> edge::Distance {
    match d {
        Distance::Cosine => edge::Distance::Cosine,
        Distance::Dot => edge::Distance::Dot,
        Distance::Euclid => edge::Distance::Euclid,
    }
}

pub(super) fn to_edge_id(id: PointId) -> edge::PointId {
    match id {
        PointId::Num(n) => edge::PointId::NumId(n),
        PointId::Uuid(u) => edge::PointId::Uuid(u),
    }
}

pub(super) fn from_edge_id(id: edge::PointId) -> PointId {
    match id {
        edge::PointId::NumId(n) => PointId::Num(n),
        edge::PointId::Uuid(u) => PointId::Uuid(u),
    }
}

/// The name of a collection's sparse vector in the engine (the dense one
/// is the unnamed default).
pub(super) const SPARSE_NAME: &str = "text";

pub(super) fn to_edge_sparse(v: SparseVector) -> edge::SparseVector {
    edge::SparseVector {
        indices: v.indices,
        values: v.values,
    }
}

pub(super) fn to_edge_point(p: Point) -> PointStructPersisted {
    let vector = match p.sparse {
        None => VectorStructPersisted::Single(p.vector),
        Some(s) => VectorStructPersisted::Named(
            [
                (
                    edge::DEFAULT_VECTOR_NAME.to_owned(),
                    VectorPersisted::Dense(p.vector),
                ),
                (
                    SPARSE_NAME.to_owned(),
                    VectorPersisted::Sparse(to_edge_sparse(s)),
                ),
            ]
            .into(),
        ),
    };
    PointStructPersisted {
        id: to_edge_id(p.id),
        vector,
        payload: Some(edge::Payload(p.payload)),
    }
}

pub(super) fn payload_of(p: Option<edge::Payload>) -> Payload {
    p.map(|p| p.0).unwrap_or_default()
}

/// A stored point's dense vector and sparse vector, when it has them.
pub(super) fn vectors_of(
    v: Option<VectorStructInternal>,
) -> (Option<Vec<f32>>, Option<SparseVector>) {
    match v {
        Some(VectorStructInternal::Single(d)) => (Some(d), None),
        Some(VectorStructInternal::Named(mut m)) => {
            let dense = match m.remove(edge::DEFAULT_VECTOR_NAME) {
                Some(edge::VectorInternal::Dense(d)) => Some(d),
                _ => None,
            };
            let sparse = match m.remove(SPARSE_NAME) {
                Some(edge::VectorInternal::Sparse(s)) => Some(SparseVector {
                    indices: s.indices,
                    values: s.values,
                }),
                _ => None,
            };
            (dense, sparse)
        }
        Some(VectorStructInternal::MultiDense(_)) | None => (None, None),
    }
}

pub(super) fn key(k: &str) -> Result<JsonPath> {
    k.parse().map_err(|_| {
        VectorError::invalid("filter key", format!("{k:?} is not a valid payload path"))
    })
}

pub(super) fn to_edge_filter(f: &Filter) -> Result<edge::Filter> {
    let list = |cs: &[Condition]| -> Result<Option<Vec<edge::Condition>>> {
        if cs.is_empty() {
            return Ok(None);
        }
        cs.iter()
            .map(to_edge_condition)
            .collect::<Result<_>>()
            .map(Some)
    };
    Ok(edge::Filter {
        must: list(&f.must)?,
        should: list(&f.should)?,
        must_not: list(&f.must_not)?,
        min_should: None,
    })
}

pub(super) fn to_edge_condition(c: &Condition) -> Result<edge::Condition> {
    let value = |k: &str, v: ValueVariants| -> Result<edge::Condition> {
        Ok(edge::Condition::Field(FieldCondition::new_match(
            key(k)?,
            Match::new_value(v),
        )))
    };
    match c {
        Condition::Keyword { key: k, value: v } => value(k, ValueVariants::String(v.clone())),
        Condition::Integer { key: k, value: v } => value(k, ValueVariants::Integer(*v)),
        Condition::Bool { key: k, value: v } => value(k, ValueVariants::Bool(*v)),
        Condition::Range { key: k, range } => {
            Ok(edge::Condition::Field(FieldCondition::new_range(
                key(k)?,
                edge::Range {
                    gt: range.gt.map(OrderedFloat),
                    gte: range.gte.map(OrderedFloat),
                    lt: range.lt.map(OrderedFloat),
                    lte: range.lte.map(OrderedFloat),
                },
            )))
        }
        Condition::HasId(ids) => {
            let set: AHashSet<edge::PointId> = ids.iter().copied().map(to_edge_id).collect();
            Ok(edge::Condition::HasId(HasIdCondition::from(set)))
        }
        Condition::Filter(f) => Ok(edge::Condition::Filter(to_edge_filter(f)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_go_to_the_engine_and_back_unchanged() {
        let u = uuid::Uuid::parse_str("5c56c793-69f3-4fbf-87e6-c4bf54c28c26").expect("uuid");
        for id in [PointId::Num(0), PointId::Num(u64::MAX), PointId::Uuid(u)] {
            assert_eq!(from_edge_id(to_edge_id(id)), id);
        }
    }

    #[test]
    fn only_a_dense_default_vector_is_a_point_vector() {
        assert_eq!(
            vectors_of(Some(VectorStructInternal::Single(vec![1.0, 2.0]))),
            (Some(vec![1.0, 2.0]), None)
        );
        assert_eq!(
            vectors_of(Some(VectorStructInternal::Named(Default::default()))),
            (None, None)
        );
        assert!(payload_of(None).is_empty());
    }

    #[test]
    fn a_point_with_a_sparse_vector_goes_to_the_engine_named_and_comes_back() {
        let sparse = SparseVector {
            indices: vec![7, 3],
            values: vec![0.5, 1.5],
        };
        let p = to_edge_point(Point {
            id: PointId::Num(1),
            vector: vec![1.0, 2.0],
            payload: Payload::new(),
            sparse: Some(sparse.clone()),
        });
        let VectorStructPersisted::Named(m) = p.vector else {
            panic!("named vectors expected");
        };
        let back: std::collections::HashMap<_, _> = m
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    VectorPersisted::Dense(d) => edge::VectorInternal::Dense(d),
                    VectorPersisted::Sparse(s) => edge::VectorInternal::Sparse(s),
                    VectorPersisted::MultiDense(_) => panic!("no multi-dense"),
                };
                (k, v)
            })
            .collect();
        assert_eq!(
            vectors_of(Some(VectorStructInternal::Named(back))),
            (Some(vec![1.0, 2.0]), Some(sparse))
        );
    }
}
