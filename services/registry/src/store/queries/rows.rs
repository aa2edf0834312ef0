//! The statements behind the metadata store: row loaders, the event
//! writer, and the multi-statement operations, each taking the open
//! transaction (alias moves: `aliases.rs`).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::{
    error::{RegistryError, Result},
    manifest::{self, FileEntry},
    store::{
        EventKind, ModelFilter, ModelRecord, ModelSpec, UploadRecord, VersionRecord, VersionStatus,
        sql::{Tx, Val, args},
    },
};

pub(in crate::store) fn json_text(m: &Map<String, Value>) -> String {
    Value::Object(m.clone()).to_string()
}

pub(in crate::store) fn json_map(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// How a metadata value is compared in ListModels.
pub fn meta_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(super) fn model_id(tx: &mut dyn Tx, name: &str) -> Result<i64> {
    tx.query_opt("SELECT id FROM models WHERE name = ?1", args![name])?
        .ok_or_else(|| RegistryError::UnknownModel(name.to_owned()))?
        .int(0)
}

pub(in crate::store) fn meta_value(tx: &mut dyn Tx, key: &str) -> Result<i64> {
    tx.query_one("SELECT value FROM meta WHERE key = ?1", args![key])?
        .int(0)
}

/// Appends an event; returns its revision.
pub(super) fn event(
    tx: &mut dyn Tx,
    kind: EventKind,
    model: &str,
    version: i64,
    alias: &str,
    from_version: i64,
    now_ms: i64,
) -> Result<i64> {
    let rev = tx
        .query_one(
            "UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value",
            &[],
        )?
        .int(0)?;
    tx.exec(
        "INSERT INTO events VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        args![
            rev,
            kind as i64,
            model,
            version,
            alias,
            from_version,
            now_ms
        ],
    )?;
    Ok(rev)
}

pub(super) fn pairs(tx: &mut dyn Tx, sql: &str, id: i64) -> Result<Vec<(String, Val)>> {
    tx.query(sql, args![id])?
        .into_iter()
        .map(|r| Ok((r.text(0)?, r.0.get(1).cloned().unwrap_or(Val::Null))))
        .collect()
}

pub(super) fn load_model(tx: &mut dyn Tx, id: i64) -> Result<ModelRecord> {
    let r = tx.query_one(
        "SELECT name, description, metadata, latest_version, created_ms, updated_ms FROM models WHERE id = ?1",
        args![id],
    )?;
    let mut tags = BTreeMap::new();
    for (k, v) in pairs(
        tx,
        "SELECT key, value FROM model_tags WHERE model_id = ?1",
        id,
    )? {
        if let Val::Text(v) = v {
            tags.insert(k, v);
        }
    }
    let mut aliases = BTreeMap::new();
    for (k, v) in pairs(
        tx,
        "SELECT alias, version FROM aliases WHERE model_id = ?1",
        id,
    )? {
        if let Val::Int(v) = v {
            aliases.insert(k, v);
        }
    }
    Ok(ModelRecord {
        spec: ModelSpec {
            name: r.text(0)?,
            description: r.text(1)?,
            tags,
            metadata: json_map(&r.text(2)?),
        },
        aliases,
        latest_version: r.int(3)?,
        created_ms: r.int(4)?,
        updated_ms: r.int(5)?,
    })
}

pub(in crate::store) fn write_spec(tx: &mut dyn Tx, id: i64, spec: &ModelSpec) -> Result<()> {
    tx.exec("DELETE FROM model_tags WHERE model_id = ?1", args![id])?;
    tx.exec("DELETE FROM model_meta WHERE model_id = ?1", args![id])?;
    for (k, v) in &spec.tags {
        tx.exec(
            "INSERT INTO model_tags VALUES (?1, ?2, ?3)",
            args![id, k, v],
        )?;
    }
    for (k, v) in &spec.metadata {
        tx.exec(
            "INSERT INTO model_meta VALUES (?1, ?2, ?3)",
            args![id, k, meta_text(v)],
        )?;
    }
    Ok(())
}

pub(in crate::store) fn files_of(tx: &mut dyn Tx, sql: &str, a: &[Val]) -> Result<Vec<FileEntry>> {
    tx.query(sql, a)?
        .into_iter()
        .map(|r| {
            Ok(FileEntry {
                path: r.text(0)?,
                size: r.int(1)? as u64,
                sha256: r.text(2)?,
            })
        })
        .collect()
}

pub(super) fn load_version(
    tx: &mut dyn Tx,
    model: &str,
    id: i64,
    version: i64,
) -> Result<VersionRecord> {
    let Some(r) = tx.query_opt(
        "SELECT status, manifest_digest, metadata, lineage, created_ms FROM versions WHERE model_id = ?1 AND version = ?2",
        args![id, version],
    )?
    else {
        return Err(RegistryError::UnknownVersion {
            model: model.to_owned(),
            version,
        });
    };
    let files = files_of(
        tx,
        "SELECT path, size, sha256 FROM version_files WHERE model_id = ?1 AND version = ?2 ORDER BY idx",
        args![id, version],
    )?;
    let aliases = tx
        .query(
            "SELECT alias FROM aliases WHERE model_id = ?1 AND version = ?2 ORDER BY alias",
            args![id, version],
        )?
        .into_iter()
        .map(|r| r.text(0))
        .collect::<Result<Vec<_>>>()?;
    Ok(VersionRecord {
        model: model.to_owned(),
        version,
        status: VersionStatus::from_i64(r.int(0)?).unwrap_or(VersionStatus::Ready),
        files,
        manifest_digest: r.text(1)?,
        metadata: json_map(&r.text(2)?),
        lineage: serde_json::from_str(&r.text(3)?).unwrap_or_default(),
        created_ms: r.int(4)?,
        aliases,
    })
}

