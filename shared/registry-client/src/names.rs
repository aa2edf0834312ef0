//! What a model or alias name may be: safe as a folder name and inside a
//! `registry://model@alias` source. The registry refuses any other name;
//! clients check the same rule before they call.

/// Most characters in a model or alias name.
pub const MAX_NAME: usize = 128;

/// The rule, as error messages quote it.
pub const RULE: &str =
    "names are 1-128 characters of A-Z a-z 0-9 . _ - and do not start with '.' or '-'";

/// `Ok` for 1–[`MAX_NAME`] characters of `[A-Za-z0-9._-]` not starting
/// with `.` or `-`; otherwise what is wrong (`"is empty"`, …).
pub fn check(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.len() > MAX_NAME {
        return Err("is too long");
    }
    if name.starts_with(['.', '-']) {
        return Err("starts with '.' or '-'");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("has a character outside the allowed set");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["iris", "fraud-v2", "a.b_c", "X9", &"x".repeat(MAX_NAME)] {
            check(ok).expect(ok);
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "a b",
            "é",
            "a@b",
            &"x".repeat(129),
        ] {
            check(bad).expect_err(bad);
        }
    }
}
