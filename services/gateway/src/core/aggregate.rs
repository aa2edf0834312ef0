//! How a parallel step combines its branches' outputs: the element-wise
//! mean (model averaging), the element-wise majority vote (a tie goes to
//! the earliest branch, so the outcome never depends on timing), or the
//! first branch's.

use serde_json::Value as Json;

use crate::pipeline::spec::Aggregation;
use crate::{
    error::GatewayError,
    tensor::{self, Tensor},
};

/// Combines one output (`what` names it in errors) across branches.
pub fn combine(how: Aggregation, what: &str, parts: &[Tensor]) -> Result<Tensor, GatewayError> {
    let first = parts
        .first()
        .ok_or_else(|| GatewayError::Internal(format!("{what}: no branch answered")))?;
    if let Some(p) = parts
        .iter()
        .find(|p| p.shape != first.shape || p.datatype != first.datatype)
    {
        return Err(GatewayError::Internal(format!(
            "{what}: branches answered {} {:?} and {} {:?}, which cannot be combined",
            first.datatype, first.shape, p.datatype, p.shape
        )));
    }
    if how == Aggregation::First {
        return Ok(first.clone());
    }
    // Each branch's elements, as many as its shape says: a replica whose
    // bytes disagree with its shape is an error, never an index past the
    // end of a shorter branch.
    let count = mlmesh_tensor::element_count(&first.shape);
    let values = parts
        .iter()
        .map(|p| {
            let v = p.values(what)?;
            if Some(v.len()) != count {
                return Err(GatewayError::Internal(format!(
                    "{what}: a branch answered {} elements for shape {:?}",
                    v.len(),
                    p.shape
                )));
            }
            Ok(v)
        })
        .collect::<Result<Vec<_>, _>>()?;
    match how {
        Aggregation::First => Ok(first.clone()),
        Aggregation::Mean => {
            let n = values[0].len();
            let mut sum = vec![0f64; n];
            for v in &values {
                for (s, x) in sum.iter_mut().zip(v) {
                    *s += x.as_f64().ok_or_else(|| {
                        GatewayError::Internal(format!(
                            "{what}: the mean needs numbers, got {}",
                            first.datatype
                        ))
                    })?;
                }
            }
            let k = values.len() as f64;
            Ok(Tensor::f32(
                first.shape.clone(),
                sum.into_iter().map(|s| (s / k) as f32),
            ))
        }
        Aggregation::Majority => {
            let n = values[0].len();
            let winners: Vec<Json> = (0..n)
                .map(|i| {
                    let votes: Vec<&Json> = values.iter().map(|v| &v[i]).collect();
                    // Most votes; among equals, the one seen first.
                    let mut best = votes[0];
                    let mut best_count = 0;
                    for cand in &votes {
                        let c = votes.iter().filter(|v| *v == cand).count();
                        if c > best_count {
                            best = cand;
                            best_count = c;
                        }
                    }
                    best.clone()
                })
                .collect();
            let refs: Vec<&Json> = winners.iter().collect();
            Ok(Tensor {
                datatype: first.datatype,
                shape: first.shape.clone(),
                raw: tensor::to_raw(first.datatype, &refs, what)?.into(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ints(v: &[i64]) -> Tensor {
        let leaves: Vec<Json> = v.iter().map(|x| json!(x)).collect();
        let refs: Vec<&Json> = leaves.iter().collect();
        Tensor {
            datatype: tensor::DataType::I64,
            shape: vec![v.len() as i64],
            raw: tensor::to_raw(tensor::DataType::I64, &refs, "t")
                .expect("ints")
                .into(),
        }
    }

    #[test]
    fn votes_means_and_ties() {
        let v = combine(
            Aggregation::Majority,
            "label",
            &[ints(&[1, 0, 2]), ints(&[1, 1, 3]), ints(&[0, 1, 4])],
        )
        .expect("vote");
        // Row 2: three different votes, the earliest branch wins.
        assert_eq!(
            v.values("label").expect("ints"),
            [json!(1), json!(1), json!(2)]
        );
        let m = combine(
            Aggregation::Mean,
            "p",
            &[
                Tensor::f32(vec![2], [0.2, 0.8]),
                Tensor::f32(vec![2], [0.4, 0.6]),
            ],
        )
        .expect("mean");
        let got: Vec<f64> = m
            .values("p")
            .expect("f32")
            .iter()
            .filter_map(Json::as_f64)
            .collect();
        assert!(
            (got[0] - 0.3).abs() < 1e-6 && (got[1] - 0.7).abs() < 1e-6,
            "{got:?}"
        );
        let e = combine(
            Aggregation::Mean,
            "p",
            &[
                Tensor::f32(vec![1], [1.0]),
                Tensor::f32(vec![2], [1.0, 2.0]),
            ],
        )
        .expect_err("shapes differ");
        assert!(e.to_string().contains("cannot be combined"), "{e}");
        // Same shape, but one branch's bytes hold fewer elements: an error,
        // not an index past its end.
        let mut short = ints(&[1, 2, 3]);
        short.raw = short.raw.slice(..8);
        for how in [Aggregation::Majority, Aggregation::Mean] {
            let e = combine(how, "label", &[ints(&[1, 2, 3]), short.clone()])
                .expect_err("short branch");
            assert!(e.to_string().contains("1 elements"), "{e}");
        }
    }
}
