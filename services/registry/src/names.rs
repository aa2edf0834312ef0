//! What a model or alias name may be: the rule is
//! `mlmesh_registry_client::names` (clients check the same one); here it
//! becomes the registry's INVALID_ARGUMENT naming the field.

use mlmesh_registry_client::names::{self as rule, RULE};

use crate::error::{RegistryError, Result};

pub use rule::MAX_NAME;

/// 1–128 characters of `[A-Za-z0-9._-]`, not starting with `.` or `-`
/// (safe as a folder name and in a `registry://model@alias` URL).
pub fn check(field: &str, name: &str) -> Result<()> {
    rule::check(name)
        .map_err(|why| RegistryError::invalid(format!("{field} {name:?} {why}: {RULE}")))
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
