//! Validation evidence and alias policies: the registry's half of the
//! validation gate. A validator (`mlmesh model validate`) records what it
//! found for a version; a policy says which evidence an alias demands; the
//! store's gate checks it inside the alias move's transaction.
//!
//! Evidence comes from clients, so every record is bounded and checked
//! here before it is stored (and again when a backup is restored).

use crate::{
    error::{RegistryError, Result},
    manifest, names,
    registry::{Registry, next_page, now_ms},
    store::evidence::{EvidenceRecord, PolicyRecord},
};

/// Most checks in one evidence record, figures in one check, and bytes of
/// a name or a text field.
pub const MAX_CHECKS: usize = 512;
pub const MAX_FIGURES: usize = 64;
pub const MAX_NAME_BYTES: usize = 128;
pub const MAX_TEXT_BYTES: usize = 4096;

fn text(field: &str, s: &str, max: usize) -> Result<()> {
    if s.len() > max {
        return Err(RegistryError::invalid(format!(
            "{field}: {} bytes, more than the limit of {max}",
            s.len()
        )));
    }
    Ok(())
}

fn finite(field: &str, v: f64) -> Result<()> {
    if !v.is_finite() {
        return Err(RegistryError::invalid(format!(
            "{field}: {v} is not a finite number"
        )));
    }
    Ok(())
}

/// Checks an evidence record against the limits; `at` prefixes the fields
/// named in errors (`evidence` for a call, `backup evidence[3]` for a
/// restore).
pub fn check_evidence(at: &str, e: &EvidenceRecord) -> Result<()> {
    names::check(&format!("{at}.model"), &e.model)?;
    if e.version < 1 || e.against_version < 0 || e.against_version == e.version {
        return Err(RegistryError::invalid(format!(
            "{at}: version {} / against_version {}: a version is positive, and a comparison is with another version (0: none)",
            e.version, e.against_version
        )));
    }
    manifest::check_sha256(&format!("{at}.manifest_digest"), &e.manifest_digest)?;
    manifest::check_sha256(&format!("{at}.suite_digest"), &e.suite_digest)?;
    if e.against_version != 0 {
        manifest::check_sha256(
            &format!("{at}.against_manifest_digest"),
            &e.body.against_manifest_digest,
        )?;
    }
    let b = &e.body;
    text(
        &format!("{at}.suite_source"),
        &b.suite_source,
        MAX_TEXT_BYTES,
    )?;
    text(&format!("{at}.kind"), &b.kind, MAX_NAME_BYTES)?;
    if !matches!(b.kind.as_str(), "validation" | "shadow" | "benchmark") {
        return Err(RegistryError::invalid(format!(
            "{at}.kind: {:?} is not \"validation\", \"shadow\" or \"benchmark\"",
            b.kind
        )));
    }
    for (field, value) in [
        ("cpu", &b.runner.cpu),
        ("os", &b.runner.os),
        ("onnxruntime", &b.runner.onnxruntime),
        ("mlmesh", &b.runner.mlmesh),
        ("host", &b.runner.host),
    ] {
        text(&format!("{at}.runner.{field}"), value, MAX_NAME_BYTES * 2)?;
    }
    if b.checks.is_empty() || b.checks.len() > MAX_CHECKS {
        return Err(RegistryError::invalid(format!(
            "{at}.checks: {} checks; evidence holds 1 to {MAX_CHECKS}",
            b.checks.len()
        )));
    }
    for (i, c) in b.checks.iter().enumerate() {
        let at = format!("{at}.checks[{i}]");
        if c.name.is_empty() {
            return Err(RegistryError::invalid(format!("{at}.name: empty")));
        }
        text(&format!("{at}.name"), &c.name, MAX_NAME_BYTES)?;
        text(&format!("{at}.detail"), &c.detail, MAX_TEXT_BYTES)?;
        if c.figures.len() > MAX_FIGURES {
            return Err(RegistryError::invalid(format!(
                "{at}.figures: {} figures, more than the limit of {MAX_FIGURES}",
                c.figures.len()
            )));
        }
        for (k, v) in &c.figures {
            text(&format!("{at}.figures key"), k, MAX_NAME_BYTES)?;
            finite(&format!("{at}.figures[{k:?}]"), *v)?;
        }
        if let Some(n) = &c.non_inferiority {
            text(
                &format!("{at}.non_inferiority.metric"),
                &n.metric,
                MAX_NAME_BYTES,
            )?;
            for (f, v) in [
                ("difference", n.difference),
                ("lower", n.lower),
                ("upper", n.upper),
                ("confidence", n.confidence),
                ("margin", n.margin),
                ("detectable", n.detectable),
                ("mcnemar_p", n.mcnemar_p),
            ] {
                finite(&format!("{at}.non_inferiority.{f}"), v)?;
            }
            if n.against_version != e.against_version || n.lower > n.upper {
                return Err(RegistryError::invalid(format!(
                    "{at}.non_inferiority: compares with version {} (the evidence's against_version is {}), interval [{}, {}]",
                    n.against_version, e.against_version, n.lower, n.upper
                )));
            }
        }
    }
    let all = b.checks.iter().all(|c| c.passed);
    if e.passed != all {
        return Err(RegistryError::invalid(format!(
            "{at}.passed is {} but {} check(s) failed",
            e.passed,
            b.checks.iter().filter(|c| !c.passed).count()
        )));
    }
    Ok(())
}

/// Checks a policy against the limits (`at` as in [`check_evidence`]).
pub fn check_policy(at: &str, p: &PolicyRecord) -> Result<()> {
    names::check(&format!("{at}.model"), &p.model)?;
    names::check(&format!("{at}.alias"), &p.alias)?;
    manifest::check_sha256(&format!("{at}.suite_digest"), &p.suite_digest)?;
    text(
        &format!("{at}.suite_source"),
        &p.suite_source,
        MAX_TEXT_BYTES,
    )?;
    if let Some(m) = p.margin
        && !(m.is_finite() && (0.0..=1.0).contains(&m))
    {
        return Err(RegistryError::invalid(format!(
            "{at}.margin: {m} is not in 0..=1 (a difference of metrics in [0, 1])"
        )));
    }
    Ok(())
}

impl Registry {
    pub async fn record_evidence(&self, e: EvidenceRecord) -> Result<EvidenceRecord> {
        check_evidence("evidence", &e)?;
        let e = self.meta(move |s| s.record_evidence(&e, now_ms())).await?;
        self.changed().await;
        Ok(e)
    }

    /// A page of evidence and the token of the next.
    pub async fn list_evidence(
        &self,
        model: String,
        version: Option<i64>,
        before: Option<i64>,
        page_size: u32,
    ) -> Result<(Vec<EvidenceRecord>, Option<i64>)> {
        let limit = self.page_size(page_size);
        let list = self
            .meta(move |s| s.list_evidence(&model, version, before, limit))
            .await?;
        let next = next_page(&list, limit as usize, |e| e.id);
        Ok((list, next))
    }

    pub async fn set_policy(&self, p: PolicyRecord, remove: bool) -> Result<PolicyRecord> {
        if remove {
            names::check("policy.model", &p.model)?;
            names::check("policy.alias", &p.alias)?;
        } else {
            check_policy("policy", &p)?;
        }
        let p = self
            .meta(move |s| s.set_policy(&p, remove, now_ms()))
            .await?;
        self.changed().await;
        Ok(p)
    }

    pub async fn list_policies(&self, model: String) -> Result<Vec<PolicyRecord>> {
        names::check("model", &model)?;
        self.meta(move |s| s.list_policies(&model)).await
    }
}
