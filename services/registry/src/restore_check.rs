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
    store::{EventKind, VersionStatus, snapshot::Snapshot},
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        manifest::FileEntry,
        store::snapshot::{AliasRow, BlobRow, EventRow, ModelRow, VersionRow},
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
        ];
        for (needle, spoil) in cases {
            let mut s = valid();
            spoil(&mut s);
            let e = check(&s, 100).expect_err(needle);
            assert!(e.to_string().contains(needle), "{needle}: {e}");
        }
    }
}
