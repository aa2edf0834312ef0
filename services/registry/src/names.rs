//! What a model or alias name may be.

use crate::error::{RegistryError, Result};

/// Most characters in a model or alias name.
pub const MAX_NAME: usize = 128;

/// 1–128 characters of `[A-Za-z0-9._-]`, not starting with `.` or `-`
/// (safe as a folder name and in a `registry://model@alias` URL).
pub fn check(field: &str, name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(RegistryError::invalid(format!(
            "{field} {name:?} {why}: names are 1-{MAX_NAME} characters of A-Z a-z 0-9 . _ - and do not start with '.' or '-'"
        )))
    };
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > MAX_NAME {
        return bad("is too long");
    }
    if name.starts_with(['.', '-']) {
        return bad("starts with '.' or '-'");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return bad("has a character outside the allowed set");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["iris", "fraud-v2", "a.b_c", "X9"] {
            check("name", ok).expect(ok);
        }
        for bad in ["", ".hidden", "-x", "a/b", "a b", "é", &"x".repeat(129)] {
            let e = check("name", bad).expect_err(bad);
            assert!(e.to_string().starts_with("name "), "{e}");
        }
    }
}
