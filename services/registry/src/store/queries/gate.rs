//! Evidence, alias policies and the gate that joins them: before an alias
//! with a policy moves, [`admit`] looks for passing evidence inside the
//! move's own transaction, so no reader ever sees the alias on a version
//! its policy did not accept.

use std::collections::HashMap;

use super::rows::{event, load_version, model_id};
use crate::{
    error::{RegistryError, Result},
    store::{
        EventKind,
        evidence::{EvidenceBody, EvidenceRecord, Gate, PolicyRecord},
        snapshot::{EvidenceRow, GateRow, PolicyRow, Snapshot},
        sql::{Row, Tx, args},
    },
};

/// Most evidence records one version keeps (a runaway job must not fill
/// the store; each run adds one).
pub const MAX_EVIDENCE_PER_VERSION: i64 = 1000;

const EVIDENCE_COLUMNS: &str = "e.id, m.name, e.version, e.manifest_digest, e.suite_digest, e.passed, e.against_version, e.recorded_ms, e.body";

fn evidence_row(r: &Row) -> Result<EvidenceRecord> {
    Ok(EvidenceRecord {
        id: r.int(0)?,
        model: r.text(1)?,
        version: r.int(2)?,
        manifest_digest: r.text(3)?,
        suite_digest: r.text(4)?,
        passed: r.int(5)? != 0,
        against_version: r.int(6)?,
        recorded_ms: r.int(7)?,
        body: serde_json::from_str::<EvidenceBody>(&r.text(8)?).unwrap_or_default(),
    })
}

/// Stores `e` (its digest must be its version's, and its champion's the
/// champion's), with its event.
pub(super) fn record_evidence(
    tx: &mut dyn Tx,
    e: &EvidenceRecord,
    now_ms: i64,
) -> Result<EvidenceRecord> {
    let id = model_id(tx, &e.model)?;
    let v = load_version(tx, &e.model, id, e.version)?;
    if v.manifest_digest != e.manifest_digest {
        return Err(RegistryError::FailedPrecondition(format!(
            "evidence.manifest_digest {} is not the manifest digest of version {} of model {:?} ({}): the evidence describes other files",
            e.manifest_digest, e.version, e.model, v.manifest_digest
        )));
    }
    if e.against_version != 0 {
        let c = load_version(tx, &e.model, id, e.against_version)?;
        if c.manifest_digest != e.body.against_manifest_digest {
            return Err(RegistryError::FailedPrecondition(format!(
                "evidence.against_manifest_digest is not the manifest digest of version {} of model {:?} ({})",
                e.against_version, e.model, c.manifest_digest
            )));
        }
    }
    let held = tx
        .query_one(
            "SELECT count(*) FROM evidence WHERE model_id = ?1 AND version = ?2",
            args![id, e.version],
        )?
        .int(0)?;
    if held >= MAX_EVIDENCE_PER_VERSION {
        return Err(RegistryError::Exhausted(format!(
            "version {} of model {:?} holds {held} evidence records, the most one version keeps",
            e.version, e.model
        )));
    }
    let body = serde_json::to_string(&e.body)
        .map_err(|err| RegistryError::invalid(format!("evidence: {err}")))?;
    let new_id = tx
        .query_one(
            "INSERT INTO evidence (model_id, version, manifest_digest, suite_digest, passed, against_version, recorded_ms, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
            args![
                id,
                e.version,
                &e.manifest_digest,
                &e.suite_digest,
                i64::from(e.passed),
                e.against_version,
                now_ms,
                body
            ],
        )?
        .int(0)?;
    event(
        tx,
        EventKind::EvidenceRecorded,
        &e.model,
        e.version,
        "",
        0,
        now_ms,
    )?;
    Ok(EvidenceRecord {
        id: new_id,
        recorded_ms: now_ms,
        ..e.clone()
    })
}

