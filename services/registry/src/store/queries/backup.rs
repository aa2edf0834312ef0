//! Export and import of the metadata tables as a [`Snapshot`], over any
//! SQL backend.

use std::collections::HashMap;

use super::rows::{files_of, json_map, json_text, meta_value, write_spec};
use crate::{
    error::{RegistryError, Result},
    store::{
        ModelSpec,
        snapshot::{
            AliasRow, BlobRow, EventRow, FORMAT, HistoryRow, ModelRow, Snapshot, VersionRow,
        },
        sql::{Tx, args},
    },
};

/// Every table, read inside one transaction.
pub(super) fn export(tx: &mut dyn Tx) -> Result<Snapshot> {
    let mut models = Vec::new();
    for r in tx.query(
        "SELECT id, name, description, metadata, latest_version, created_ms, updated_ms FROM models ORDER BY name",
        &[],
    )? {
        let tags = tx
            .query(
                "SELECT key, value FROM model_tags WHERE model_id = ?1 ORDER BY key",
                args![r.int(0)?],
            )?
            .into_iter()
            .map(|t| Ok((t.text(0)?, t.text(1)?)))
            .collect::<Result<Vec<_>>>()?;
        models.push(ModelRow {
            name: r.text(1)?,
            description: r.text(2)?,
            tags,
            metadata: json_map(&r.text(3)?),
            latest_version: r.int(4)?,
            created_ms: r.int(5)?,
            updated_ms: r.int(6)?,
        });
    }
    let mut versions = Vec::new();
    for r in tx.query(
        "SELECT m.name, v.model_id, v.version, v.status, v.manifest_digest, v.metadata, v.lineage, v.created_ms
         FROM versions v JOIN models m ON m.id = v.model_id ORDER BY m.name, v.version",
        &[],
    )? {
        let files = files_of(
            tx,
            "SELECT path, size, sha256 FROM version_files WHERE model_id = ?1 AND version = ?2 ORDER BY idx",
            args![r.int(1)?, r.int(2)?],
        )?;
        versions.push(VersionRow {
            model: r.text(0)?,
            version: r.int(2)?,
            status: r.int(3)?,
            manifest_digest: r.text(4)?,
            metadata: json_map(&r.text(5)?),
            lineage: serde_json::from_str(&r.text(6)?).unwrap_or_default(),
            created_ms: r.int(7)?,
            files,
        });
    }
    let aliases = tx
        .query(
            "SELECT m.name, a.alias, a.version FROM aliases a JOIN models m ON m.id = a.model_id ORDER BY m.name, a.alias",
            &[],
        )?
        .into_iter()
        .map(|r| {
            Ok(AliasRow {
                model: r.text(0)?,
                alias: r.text(1)?,
                version: r.int(2)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let alias_history = tx
        .query(
            "SELECT h.revision, m.name, h.alias, h.from_version, h.to_version, h.moved_ms, h.reason
             FROM alias_history h JOIN models m ON m.id = h.model_id ORDER BY h.revision",
            &[],
        )?
        .into_iter()
        .map(|r| {
            Ok(HistoryRow {
                revision: r.int(0)?,
                model: r.text(1)?,
                alias: r.text(2)?,
                from_version: r.int(3)?,
                to_version: r.int(4)?,
                moved_ms: r.int(5)?,
                reason: r.text(6)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let events = tx
        .query(
            "SELECT revision, kind, model, version, alias, from_version, time_ms FROM events ORDER BY revision",
            &[],
        )?
        .into_iter()
        .map(|r| {
            Ok(EventRow {
                revision: r.int(0)?,
                kind: r.int(1)?,
                model: r.text(2)?,
                version: r.int(3)?,
                alias: r.text(4)?,
                from_version: r.int(5)?,
                time_ms: r.int(6)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let blobs = tx
        .query(
            "SELECT sha256, size, released_ms FROM blobs ORDER BY sha256",
            &[],
        )?
        .into_iter()
        .map(|r| {
            Ok(BlobRow {
                sha256: r.text(0)?,
                size: r.int(1)? as u64,
                released_ms: r.opt_int(2)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let (evidence, policies, alias_gate) = super::gate::export(tx)?;
    Ok(Snapshot {
        format: FORMAT,
        revision: meta_value(tx, "revision")?,
        pruned_through: meta_value(tx, "pruned_through")?,
        models,
        versions,
        aliases,
        alias_history,
        events,
        blobs,
        evidence,
        policies,
        alias_gate,
    })
}

/// Writes `s` into an empty store.
pub(super) fn import(tx: &mut dyn Tx, s: &Snapshot) -> Result<()> {
    if s.format != FORMAT {
        return Err(RegistryError::invalid(format!(
            "backup format {} is not {FORMAT}, the one this registry reads",
            s.format
        )));
    }
    let models = tx.query_one("SELECT count(*) FROM models", &[])?.int(0)?;
    if models > 0 {
        return Err(RegistryError::FailedPrecondition(format!(
            "the registry holds {models} model(s); restore fills an empty registry only"
        )));
    }
    let mut ids = HashMap::new();
    for m in &s.models {
        let id = tx
            .query_one(
                "INSERT INTO models (name, description, metadata, latest_version, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
                args![&m.name, &m.description, json_text(&m.metadata), m.latest_version, m.created_ms, m.updated_ms],
            )?
            .int(0)?;
        ids.insert(m.name.clone(), id);
        let spec = ModelSpec {
            name: m.name.clone(),
            description: m.description.clone(),
            tags: m.tags.iter().cloned().collect(),
            metadata: m.metadata.clone(),
        };
        write_spec(tx, id, &spec)?;
    }
    let id_of = |model: &str| {
        ids.get(model).copied().ok_or_else(|| {
            RegistryError::invalid(format!(
                "the backup refers to model {model:?}, which it does not hold"
            ))
        })
    };
    for v in &s.versions {
        let id = id_of(&v.model)?;
        tx.exec(
            "INSERT INTO versions VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            args![
                id,
                v.version,
                v.status,
                &v.manifest_digest,
                json_text(&v.metadata),
                serde_json::to_string(&v.lineage).unwrap_or_default(),
                &v.lineage.task,
                v.created_ms
            ],
        )?;
        for (i, f) in v.files.iter().enumerate() {
            tx.exec(
                "INSERT INTO version_files VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                args![id, v.version, i as i64, &f.path, f.size, &f.sha256],
            )?;
        }
    }
    for a in &s.aliases {
        tx.exec(
            "INSERT INTO aliases VALUES (?1, ?2, ?3)",
            args![id_of(&a.model)?, &a.alias, a.version],
        )?;
    }
    for h in &s.alias_history {
        tx.exec(
            "INSERT INTO alias_history VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            args![
                h.revision,
                id_of(&h.model)?,
                &h.alias,
                h.from_version,
                h.to_version,
                h.moved_ms,
                &h.reason
            ],
        )?;
    }
    for e in &s.events {
        tx.exec(
            "INSERT INTO events VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            args![
                e.revision,
                e.kind,
                &e.model,
                e.version,
                &e.alias,
                e.from_version,
                e.time_ms
            ],
        )?;
    }
    super::gate::import(tx, s, &id_of)?;
    for b in &s.blobs {
        tx.exec(
            "INSERT INTO blobs VALUES (?1, ?2, ?3)",
            args![&b.sha256, b.size, b.released_ms],
        )?;
    }
    tx.exec(
        "UPDATE meta SET value = ?1 WHERE key = 'revision'",
        args![s.revision],
    )?;
    tx.exec(
        "UPDATE meta SET value = ?1 WHERE key = 'pruned_through'",
        args![s.pruned_through],
    )?;
    Ok(())
}
