//! What a run decides from values: the value a reference names, whether a
//! switch case's condition holds, and the stable hash that keeps a
//! caller on one arm of a split.

use serde_json::Value as Json;

use super::Values;
use crate::{
    core::Result,
    error::GatewayError,
    pipeline::spec::{Condition, toml_like::Scalar},
    tensor::Tensor,
};

/// FNV-1a: the same arm for the same key on every replica and release.
pub(super) fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

pub(super) fn lookup<'v>(values: &'v Values, reference: &str) -> Result<&'v Tensor> {
    values.get(reference).ok_or_else(|| {
        GatewayError::Internal(format!(
            "{reference} has no value (checked at start; a bug)"
        ))
    })
}

/// The one element a condition tests.
fn scalar(values: &Values, reference: &str) -> Result<Json> {
    let t = lookup(values, reference)?;
    let mut v = t.values(reference)?;
    if v.len() != 1 {
        return Err(GatewayError::invalid(
            reference,
            format!(
                "a condition tests one value; this has {} (shape {:?})",
                v.len(),
                t.shape
            ),
        ));
    }
    Ok(v.remove(0))
}

fn same(v: &Json, s: &Scalar) -> bool {
    match s {
        Scalar::Bool(b) => v.as_bool() == Some(*b),
        Scalar::Int(i) => v.as_f64() == Some(*i as f64),
        Scalar::Float(f) => v.as_f64() == Some(*f),
        Scalar::Text(t) => v.as_str() == Some(t.as_str()),
    }
}

pub(super) fn holds(c: &Condition, values: &Values) -> Result<bool> {
    let v = scalar(values, &c.value)?;
    let num = || {
        v.as_f64().ok_or_else(|| {
            GatewayError::invalid(&c.value, format!("{v} is not a number to compare"))
        })
    };
    Ok(if let Some(s) = &c.equals {
        same(&v, s)
    } else if let Some(s) = &c.not_equals {
        !same(&v, s)
    } else if let Some(list) = &c.one_of {
        list.iter().any(|s| same(&v, s))
    } else if let Some(x) = c.gt {
        num()? > x
    } else if let Some(x) = c.gte {
        num()? >= x
    } else if let Some(x) = c.lt {
        num()? < x
    } else if let Some(x) = c.lte {
        num()? <= x
    } else {
        false
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arms_are_sticky_per_key_and_differ_across_keys() {
        let a = fnv1a(&["p", "ab", "alice"]);
        assert_eq!(a, fnv1a(&["p", "ab", "alice"]));
        assert_ne!(a, fnv1a(&["p", "ab", "bob"]));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(fnv1a(&["ab", "c"]), fnv1a(&["a", "bc"]));
    }

    #[test]
    fn conditions_compare_one_value() {
        let mut values = Values::new();
        values.insert("request.lang".into(), Tensor::texts(&["en"]));
        values.insert("s.score".into(), Tensor::f32(vec![1], [0.7]));
        values.insert("s.many".into(), Tensor::f32(vec![2], [0.7, 0.1]));
        let c = |value: &str| Condition {
            value: value.into(),
            ..Default::default()
        };
        let eq = Condition {
            equals: Some(Scalar::Text("en".into())),
            ..c("request.lang")
        };
        assert!(holds(&eq, &values).expect("en"));
        let gt = Condition {
            gt: Some(0.5),
            ..c("s.score")
        };
        assert!(holds(&gt, &values).expect("0.7 > 0.5"));
        let many = Condition {
            gt: Some(0.5),
            ..c("s.many")
        };
        assert!(holds(&many, &values).is_err());
    }
}