/// A model's evidence (one version's when given), newest first, ids below
/// `before`.
pub(super) fn list_evidence(
    tx: &mut dyn Tx,
    model: &str,
    version: Option<i64>,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<EvidenceRecord>> {
    let id = model_id(tx, model)?;
    tx.query(
        &format!(
            "SELECT {EVIDENCE_COLUMNS} FROM evidence e JOIN models m ON m.id = e.model_id
             WHERE e.model_id = ?1 AND (CAST(?2 AS BIGINT) = 0 OR e.version = ?2) AND e.id < ?3
             ORDER BY e.id DESC LIMIT ?4"
        ),
        args![
            id,
            version.unwrap_or(0),
            before.unwrap_or(i64::MAX),
            i64::from(limit)
        ],
    )?
    .iter()
    .map(evidence_row)
    .collect()
}

fn policy_row(model: &str, r: &Row) -> Result<PolicyRecord> {
    let mut p: PolicyRecord = serde_json::from_str(&r.text(1)?).unwrap_or_default();
    p.model = model.to_owned();
    p.alias = r.text(0)?;
    p.updated_ms = r.int(2)?;
    Ok(p)
}

pub(super) fn policy_of(
    tx: &mut dyn Tx,
    model: &str,
    id: i64,
    alias: &str,
) -> Result<Option<PolicyRecord>> {
    tx.query_opt(
        "SELECT alias, policy, updated_ms FROM alias_policies WHERE model_id = ?1 AND alias = ?2",
        args![id, alias],
    )?
    .map(|r| policy_row(model, &r))
    .transpose()
}

pub(super) fn list_policies(tx: &mut dyn Tx, model: &str) -> Result<Vec<PolicyRecord>> {
    let id = model_id(tx, model)?;
    tx.query(
        "SELECT alias, policy, updated_ms FROM alias_policies WHERE model_id = ?1 ORDER BY alias",
        args![id],
    )?
    .iter()
    .map(|r| policy_row(model, r))
    .collect()
}

/// Sets `p` (or removes the alias's policy), with its event.
pub(super) fn set_policy(
    tx: &mut dyn Tx,
    p: &PolicyRecord,
    remove: bool,
    now_ms: i64,
) -> Result<PolicyRecord> {
    let id = model_id(tx, &p.model)?;
    if remove {
        let n = tx.exec(
            "DELETE FROM alias_policies WHERE model_id = ?1 AND alias = ?2",
            args![id, &p.alias],
        )?;
        if n == 0 {
            return Err(RegistryError::UnknownPolicy {
                model: p.model.clone(),
                alias: p.alias.clone(),
            });
        }
    } else {
        let text = serde_json::to_string(p)
            .map_err(|err| RegistryError::invalid(format!("policy: {err}")))?;
        tx.exec(
            "INSERT INTO alias_policies VALUES (?1, ?2, ?3, ?4) ON CONFLICT (model_id, alias) DO UPDATE SET policy = excluded.policy, updated_ms = excluded.updated_ms",
            args![id, &p.alias, text, now_ms],
        )?;
    }
    event(
        tx,
        EventKind::PolicyChanged,
        &p.model,
        0,
        &p.alias,
        0,
        now_ms,
    )?;
    Ok(PolicyRecord {
        updated_ms: now_ms,
        ..p.clone()
    })
}

/// What the gate decided for one move: the evidence it accepted (0: none
/// needed), and whether the policy was passed over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Admission {
    pub evidence_id: i64,
    pub overridden: bool,
}

