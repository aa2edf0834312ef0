//! Export and import of the SQLite store's tables as a [`Snapshot`].

use rusqlite::{Transaction, params};

use super::{
    Lineage,
    snapshot::{AliasRow, BlobRow, EventRow, FORMAT, HistoryRow, ModelRow, Snapshot, VersionRow},
    sqlite::{json_map, json_text, meta_value},
};
use crate::{
    error::{RegistryError, Result},
    manifest::FileEntry,
};

/// Every table, read inside `tx` (one consistent view).
pub(super) fn export(tx: &Transaction<'_>) -> Result<Snapshot> {
    let mut models = Vec::new();
    {
        let mut st = tx.prepare(
            "SELECT id, name, description, metadata, latest_version, created_ms, updated_ms FROM models ORDER BY name",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })?;
        for row in rows {
            let (id, name, description, metadata, latest_version, created_ms, updated_ms) = row?;
            let tags = tx
                .prepare_cached(
                    "SELECT key, value FROM model_tags WHERE model_id = ?1 ORDER BY key",
                )?
                .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<(String, String)>, _>>()?;
            models.push(ModelRow {
                name,
                description,
                tags,
                metadata: json_map(&metadata),
                latest_version,
                created_ms,
                updated_ms,
            });
        }
    }
    let mut versions = Vec::new();
    {
        let mut st = tx.prepare(
            "SELECT m.name, v.model_id, v.version, v.status, v.manifest_digest, v.metadata, v.lineage, v.created_ms
             FROM versions v JOIN models m ON m.id = v.model_id ORDER BY m.name, v.version",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, i64>(7)?,
            ))
        })?;
        for row in rows {
            let (model, id, version, status, manifest_digest, metadata, lineage, created_ms) = row?;
            let files = tx
                .prepare_cached(
                    "SELECT path, size, sha256 FROM version_files WHERE model_id = ?1 AND version = ?2 ORDER BY idx",
                )?
                .query_map(params![id, version], |r| {
                    Ok(FileEntry {
                        path: r.get(0)?,
                        size: r.get::<_, i64>(1)? as u64,
                        sha256: r.get(2)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            versions.push(VersionRow {
                model,
                version,
                status,
                manifest_digest,
                metadata: json_map(&metadata),
                lineage: serde_json::from_str::<Lineage>(&lineage).unwrap_or_default(),
                created_ms,
                files,
            });
        }
    }
    let aliases = tx
        .prepare(
            "SELECT m.name, a.alias, a.version FROM aliases a JOIN models m ON m.id = a.model_id ORDER BY m.name, a.alias",
        )?
        .query_map([], |r| {
            Ok(AliasRow {
                model: r.get(0)?,
                alias: r.get(1)?,
                version: r.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let alias_history = tx
        .prepare(
            "SELECT h.revision, m.name, h.alias, h.from_version, h.to_version, h.moved_ms, h.reason
             FROM alias_history h JOIN models m ON m.id = h.model_id ORDER BY h.revision",
        )?
        .query_map([], |r| {
            Ok(HistoryRow {
                revision: r.get(0)?,
                model: r.get(1)?,
                alias: r.get(2)?,
                from_version: r.get(3)?,
                to_version: r.get(4)?,
                moved_ms: r.get(5)?,
                reason: r.get(6)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let events = tx
        .prepare(
            "SELECT revision, kind, model, version, alias, from_version, time_ms FROM events ORDER BY revision",
        )?
        .query_map([], |r| {
            Ok(EventRow {
                revision: r.get(0)?,
                kind: r.get(1)?,
                model: r.get(2)?,
                version: r.get(3)?,
                alias: r.get(4)?,
                from_version: r.get(5)?,
                time_ms: r.get(6)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let blobs = tx
        .prepare("SELECT sha256, size, released_ms FROM blobs ORDER BY sha256")?
        .query_map([], |r| {
            Ok(BlobRow {
                sha256: r.get(0)?,
                size: r.get::<_, i64>(1)? as u64,
                released_ms: r.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
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
    })
}

/// Writes `s` into an empty store inside `tx`.
pub(super) fn import(tx: &Transaction<'_>, s: &Snapshot) -> Result<()> {
    if s.format != FORMAT {
        return Err(RegistryError::invalid(format!(
            "backup format {} is not {FORMAT}, the one this registry reads",
            s.format
        )));
    }
    let models: i64 = tx.query_row("SELECT count(*) FROM models", [], |r| r.get(0))?;
    if models > 0 {
        return Err(RegistryError::FailedPrecondition(format!(
            "the registry holds {models} model(s); restore fills an empty registry only"
        )));
    }
    let mut ids = std::collections::HashMap::new();
    for m in &s.models {
        tx.execute(
            "INSERT INTO models (name, description, metadata, latest_version, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![m.name, m.description, json_text(&m.metadata), m.latest_version, m.created_ms, m.updated_ms],
        )?;
        let id = tx.last_insert_rowid();
        ids.insert(m.name.clone(), id);
        for (k, v) in &m.tags {
            tx.execute(
                "INSERT INTO model_tags VALUES (?1, ?2, ?3)",
                params![id, k, v],
            )?;
        }
        for (k, v) in &m.metadata {
            tx.execute(
                "INSERT INTO model_meta VALUES (?1, ?2, ?3)",
                params![id, k, super::sqlite::meta_text(v)],
            )?;
        }
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
        tx.execute(
            "INSERT INTO versions VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                id,
                v.version,
                v.status,
                v.manifest_digest,
                json_text(&v.metadata),
                serde_json::to_string(&v.lineage).unwrap_or_default(),
                v.lineage.task,
                v.created_ms
            ],
        )?;
        for (i, f) in v.files.iter().enumerate() {
            tx.execute(
                "INSERT INTO version_files VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, v.version, i as i64, f.path, f.size as i64, f.sha256],
            )?;
        }
    }
    for a in &s.aliases {
        tx.execute(
            "INSERT INTO aliases VALUES (?1, ?2, ?3)",
            params![id_of(&a.model)?, a.alias, a.version],
        )?;
    }
    for h in &s.alias_history {
        tx.execute(
            "INSERT INTO alias_history VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                h.revision,
                id_of(&h.model)?,
                h.alias,
                h.from_version,
                h.to_version,
                h.moved_ms,
                h.reason
            ],
        )?;
    }
    for e in &s.events {
        tx.execute(
            "INSERT INTO events VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                e.revision,
                e.kind,
                e.model,
                e.version,
                e.alias,
                e.from_version,
                e.time_ms
            ],
        )?;
    }
    for b in &s.blobs {
        tx.execute(
            "INSERT INTO blobs VALUES (?1, ?2, ?3)",
            params![b.sha256, b.size as i64, b.released_ms],
        )?;
    }
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'revision'",
        [s.revision],
    )?;
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'pruned_through'",
        [s.pruned_through],
    )?;
    Ok(())
}
