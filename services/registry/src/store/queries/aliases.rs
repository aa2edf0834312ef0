//! Alias moves: compare-and-set, the gate of the alias's policy
//! ([`super::gate::admit`]), the history row and the event — one move,
//! inside the caller's transaction; and the rollback that is such a move.

use super::{
    gate,
    rows::{alias_of, event, model_id, version_exists},
};
use crate::{
    error::{RegistryError, Result},
    store::{
        AliasChange, AliasMoveRecord, EventKind,
        evidence::Gate,
        sql::{Tx, args},
    },
};

/// Applies one alias change after its compare-and-set; records history and
/// the event. Returns None when the alias already points there.
pub(super) fn move_alias(
    tx: &mut dyn Tx,
    model: &str,
    id: i64,
    change: &AliasChange,
    reason: &str,
    gate: Gate,
    now_ms: i64,
) -> Result<Option<AliasMoveRecord>> {
    let current = alias_of(tx, id, &change.alias)?;
    if let Some(expected) = change.expected
        && expected != current.unwrap_or(0)
    {
        let now = match current {
            Some(v) => format!("points at version {v}"),
            None => "does not exist".to_owned(),
        };
        return Err(RegistryError::FailedPrecondition(format!(
            "alias {:?} of model {model:?} {now}, not {} as expected; read it again and retry",
            change.alias,
            if expected == 0 {
                "absent".to_owned()
            } else {
                format!("version {expected}")
            }
        )));
    }
    if change.version == 0 && current.is_none() {
        return Err(RegistryError::UnknownAlias {
            model: model.to_owned(),
            alias: change.alias.clone(),
        });
    }
    if change.version != 0 && !version_exists(tx, id, change.version)? {
        return Err(RegistryError::UnknownVersion {
            model: model.to_owned(),
            version: change.version,
        });
    }
    let from = current.unwrap_or(0);
    if from == change.version {
        return Ok(None);
    }
    let admission = gate::admit(
        tx,
        model,
        id,
        &change.alias,
        from,
        change.version,
        gate,
        now_ms,
    )?;
    let revision = event(
        tx,
        EventKind::AliasMoved,
        model,
        change.version,
        &change.alias,
        from,
        now_ms,
    )?;
    tx.exec(
        "INSERT INTO alias_history VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        args![
            revision,
            id,
            &change.alias,
            from,
            change.version,
            now_ms,
            reason
        ],
    )?;
    gate::remember(tx, revision, admission)?;
    if change.version == 0 {
        tx.exec(
            "DELETE FROM aliases WHERE model_id = ?1 AND alias = ?2",
            args![id, &change.alias],
        )?;
    } else {
        tx.exec(
            "INSERT INTO aliases VALUES (?1, ?2, ?3) ON CONFLICT (model_id, alias) DO UPDATE SET version = excluded.version",
            args![id, &change.alias, change.version],
        )?;
    }
    Ok(Some(AliasMoveRecord {
        model: model.to_owned(),
        alias: change.alias.clone(),
        from_version: from,
        to_version: change.version,
        revision,
        moved_ms: now_ms,
        reason: reason.to_owned(),
        evidence_id: admission.evidence_id,
        overridden: admission.overridden,
    }))
}

pub(super) fn rollback_alias(
    tx: &mut dyn Tx,
    model: &str,
    alias: &str,
    expected: Option<i64>,
    reason: &str,
    gate: Gate,
    now_ms: i64,
) -> Result<AliasMoveRecord> {
    let id = model_id(tx, model)?;
    let Some(last) = tx.query_opt(
        "SELECT from_version, to_version FROM alias_history WHERE model_id = ?1 AND alias = ?2 ORDER BY revision DESC LIMIT 1",
        args![id, alias],
    )?
    else {
        return Err(RegistryError::UnknownAlias {
            model: model.to_owned(),
            alias: alias.to_owned(),
        });
    };
    let (from, to) = (last.int(0)?, last.int(1)?);
    if from == 0 {
        return Err(RegistryError::FailedPrecondition(format!(
            "alias {alias:?} of model {model:?} pointed at no version before its last move (to version {to}); nothing to roll back to"
        )));
    }
    if !version_exists(tx, id, from)? {
        return Err(RegistryError::FailedPrecondition(format!(
            "alias {alias:?} of model {model:?} pointed at version {from} before its last move, and that version was deleted"
        )));
    }
    let change = AliasChange {
        alias: alias.to_owned(),
        version: from,
        expected,
    };
    move_alias(tx, model, id, &change, reason, gate, now_ms)?.ok_or_else(|| {
        RegistryError::FailedPrecondition(format!(
            "alias {alias:?} of model {model:?} already points at version {from}"
        ))
    })
}