/// Whether alias `alias` of model `model` (store id `id`), now at
/// `current` (0: absent), may move to version `to`.
///
/// With a policy, `to` needs evidence that ran the policy's suite on its
/// manifest and passed, no older than `max_age_secs`, and (with a margin)
/// compared it with `current` and found every lower bound above -margin.
/// A move back to a version the alias named before needs only passing
/// evidence of the suite (a rollback to a known-good version must never be
/// blocked by evidence having aged).
#[allow(clippy::too_many_arguments)]
pub(super) fn admit(
    tx: &mut dyn Tx,
    model: &str,
    id: i64,
    alias: &str,
    current: i64,
    to: i64,
    gate: Gate,
    now_ms: i64,
) -> Result<Admission> {
    if to == 0 {
        return Ok(Admission::default());
    }
    let Some(policy) = policy_of(tx, model, id, alias)? else {
        return Ok(Admission::default());
    };
    if gate == Gate::Override {
        return Ok(Admission {
            evidence_id: 0,
            overridden: true,
        });
    }
    let digest = load_version(tx, model, id, to)?.manifest_digest;
    let candidates = tx
        .query(
            &format!(
                "SELECT {EVIDENCE_COLUMNS} FROM evidence e JOIN models m ON m.id = e.model_id
                 WHERE e.model_id = ?1 AND e.version = ?2 AND e.suite_digest = ?3 AND e.manifest_digest = ?4
                 ORDER BY e.id DESC LIMIT 50"
            ),
            args![id, to, &policy.suite_digest, &digest],
        )?
        .iter()
        .map(evidence_row)
        .collect::<Result<Vec<_>>>()?;
    let named_before = tx
        .query_opt(
            "SELECT revision FROM alias_history WHERE model_id = ?1 AND alias = ?2 AND to_version = ?3 LIMIT 1",
            args![id, alias, to],
        )?
        .is_some();
    if named_before && let Some(e) = candidates.iter().find(|e| e.passed) {
        return Ok(Admission {
            evidence_id: e.id,
            overridden: false,
        });
    }
    let oldest_ms = match policy.max_age_secs {
        0 => i64::MIN,
        secs => now_ms.saturating_sub(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)),
    };
    let mut why = Vec::new();
    for e in &candidates {
        if !e.passed {
            why.push(match e.first_failure() {
                Some(failure) => format!("evidence {}: {failure}", e.id),
                None => format!("evidence {} did not pass", e.id),
            });
            continue;
        }
        if e.recorded_ms < oldest_ms {
            why.push(format!(
                "evidence {} is {} s old; the policy accepts at most {} s",
                e.id,
                (now_ms - e.recorded_ms) / 1000,
                policy.max_age_secs
            ));
            continue;
        }
        if let Some(margin) = policy.margin
            && current != 0
        {
            if e.against_version != current {
                why.push(format!(
                    "evidence {} compared with version {}, not version {current} the alias points at now",
                    e.id, e.against_version
                ));
                continue;
            }
            let comparisons: Vec<_> = e
                .body
                .checks
                .iter()
                .filter_map(|c| c.non_inferiority.as_ref().map(|n| (c, n)))
                .collect();
            if comparisons.is_empty() {
                why.push(format!(
                    "evidence {} holds no non-inferiority comparison with version {current}",
                    e.id
                ));
                continue;
            }
            if let Some((c, n)) = comparisons.iter().find(|(_, n)| n.lower <= -margin) {
                why.push(format!(
                    "evidence {}: check {:?} is not non-inferior by the policy's margin {margin}: {} difference {:+.4}, {:.0}% interval [{:+.4}, {:+.4}] over {} examples",
                    e.id,
                    c.name,
                    n.metric,
                    n.difference,
                    n.confidence * 100.0,
                    n.lower,
                    n.upper,
                    n.samples
                ));
                continue;
            }
        }
        return Ok(Admission {
            evidence_id: e.id,
            overridden: false,
        });
    }
    let short = |d: &str| d.chars().take(12).collect::<String>();
    let mut msg = format!(
        "alias {alias:?} of model {model:?} requires passing evidence of suite {}",
        short(&policy.suite_digest)
    );
    if !policy.suite_source.is_empty() {
        msg.push_str(&format!(" ({})", policy.suite_source));
    }
    msg.push_str(&format!(" for version {to} (manifest {})", short(&digest)));
    if why.is_empty() {
        msg.push_str(": none is recorded; run `mlmesh model validate` or `mlmesh model promote`");
    } else {
        why.truncate(3);
        msg.push_str(": ");
        msg.push_str(&why.join("; "));
    }
    Err(RegistryError::FailedPrecondition(msg))
}

