//! Registry records as the gateway's JSON: models, versions (manifest,
//! lineage, metadata), alias moves, evidence with its checks, policies.

use mlmesh_proto::registry::v1 as reg;
use prost_types::Timestamp;
use serde_json::{Map, Value as Json, json};

pub(super) fn ms(t: Option<&Timestamp>) -> Option<i64> {
    t.map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

pub(super) fn structure(s: Option<reg::Version>) -> Json {
    s.map_or(Json::Null, |v| version_json(&v))
}

pub(super) fn meta(s: Option<&prost_types::Struct>) -> Json {
    s.and_then(|s| mlmesh_proto::json::struct_to_json("metadata", s.clone()).ok())
        .map_or(Json::Object(Map::new()), Json::Object)
}

pub(super) fn model_json(m: &reg::Model) -> Json {
    json!({
        "name": m.name,
        "description": m.description,
        "tags": m.tags,
        "metadata": meta(m.metadata.as_ref()),
        "aliases": m.aliases,
        "latest_version": m.latest_version,
        "created_at_ms": ms(m.created_at.as_ref()),
        "updated_at_ms": ms(m.updated_at.as_ref()),
    })
}

pub(super) fn version_json(v: &reg::Version) -> Json {
    let lineage = v.lineage.as_ref().map(|l| {
        json!({
            "source_run": l.source_run, "source_commit": l.source_commit,
            "dataset_digest": l.dataset_digest, "parent_version": l.parent_version,
            "framework": l.framework, "task": l.task,
        })
    });
    json!({
        "model": v.model,
        "version": v.version,
        "status": match reg::VersionStatus::try_from(v.status) {
            Ok(reg::VersionStatus::Ready) => "ready",
            Ok(reg::VersionStatus::Deprecated) => "deprecated",
            _ => "unknown",
        },
        "files": v.files.iter().map(|f| json!({"path": f.path, "size": f.size, "sha256": f.sha256})).collect::<Vec<_>>(),
        "manifest_digest": v.manifest_digest,
        "total_size": v.total_size,
        "metadata": meta(v.metadata.as_ref()),
        "lineage": lineage,
        "created_at_ms": ms(v.created_at.as_ref()),
        "aliases": v.aliases,
    })
}

pub(super) fn move_json(m: &reg::AliasMove) -> Json {
    json!({
        "alias": m.alias,
        "from_version": m.from_version,
        "to_version": m.to_version,
        "revision": m.revision,
        "moved_at_ms": ms(m.moved_at.as_ref()),
        "reason": m.reason,
        "evidence_id": m.evidence_id,
        "overridden": m.overridden,
    })
}

pub(super) fn finite(v: f64) -> Json {
    if v.is_finite() { json!(v) } else { Json::Null }
}

pub(super) fn evidence_json(e: &reg::Evidence) -> Json {
    let checks: Vec<Json> = e
        .checks
        .iter()
        .map(|c| {
            let mut figures: Vec<(&String, &f64)> = c.figures.iter().collect();
            figures.sort_by(|a, b| a.0.cmp(b.0));
            let ni = c.non_inferiority.as_ref().map(|n| {
                json!({
                    "metric": n.metric, "against_version": n.against_version,
                    "difference": finite(n.difference), "lower": finite(n.lower),
                    "upper": finite(n.upper), "confidence": finite(n.confidence),
                    "margin": finite(n.margin), "samples": n.samples,
                })
            });
            json!({
                "name": c.name,
                "passed": c.passed,
                "detail": c.detail,
                "figures": figures.into_iter().map(|(k, v)| (k.clone(), finite(*v))).collect::<Map<_, _>>(),
                "non_inferiority": ni,
            })
        })
        .collect();
    json!({
        "id": e.id,
        "version": e.version,
        "kind": if e.kind.is_empty() { "validation" } else { e.kind.as_str() },
        "passed": e.passed,
        "suite_digest": e.suite_digest,
        "suite_source": e.suite_source,
        "against_version": e.against_version,
        "recorded_at_ms": ms(e.recorded_at.as_ref()),
        "duration_ms": e.duration_ms,
        "runner": e.runner.as_ref().map(|r| json!({"cpu": r.cpu, "cores": r.cores, "os": r.os, "onnxruntime": r.onnxruntime, "mlmesh": r.mlmesh})),
        "checks": checks,
    })
}

pub(super) fn policy_json(p: &reg::AliasPolicy) -> Json {
    json!({
        "alias": p.alias,
        "suite_digest": p.suite_digest,
        "suite_source": p.suite_source,
        "margin": p.margin,
        "max_age_secs": p.max_age_secs,
    })
}
