//! A backup is untrusted input: before a restore writes anything, every
//! name, path, digest, size, status, version and revision of its metadata
//! is checked against the same rules the API applies to live writes, and
//! every reference (a version's model, an alias's version, a file's
//! content) must resolve inside the backup. A backup that fails leaves the
//! registry as it was: empty and usable.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::{
    error::{RegistryError, Result},
    manifest, names,
    registry::{MAX_TAGS, check_metadata},
    store::{EventKind, VersionStatus, evidence::EvidenceRecord, snapshot::Snapshot},
    validation,
};

/// Largest metadata document a restore reads, in bytes.
pub const MAX_METADATA_DOC_BYTES: usize = 256 << 20;

fn bad(what: String) -> RegistryError {
    RegistryError::invalid(format!("backup: {what}"))
}

/// Checks `s` whole; `max_files` is the live `registry.max_files`.
pub fn check(s: &Snapshot, max_files: usize) -> Result<()> {
    if s.revision < 0 || s.pruned_through < 0 || s.pruned_through > s.revision {
        return Err(bad(format!(
            "revision {} / pruned_through {} are not 0 ≤ pruned_through ≤ revision",
            s.revision, s.pruned_through
        )));
    }
    let mut latest: HashMap<&str, i64> = HashMap::new();
    for (i, m) in s.models.iter().enumerate() {
        names::check(&format!("backup models[{i}].name"), &m.name)?;
        if latest.insert(m.name.as_str(), m.latest_version).is_some() {
            return Err(bad(format!("model {:?} appears twice", m.name)));
        }
        if m.latest_version < 0 || m.description.len() > 64 * 1024 {
            return Err(bad(format!(
                "model {:?}: latest_version {} or a description of {} bytes",
                m.name,
                m.latest_version,
                m.description.len()
            )));
        }
        if m.tags.len() > MAX_TAGS
            || m.tags
                .iter()
                .any(|(k, v)| k.is_empty() || k.len() > 256 || v.len() > 1024)
        {
            return Err(bad(format!(
                "model {:?}: tags beyond the limits (at most {MAX_TAGS}; keys 1-256 bytes, values ≤ 1024)",
                m.name
            )));
        }
        check_metadata(&format!("backup models[{i}].metadata"), &m.metadata)?;
    }
    let blobs: BTreeMap<&str, u64> = s
        .blobs
        .iter()
        .map(|b| (b.sha256.as_str(), b.size))
        .collect();
    for (i, b) in s.blobs.iter().enumerate() {
        manifest::check_sha256(&format!("backup blobs[{i}].sha256"), &b.sha256)?;
    }
    let mut versions: HashSet<(&str, i64)> = HashSet::new();
    for (i, v) in s.versions.iter().enumerate() {
        let what = format!("versions[{i}] ({:?} v{})", v.model, v.version);
        let Some(&top) = latest.get(v.model.as_str()) else {
            return Err(bad(format!("{what}: its model is not in the backup")));
        };
        if v.version < 1 || v.version > top {
            return Err(bad(format!(
                "{what}: the version is outside 1..={top} (the model's latest_version)"
            )));
        }
        if !versions.insert((v.model.as_str(), v.version)) {
            return Err(bad(format!("{what} appears twice")));
        }
        if VersionStatus::from_i64(v.status).is_none() {
            return Err(bad(format!("{what}: status {} is not a status", v.status)));
        }
        manifest::check(&v.files, max_files).map_err(|e| bad(format!("{what}: {e}")))?;
        if manifest::digest(&v.files) != v.manifest_digest {
            return Err(bad(format!(
                "{what}: manifest_digest {:?} is not the digest of its files",
                v.manifest_digest
            )));
        }
        for f in &v.files {
            if f.size > 0 && blobs.get(f.sha256.as_str()) != Some(&f.size) {
                return Err(bad(format!(
                    "{what}: file {:?} ({} bytes, {}) has no content of that size in the backup",
                    f.path, f.size, f.sha256
                )));
            }
        }
        check_metadata(&format!("backup {what}.metadata"), &v.metadata)?;
    }
    let mut aliases = HashSet::new();
    for (i, a) in s.aliases.iter().enumerate() {
        names::check(&format!("backup aliases[{i}].alias"), &a.alias)?;
        if !versions.contains(&(a.model.as_str(), a.version)) {
            return Err(bad(format!(
                "alias {}@{} names version {}, which the backup does not hold",
                a.model, a.alias, a.version
            )));
        }
        if !aliases.insert((a.model.as_str(), a.alias.as_str())) {
            return Err(bad(format!("alias {}@{} appears twice", a.model, a.alias)));
        }
    }
    let revision = |r: i64, what: &str| {
        if r < 1 || r > s.revision {
            Err(bad(format!(
                "{what}: revision {r} is outside 1..={}",
                s.revision
            )))
        } else {
            Ok(())
        }
    };
    for h in &s.alias_history {
        revision(
            h.revision,
            &format!("alias history of {}@{}", h.model, h.alias),
        )?;
        if !latest.contains_key(h.model.as_str()) || h.reason.len() > 4096 {
            return Err(bad(format!(
                "alias history of {}@{}: unknown model or a reason over 4096 bytes",
                h.model, h.alias
            )));
        }
    }
    check_gate_tables(s, &latest)?;
    let mut last = 0;
    for e in &s.events {
        revision(e.revision, "an event")?;
        if e.revision <= last {
            return Err(bad(format!(
                "event revisions must increase; {} follows {last}",
                e.revision
            )));
        }
        last = e.revision;
        if EventKind::from_i64(e.kind).is_none() {
            return Err(bad(format!(
                "event {}: kind {} is not an event kind",
                e.revision, e.kind
            )));
        }
    }
    Ok(())
}