pub(super) fn alias_of(tx: &mut dyn Tx, id: i64, alias: &str) -> Result<Option<i64>> {
    tx.query_opt(
        "SELECT version FROM aliases WHERE model_id = ?1 AND alias = ?2",
        args![id, alias],
    )?
    .map(|r| r.int(0))
    .transpose()
}

pub(super) fn version_exists(tx: &mut dyn Tx, id: i64, version: i64) -> Result<bool> {
    Ok(tx
        .query_opt(
            "SELECT version FROM versions WHERE model_id = ?1 AND version = ?2",
            args![id, version],
        )?
        .is_some())
}
/// A content no version and no upload holds (`b` is the blobs row).
pub(super) const UNHELD: &str =
    "NOT EXISTS (SELECT 1 FROM version_files f WHERE f.sha256 = b.sha256)
  AND NOT EXISTS (SELECT 1 FROM upload_files u WHERE u.sha256 = b.sha256)";

pub(super) fn load_upload(tx: &mut dyn Tx, id: &str) -> Result<UploadRecord> {
    let Some(r) = tx.query_opt(
        "SELECT m.name, u.metadata, u.lineage, u.created_ms, u.expires_ms FROM uploads u JOIN models m ON m.id = u.model_id WHERE u.id = ?1",
        args![id],
    )?
    else {
        return Err(RegistryError::UnknownUpload(id.to_owned()));
    };
    let files = files_of(
        tx,
        "SELECT path, size, sha256 FROM upload_files WHERE upload_id = ?1 ORDER BY idx",
        args![id],
    )?;
    Ok(UploadRecord {
        id: id.to_owned(),
        model: r.text(0)?,
        files,
        metadata: json_map(&r.text(1)?),
        lineage: serde_json::from_str(&r.text(2)?).unwrap_or_default(),
        created_ms: r.int(3)?,
        expires_ms: r.int(4)?,
    })
}

pub(super) fn list_models(tx: &mut dyn Tx, f: &ModelFilter) -> Result<(Vec<ModelRecord>, i64)> {
    let mut sql = String::from("SELECT m.id FROM models m WHERE 1 = 1");
    let mut a: Vec<Val> = Vec::new();
    let mut arg = |sql: &mut String, text: &str, v: Val| {
        a.push(v);
        sql.push_str(&text.replace('?', &format!("?{}", a.len())));
    };
    if !f.name_prefix.is_empty() {
        arg(
            &mut sql,
            " AND substr(m.name, 1, length(CAST(? AS TEXT)))",
            Val::Text(f.name_prefix.clone()),
        );
        arg(&mut sql, " = ?", Val::Text(f.name_prefix.clone()));
    }
    if let Some(after) = &f.after {
        arg(&mut sql, " AND m.name > ?", Val::Text(after.clone()));
    }
    for (table, kv) in [("model_tags", &f.tags), ("model_meta", &f.metadata)] {
        for (k, v) in kv {
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM {table} t WHERE t.model_id = m.id"
            ));
            arg(&mut sql, " AND t.key = ?", Val::Text(k.clone()));
            arg(&mut sql, " AND t.value = ?)", Val::Text(v.clone()));
        }
    }
    if !f.task.is_empty() {
        arg(
            &mut sql,
            " AND EXISTS (SELECT 1 FROM versions v WHERE v.model_id = m.id AND v.task = ?)",
            Val::Text(f.task.clone()),
        );
    }
    arg(
        &mut sql,
        " ORDER BY m.name LIMIT ?",
        Val::Int(i64::from(f.limit)),
    );
    let ids = tx
        .query(&sql, &a)?
        .into_iter()
        .map(|r| r.int(0))
        .collect::<Result<Vec<_>>>()?;
    let models = ids
        .into_iter()
        .map(|id| load_model(tx, id))
        .collect::<Result<Vec<_>>>()?;
    Ok((models, meta_value(tx, "revision")?))
}

pub(super) fn commit_upload(
    tx: &mut dyn Tx,
    upload_id: &str,
    now_ms: i64,
) -> Result<VersionRecord> {
    // Read inside the write transaction: a second commit of the same upload
    // finds it gone.
    let upload = load_upload(tx, upload_id)?;
    let id = model_id(tx, &upload.model)?;
    let version = tx
        .query_one(
            "UPDATE models SET latest_version = latest_version + 1, updated_ms = ?2 WHERE id = ?1 RETURNING latest_version",
            args![id, now_ms],
        )?
        .int(0)?;
    tx.exec(
        "INSERT INTO versions VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        args![
            id,
            version,
            VersionStatus::Ready as i64,
            manifest::digest(&upload.files),
            json_text(&upload.metadata),
            serde_json::to_string(&upload.lineage).unwrap_or_default(),
            &upload.lineage.task,
            now_ms
        ],
    )?;
    for (i, f) in upload.files.iter().enumerate() {
        tx.exec(
            "INSERT INTO version_files VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            args![id, version, i as i64, &f.path, f.size, &f.sha256],
        )?;
        tx.exec(
            "INSERT INTO blobs VALUES (?1, ?2, NULL) ON CONFLICT (sha256) DO UPDATE SET released_ms = NULL",
            args![&f.sha256, f.size],
        )?;
    }
    tx.exec(
        "DELETE FROM upload_files WHERE upload_id = ?1",
        args![upload_id],
    )?;
    tx.exec("DELETE FROM uploads WHERE id = ?1", args![upload_id])?;
    event(
        tx,
        EventKind::VersionCreated,
        &upload.model,
        version,
        "",
        0,
        now_ms,
    )?;
    load_version(tx, &upload.model, id, version)
}
