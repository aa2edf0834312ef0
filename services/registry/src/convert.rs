//! Protocol messages ⇄ the registry's own types.

use mlmesh_proto::{
    json::{json_to_struct, struct_to_json},
    registry::v1 as pb,
};
use prost_types::{Struct, Timestamp};
use serde_json::{Map, Value};

use crate::{
    error::{RegistryError, Result},
    manifest::FileEntry,
    store::{
        AliasMoveRecord, EventKind, EventRecord, Lineage, ModelRecord, ModelSpec, Selector,
        VersionRecord, VersionStatus,
        evidence::{
            CheckRecord, EvidenceBody, EvidenceRecord, NonInferiority, PolicyRecord, Runner,
        },
    },
    uploads::Progress,
};

pub fn timestamp(ms: i64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    })
}

pub fn metadata(field: &str, s: Option<Struct>) -> Result<Map<String, Value>> {
    match s {
        None => Ok(Map::new()),
        Some(s) => struct_to_json(field, s).map_err(|e| RegistryError::invalid(e.to_string())),
    }
}

pub fn spec(
    name: String,
    description: String,
    tags: std::collections::HashMap<String, String>,
    meta: Option<Struct>,
) -> Result<ModelSpec> {
    Ok(ModelSpec {
        name,
        description,
        tags: tags.into_iter().collect(),
        metadata: metadata("metadata", meta)?,
    })
}

pub fn model(m: ModelRecord) -> pb::Model {
    pb::Model {
        name: m.spec.name,
        description: m.spec.description,
        tags: m.spec.tags.into_iter().collect(),
        metadata: Some(json_to_struct(m.spec.metadata)),
        aliases: m.aliases.into_iter().collect(),
        latest_version: m.latest_version,
        created_at: timestamp(m.created_ms),
        updated_at: timestamp(m.updated_ms),
    }
}

pub fn file(f: FileEntry) -> pb::FileEntry {
    pb::FileEntry {
        path: f.path,
        size: f.size,
        sha256: f.sha256,
    }
}

pub fn files(fs: Vec<pb::FileEntry>) -> Vec<FileEntry> {
    fs.into_iter()
        .map(|f| FileEntry {
            path: f.path,
            size: f.size,
            sha256: f.sha256,
        })
        .collect()
}

pub fn lineage(l: Option<pb::Lineage>) -> Lineage {
    let l = l.unwrap_or_default();
    Lineage {
        source_run: l.source_run,
        source_commit: l.source_commit,
        dataset_digest: l.dataset_digest,
        parent_version: l.parent_version,
        framework: l.framework,
        task: l.task,
    }
}

pub fn status(s: VersionStatus) -> pb::VersionStatus {
    match s {
        VersionStatus::Ready => pb::VersionStatus::Ready,
        VersionStatus::Deprecated => pb::VersionStatus::Deprecated,
    }
}

/// A status from the wire; `field` names it in errors. Unspecified → None.
pub fn status_from(field: &str, v: i32) -> Result<Option<VersionStatus>> {
    match pb::VersionStatus::try_from(v) {
        Ok(pb::VersionStatus::Unspecified) => Ok(None),
        Ok(pb::VersionStatus::Ready) => Ok(Some(VersionStatus::Ready)),
        Ok(pb::VersionStatus::Deprecated) => Ok(Some(VersionStatus::Deprecated)),
        Err(_) => Err(RegistryError::invalid(format!(
            "{field}: {v} is not a VersionStatus"
        ))),
    }
}

pub fn version(v: VersionRecord) -> pb::Version {
    let total_size = v.total_size();
    let l = v.lineage;
    pb::Version {
        model: v.model,
        version: v.version,
        status: status(v.status) as i32,
        files: v.files.into_iter().map(file).collect(),
        manifest_digest: v.manifest_digest,
        total_size,
        metadata: Some(json_to_struct(v.metadata)),
        lineage: Some(pb::Lineage {
            source_run: l.source_run,
            source_commit: l.source_commit,
            dataset_digest: l.dataset_digest,
            parent_version: l.parent_version,
            framework: l.framework,
            task: l.task,
        }),
        created_at: timestamp(v.created_ms),
        aliases: v.aliases,
    }
}