/// Evidence, policies and the gate's decisions: bounded like live writes,
/// and every reference resolves inside the backup.
fn check_gate_tables(s: &Snapshot, latest: &HashMap<&str, i64>) -> Result<()> {
    let mut ids = HashSet::new();
    for (i, e) in s.evidence.iter().enumerate() {
        let at = format!("backup evidence[{i}]");
        let record = EvidenceRecord {
            id: e.id,
            model: e.model.clone(),
            version: e.version,
            manifest_digest: e.manifest_digest.clone(),
            suite_digest: e.suite_digest.clone(),
            passed: e.passed,
            against_version: e.against_version,
            recorded_ms: e.recorded_ms,
            body: e.body.clone(),
        };
        validation::check_evidence(&at, &record)?;
        let top = latest.get(e.model.as_str()).copied().unwrap_or(0);
        if e.version > top || e.against_version > top {
            return Err(bad(format!(
                "{at}: model {:?} has no version {} or {} (its latest_version is {top})",
                e.model, e.version, e.against_version
            )));
        }
        if !ids.insert(e.id) {
            return Err(bad(format!("{at}: id {} appears twice", e.id)));
        }
    }
    let mut policies = HashSet::new();
    for (i, p) in s.policies.iter().enumerate() {
        let at = format!("backup policies[{i}]");
        let mut record = p.policy.clone();
        record.model = p.model.clone();
        record.alias = p.alias.clone();
        validation::check_policy(&at, &record)?;
        if !latest.contains_key(p.model.as_str()) {
            return Err(bad(format!(
                "{at}: model {:?} is not in the backup",
                p.model
            )));
        }
        if !policies.insert((p.model.as_str(), p.alias.as_str())) {
            return Err(bad(format!("{at}: {}@{} appears twice", p.model, p.alias)));
        }
    }
    let moves: HashSet<i64> = s.alias_history.iter().map(|h| h.revision).collect();
    let mut gated = HashSet::new();
    for g in &s.alias_gate {
        if !moves.contains(&g.revision) || !gated.insert(g.revision) {
            return Err(bad(format!(
                "alias_gate: revision {} is no alias move of the backup, or appears twice",
                g.revision
            )));
        }
        if g.evidence_id != 0 && !ids.contains(&g.evidence_id) {
            return Err(bad(format!(
                "alias_gate: the move of revision {} names evidence {}, which the backup does not hold",
                g.revision, g.evidence_id
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        manifest::FileEntry,
        store::{
            evidence::{CheckRecord, EvidenceBody, PolicyRecord},
            snapshot::{
                AliasRow, BlobRow, EventRow, EvidenceRow, GateRow, ModelRow, PolicyRow, VersionRow,
            },
        },
    };

    const SHA: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    fn valid() -> Snapshot {
        let files = vec![FileEntry {
            path: "model.onnx".into(),
            size: 3,
            sha256: SHA.into(),
        }];
        Snapshot {
            format: crate::store::snapshot::FORMAT,
            revision: 3,
            pruned_through: 0,
            models: vec![ModelRow {
                name: "m".into(),
                description: String::new(),
                tags: Vec::new(),
                metadata: Default::default(),
                latest_version: 1,
                created_ms: 0,
                updated_ms: 0,
            }],
            versions: vec![VersionRow {
                model: "m".into(),
                version: 1,
                status: 1,
                manifest_digest: manifest::digest(&files),
                metadata: Default::default(),
                lineage: Default::default(),
                created_ms: 0,
                files,
            }],
            aliases: vec![AliasRow {
                model: "m".into(),
                alias: "production".into(),
                version: 1,
            }],
            alias_history: Vec::new(),
            events: vec![EventRow {
                revision: 1,
                kind: 1,
                model: "m".into(),
                version: 0,
                alias: String::new(),
                from_version: 0,
                time_ms: 0,
            }],
            blobs: vec![BlobRow {
                sha256: SHA.into(),
                size: 3,
                released_ms: None,
            }],
            evidence: vec![EvidenceRow {
                id: 4,
                model: "m".into(),
                version: 1,
                manifest_digest: manifest::digest(&[FileEntry {
                    path: "model.onnx".into(),
                    size: 3,
                    sha256: SHA.into(),
                }]),
                suite_digest: SHA.into(),
                passed: true,
                against_version: 0,
                recorded_ms: 0,
                body: EvidenceBody {
                    checks: vec![CheckRecord {
                        name: "accuracy".into(),
                        passed: true,
                        figures: vec![("accuracy".into(), 0.9)],
                        ..Default::default()
                    }],
                    kind: "validation".into(),
                    ..Default::default()
                },
            }],
            policies: vec![PolicyRow {
                model: "m".into(),
                alias: "production".into(),
                policy: PolicyRecord {
                    suite_digest: SHA.into(),
                    margin: Some(0.02),
                    ..Default::default()
                },
                updated_ms: 0,
            }],
            alias_gate: Vec::new(),
        }
    }

    #[test]
    fn hostile_backups_are_refused_naming_what_is_wrong() {
        check(&valid(), 100).expect("a real backup passes");
        type Spoil = Box<dyn Fn(&mut Snapshot)>;
        let cases: Vec<(&str, Spoil)> = vec![
            ("name", Box::new(|s| s.models[0].name = "../etc".into())),
            (
                "path",
                Box::new(|s| {
                    s.versions[0].files[0].path = "../../outside".into();
                    s.versions[0].manifest_digest = manifest::digest(&s.versions[0].files);
                }),
            ),
            (
                "manifest_digest",
                Box::new(|s| s.versions[0].manifest_digest = SHA.into()),
            ),
            ("no content", Box::new(|s| s.blobs[0].size = 4)),
            (
                "not a SHA-256",
                Box::new(|s| s.blobs[0].sha256 = "zz".into()),
            ),
            ("does not hold", Box::new(|s| s.aliases[0].version = 7)),
            (
                "not in the backup",
                Box::new(|s| s.versions[0].model = "other".into()),
            ),
            ("outside 1..=", Box::new(|s| s.versions[0].version = 5)),
            ("status", Box::new(|s| s.versions[0].status = 9)),
            ("revision", Box::new(|s| s.events[0].revision = 99)),
            ("kind", Box::new(|s| s.events[0].kind = 42)),
            ("pruned_through", Box::new(|s| s.pruned_through = 10)),
            (
                "twice",
                Box::new(|s| {
                    let m = s.models[0].clone();
                    s.models.push(m);
                }),
            ),
            (
                "finite",
                Box::new(|s| s.evidence[0].body.checks[0].figures[0].1 = f64::NAN),
            ),
            (
                "latest_version is 1",
                Box::new(|s| s.evidence[0].version = 3),
            ),
            (
                "check(s) failed",
                Box::new(|s| s.evidence[0].body.checks[0].passed = false),
            ),
            (
                "margin",
                Box::new(|s| s.policies[0].policy.margin = Some(7.0)),
            ),
            (
                "no alias move",
                Box::new(|s| {
                    s.alias_gate.push(GateRow {
                        revision: 2,
                        evidence_id: 4,
                        overridden: false,
                    })
                }),
            ),
        ];
        for (needle, spoil) in cases {
            let mut s = valid();
            spoil(&mut s);
            let e = check(&s, 100).expect_err(needle);
            assert!(e.to_string().contains(needle), "{needle}: {e}");
        }
    }
}
