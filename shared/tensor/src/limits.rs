//! Shapes from clients, checked before any work: a tensor may declare a
//! trillion rows in twelve bytes, so nothing is allocated or looped over
//! for a shape until [`ShapeLimits::count`] has passed it.

use crate::TensorError;

/// Most dimensions of a tensor (ONNX Runtime's own limit is far above any
/// real model's; this bounds the work of checking a shape).
pub const MAX_RANK: usize = 16;

/// What one tensor a client sends may declare. The settings that set them
/// are named in the errors (`limits.max_tensor_rows`,
/// `limits.max_tensor_elements` by default).
#[derive(Clone, Copy, Debug)]
pub struct ShapeLimits {
    /// Largest first (row) dimension.
    pub max_rows: usize,
    /// Largest product of the dimensions, zeros counted as ones: a zero
    /// dimension makes the tensor empty, but must not let another dimension
    /// declare a trillion rows that a per-row step would then walk.
    pub max_elements: usize,
    /// The settings named in errors: (rows, elements).
    pub keys: (&'static str, &'static str),
}

impl ShapeLimits {
    /// Limits named after the gateway's settings.
    pub const fn new(max_rows: usize, max_elements: usize) -> Self {
        Self {
            max_rows,
            max_elements,
            keys: ("limits.max_tensor_rows", "limits.max_tensor_elements"),
        }
    }

    /// Elements `shape` holds, after checking it: at most [`MAX_RANK`]
    /// dimensions, none negative, rows ≤ `max_rows`, the product of the
    /// dimensions (zeros as ones) ≤ `max_elements`. The error names
    /// `field` and the setting.
    pub fn count(&self, shape: &[i64], field: &str) -> Result<usize, TensorError> {
        if shape.len() > MAX_RANK {
            return Err(TensorError::invalid(
                field,
                format!("{} dimensions; at most {MAX_RANK}", shape.len()),
            ));
        }
        let mut declared = 1usize;
        let mut count = 1usize;
        for (i, &d) in shape.iter().enumerate() {
            let d = usize::try_from(d)
                .map_err(|_| TensorError::invalid(field, format!("dimension {d} is negative")))?;
            if i == 0 && d > self.max_rows {
                return Err(TensorError::invalid(
                    field,
                    format!("{d} rows; at most {} ({})", self.max_rows, self.keys.0),
                ));
            }
            declared = declared
                .checked_mul(d.max(1))
                .filter(|&n| n <= self.max_elements)
                .ok_or_else(|| {
                    TensorError::invalid(
                        field,
                        format!(
                            "shape {shape:?} declares more than {} elements ({})",
                            self.max_elements, self.keys.1
                        ),
                    )
                })?;
            count *= d;
        }
        Ok(count)
    }
}

/// Elements a shape holds; `None` for a negative axis or an overflow.
pub fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_bounded_before_use() {
        let limits = ShapeLimits::new(8, 100);
        assert!(limits.count(&[2, -1], "inputs[0].shape").is_err());
        assert_eq!(limits.count(&[2, 3], "s").expect("6"), 6);
        assert_eq!(limits.count(&[0, 3], "s").expect("empty"), 0);
        // Empty, but declaring rows or elements beyond the limits.
        let e = limits.count(&[9, 0], "s").expect_err("rows");
        assert!(e.to_string().contains("limits.max_tensor_rows"), "{e}");
        let e = limits.count(&[1, 0, 101], "s").expect_err("elements");
        assert!(e.to_string().contains("limits.max_tensor_elements"), "{e}");
        let e = limits.count(&[i64::MAX, 0], "s").expect_err("rows");
        assert!(e.to_string().contains('s'), "{e}");
        let e = limits.count(&[1; 17], "s").expect_err("rank");
        assert!(e.to_string().contains("16"), "{e}");
        assert_eq!(element_count(&[2, 3]), Some(6));
        assert_eq!(element_count(&[-1]), None);
        assert_eq!(element_count(&[i64::MAX, i64::MAX]), None);
    }
}