pub fn selector(s: Option<pb::get_version_request::Selector>) -> Result<Selector> {
    use pb::get_version_request::Selector as S;
    match s {
        Some(S::Version(v)) if v > 0 => Ok(Selector::Number(v)),
        Some(S::Alias(a)) if !a.is_empty() => Ok(Selector::Alias(a)),
        _ => Err(RegistryError::invalid(
            "selector: give a version (1 or more) or an alias",
        )),
    }
}

pub fn download_selector(s: Option<pb::download_request::Selector>) -> Result<Selector> {
    use pb::download_request::Selector as S;
    selector(s.map(|s| match s {
        S::Version(v) => pb::get_version_request::Selector::Version(v),
        S::Alias(a) => pb::get_version_request::Selector::Alias(a),
    }))
}

pub fn upload(p: Progress) -> pb::Upload {
    pb::Upload {
        upload_id: p.upload.id,
        model: p.upload.model,
        files: p
            .upload
            .files
            .into_iter()
            .zip(p.received)
            .map(|(f, received)| pb::FileProgress {
                path: f.path,
                size: f.size,
                received,
            })
            .collect(),
        expires_at: timestamp(p.upload.expires_ms),
    }
}

pub fn alias_move(m: AliasMoveRecord) -> pb::AliasMove {
    pb::AliasMove {
        model: m.model,
        alias: m.alias,
        from_version: m.from_version,
        to_version: m.to_version,
        revision: m.revision,
        moved_at: timestamp(m.moved_ms),
        reason: m.reason,
        evidence_id: m.evidence_id,
        overridden: m.overridden,
    }
}

pub fn event_kind(k: EventKind) -> pb::EventKind {
    match k {
        EventKind::ModelCreated => pb::EventKind::ModelCreated,
        EventKind::ModelUpdated => pb::EventKind::ModelUpdated,
        EventKind::VersionCreated => pb::EventKind::VersionCreated,
        EventKind::VersionStatusChanged => pb::EventKind::VersionStatusChanged,
        EventKind::VersionDeleted => pb::EventKind::VersionDeleted,
        EventKind::AliasMoved => pb::EventKind::AliasMoved,
        EventKind::EvidenceRecorded => pb::EventKind::EvidenceRecorded,
        EventKind::PolicyChanged => pb::EventKind::PolicyChanged,
    }
}

pub fn event_kind_from(i: usize, v: i32) -> Result<EventKind> {
    let bad = || {
        RegistryError::invalid(format!(
            "filter.kinds[{i}]: {v} is not an event kind to filter on"
        ))
    };
    let k = pb::EventKind::try_from(v).map_err(|_| bad())?;
    Ok(match k {
        pb::EventKind::ModelCreated => EventKind::ModelCreated,
        pb::EventKind::ModelUpdated => EventKind::ModelUpdated,
        pb::EventKind::VersionCreated => EventKind::VersionCreated,
        pb::EventKind::VersionStatusChanged => EventKind::VersionStatusChanged,
        pb::EventKind::VersionDeleted => EventKind::VersionDeleted,
        pb::EventKind::AliasMoved => EventKind::AliasMoved,
        pb::EventKind::EvidenceRecorded => EventKind::EvidenceRecorded,
        pb::EventKind::PolicyChanged => EventKind::PolicyChanged,
        pb::EventKind::Unspecified | pb::EventKind::Progress => return Err(bad()),
    })
}

pub fn event(e: EventRecord) -> pb::WatchEvent {
    pb::WatchEvent {
        revision: e.revision,
        kind: event_kind(e.kind) as i32,
        model: e.model,
        version: e.version,
        alias: e.alias,
        from_version: e.from_version,
        time: timestamp(e.time_ms),
    }
}

/// Page tokens are the last item's key, as text.
pub fn page_token_i64(field: &str, t: &str) -> Result<Option<i64>> {
    if t.is_empty() {
        return Ok(None);
    }
    t.parse()
        .map(Some)
        .map_err(|_| RegistryError::invalid(format!("{field}: not a token this registry gave")))
}