/// Keeps what the gate decided beside the move's history row.
pub(super) fn remember(tx: &mut dyn Tx, revision: i64, a: Admission) -> Result<()> {
    if a == Admission::default() {
        return Ok(());
    }
    tx.exec(
        "INSERT INTO alias_gate VALUES (?1, ?2, ?3)",
        args![revision, a.evidence_id, i64::from(a.overridden)],
    )?;
    Ok(())
}

/// The evidence, policy and gate tables for a backup.
pub(super) fn export(tx: &mut dyn Tx) -> Result<(Vec<EvidenceRow>, Vec<PolicyRow>, Vec<GateRow>)> {
    let evidence = tx
        .query(
            &format!(
                "SELECT {EVIDENCE_COLUMNS} FROM evidence e JOIN models m ON m.id = e.model_id ORDER BY e.id"
            ),
            &[],
        )?
        .iter()
        .map(|r| {
            let e = evidence_row(r)?;
            Ok(EvidenceRow {
                id: e.id,
                model: e.model,
                version: e.version,
                manifest_digest: e.manifest_digest,
                suite_digest: e.suite_digest,
                passed: e.passed,
                against_version: e.against_version,
                recorded_ms: e.recorded_ms,
                body: e.body,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let policies = tx
        .query(
            "SELECT p.alias, p.policy, p.updated_ms, m.name FROM alias_policies p JOIN models m ON m.id = p.model_id ORDER BY m.name, p.alias",
            &[],
        )?
        .iter()
        .map(|r| {
            let model = r.text(3)?;
            let policy = policy_row(&model, r)?;
            Ok(PolicyRow {
                model,
                alias: policy.alias.clone(),
                updated_ms: policy.updated_ms,
                policy,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let gate = tx
        .query(
            "SELECT revision, evidence_id, overridden FROM alias_gate ORDER BY revision",
            &[],
        )?
        .iter()
        .map(|r| {
            Ok(GateRow {
                revision: r.int(0)?,
                evidence_id: r.int(1)?,
                overridden: r.int(2)? != 0,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((evidence, policies, gate))
}

/// Writes a backup's evidence (under new ids, which the gate rows follow),
/// policies and gate rows; `id_of` maps a model name to its new store id.
pub(super) fn import(
    tx: &mut dyn Tx,
    s: &Snapshot,
    id_of: &dyn Fn(&str) -> Result<i64>,
) -> Result<()> {
    let mut ids = HashMap::new();
    for e in &s.evidence {
        let body = serde_json::to_string(&e.body)
            .map_err(|err| RegistryError::invalid(format!("backup evidence {}: {err}", e.id)))?;
        let new_id = tx
            .query_one(
                "INSERT INTO evidence (model_id, version, manifest_digest, suite_digest, passed, against_version, recorded_ms, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
                args![
                    id_of(&e.model)?,
                    e.version,
                    &e.manifest_digest,
                    &e.suite_digest,
                    i64::from(e.passed),
                    e.against_version,
                    e.recorded_ms,
                    body
                ],
            )?
            .int(0)?;
        ids.insert(e.id, new_id);
    }
    for p in &s.policies {
        let text = serde_json::to_string(&p.policy)
            .map_err(|err| RegistryError::invalid(format!("backup policy: {err}")))?;
        tx.exec(
            "INSERT INTO alias_policies VALUES (?1, ?2, ?3, ?4)",
            args![id_of(&p.model)?, &p.alias, text, p.updated_ms],
        )?;
    }
    for g in &s.alias_gate {
        let evidence_id = match g.evidence_id {
            0 => 0,
            old => *ids.get(&old).ok_or_else(|| {
                RegistryError::invalid(format!(
                    "backup: the alias move of revision {} names evidence {old}, which the backup does not hold",
                    g.revision
                ))
            })?,
        };
        tx.exec(
            "INSERT INTO alias_gate VALUES (?1, ?2, ?3)",
            args![g.revision, evidence_id, i64::from(g.overridden)],
        )?;
    }
    Ok(())
}
