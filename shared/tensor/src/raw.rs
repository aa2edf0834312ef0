//! The raw form of BYTES tensors: each element a 4-byte little-endian
//! length, then that many bytes. Splitting is bounded by the bytes at hand,
//! never by a count someone declared.

use crate::TensorError;

/// Exactly `count` elements filling `raw`; `what` names the tensor in
/// errors.
pub fn split_bytes(count: usize, raw: &[u8], what: &str) -> Result<Vec<Vec<u8>>, TensorError> {
    let bad = |reason: String| TensorError::malformed(what, reason);
    // Every element takes at least its 4-byte length.
    let mut out = Vec::with_capacity(count.min(raw.len() / 4 + 1));
    let mut rest = raw;
    for i in 0..count {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(bad(format!(
                "BYTES raw contents end before element {i} of {count} (each element is a 4-byte little-endian length, then the bytes)"
            )));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err(bad(format!(
                "BYTES element {i} claims {len} bytes but only {} remain",
                tail.len()
            )));
        }
        out.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    if !rest.is_empty() {
        return Err(bad(format!(
            "{} bytes left over after the {count} BYTES elements the shape names",
            rest.len()
        )));
    }
    Ok(out)
}

/// Every element of `raw`, however many it holds.
pub fn split_all_bytes<'a>(raw: &'a [u8], what: &str) -> Result<Vec<&'a [u8]>, TensorError> {
    let mut out = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| TensorError::malformed(what, "a BYTES element is cut short"))?;
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err(TensorError::malformed(what, "a BYTES element is cut short"));
        }
        out.push(&tail[..len]);
        rest = &tail[len..];
    }
    Ok(out)
}

/// Appends one BYTES element (length, then bytes); `None` when it is 4 GiB
/// or longer, which the 4-byte length cannot say.
pub fn push_bytes(out: &mut Vec<u8>, element: &[u8]) -> Option<()> {
    let len = u32::try_from(element.len()).ok()?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(element);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_split_exactly() {
        let mut raw = Vec::new();
        push_bytes(&mut raw, b"ab").expect("short");
        push_bytes(&mut raw, b"").expect("short");
        assert_eq!(
            split_bytes(2, &raw, "t").expect("two"),
            vec![b"ab".to_vec(), Vec::new()]
        );
        assert_eq!(split_all_bytes(&raw, "t").expect("all").len(), 2);
        let e = split_bytes(3, &raw, "b").expect_err("short");
        assert!(e.to_string().contains("element 2"), "{e}");
        let e = split_bytes(1, &raw, "b").expect_err("left over");
        assert!(e.to_string().contains("left over"), "{e}");
        let e = split_bytes(1, &[9, 0, 0, 0, b'a'], "b").expect_err("over");
        assert!(e.to_string().contains("claims 9 bytes"), "{e}");
        assert!(split_all_bytes(&[9, 0, 0, 0, b'a'], "out").is_err());
        // A huge declared count allocates by the bytes at hand.
        assert!(split_bytes(usize::MAX, &[], "b").is_err());
    }
}