pub fn evidence(e: EvidenceRecord) -> pb::Evidence {
    let b = e.body;
    pb::Evidence {
        id: e.id,
        model: e.model,
        version: e.version,
        manifest_digest: e.manifest_digest,
        suite_digest: e.suite_digest,
        suite_source: b.suite_source,
        passed: e.passed,
        against_version: e.against_version,
        against_manifest_digest: b.against_manifest_digest,
        checks: b
            .checks
            .into_iter()
            .map(|c| pb::Check {
                name: c.name,
                passed: c.passed,
                detail: c.detail,
                figures: c.figures.into_iter().collect(),
                non_inferiority: c.non_inferiority.map(|n| pb::NonInferiority {
                    metric: n.metric,
                    against_version: n.against_version,
                    difference: n.difference,
                    lower: n.lower,
                    upper: n.upper,
                    confidence: n.confidence,
                    margin: n.margin,
                    samples: n.samples,
                    detectable: n.detectable,
                    mcnemar_p: n.mcnemar_p,
                }),
            })
            .collect(),
        runner: Some(pb::Runner {
            cpu: b.runner.cpu,
            cores: b.runner.cores,
            os: b.runner.os,
            onnxruntime: b.runner.onnxruntime,
            mlmesh: b.runner.mlmesh,
            host: b.runner.host,
        }),
        recorded_at: timestamp(e.recorded_ms),
        duration_ms: b.duration_ms,
        kind: b.kind,
    }
}

/// A client's evidence (id and time are the registry's to give); the
/// figures keep their names' order.
pub fn evidence_from(e: Option<pb::Evidence>) -> Result<EvidenceRecord> {
    let e = e.ok_or_else(|| RegistryError::invalid("evidence: required"))?;
    let r = e.runner.unwrap_or_default();
    if e.checks.len() > crate::validation::MAX_CHECKS {
        return Err(RegistryError::invalid(format!(
            "evidence.checks: {} checks, more than the limit of {}",
            e.checks.len(),
            crate::validation::MAX_CHECKS
        )));
    }
    Ok(EvidenceRecord {
        id: 0,
        model: e.model,
        version: e.version,
        manifest_digest: e.manifest_digest,
        suite_digest: e.suite_digest,
        passed: e.passed,
        against_version: e.against_version,
        recorded_ms: 0,
        body: EvidenceBody {
            suite_source: e.suite_source,
            against_manifest_digest: e.against_manifest_digest,
            checks: e
                .checks
                .into_iter()
                .map(|c| {
                    let mut figures: Vec<_> = c.figures.into_iter().collect();
                    figures.sort_by(|a, b| a.0.cmp(&b.0));
                    CheckRecord {
                        name: c.name,
                        passed: c.passed,
                        detail: c.detail,
                        figures,
                        non_inferiority: c.non_inferiority.map(|n| NonInferiority {
                            metric: n.metric,
                            against_version: n.against_version,
                            difference: n.difference,
                            lower: n.lower,
                            upper: n.upper,
                            confidence: n.confidence,
                            margin: n.margin,
                            samples: n.samples,
                            detectable: n.detectable,
                            mcnemar_p: n.mcnemar_p,
                        }),
                    }
                })
                .collect(),
            runner: Runner {
                cpu: r.cpu,
                cores: r.cores,
                os: r.os,
                onnxruntime: r.onnxruntime,
                mlmesh: r.mlmesh,
                host: r.host,
            },
            duration_ms: e.duration_ms,
            kind: if e.kind.is_empty() {
                "validation".into()
            } else {
                e.kind
            },
        },
    })
}

pub fn policy(p: PolicyRecord) -> pb::AliasPolicy {
    pb::AliasPolicy {
        model: p.model,
        alias: p.alias,
        suite_digest: p.suite_digest,
        suite_source: p.suite_source,
        margin: p.margin,
        max_age_secs: p.max_age_secs,
        updated_at: timestamp(p.updated_ms),
    }
}

pub fn policy_from(p: Option<pb::AliasPolicy>) -> Result<PolicyRecord> {
    let p = p.ok_or_else(|| RegistryError::invalid("policy: required"))?;
    Ok(PolicyRecord {
        model: p.model,
        alias: p.alias,
        suite_digest: p.suite_digest,
        suite_source: p.suite_source,
        margin: p.margin,
        max_age_secs: p.max_age_secs,
        updated_ms: 0,
    })
}
