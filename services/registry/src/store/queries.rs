//! The metadata store's logic, written once against [`sql::Tx`] and run by
//! every backend ([`SqlStore`]): each [`MetaStore`] method is one
//! transaction, and every change appends its event with the next revision
//! from the `meta` counter row inside that transaction.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{
    AliasChange, AliasMoveRecord, EventKind, EventRecord, MetaStore, ModelFilter, ModelRecord,
    ModelSpec, Revisions, Selector, UploadRecord, VersionFilter, VersionRecord, VersionStatus,
    snapshot::Snapshot,
    sql::{Backend, Tx, Val, args},
};
use crate::{
    error::{RegistryError, Result},
    manifest::{self, FileEntry},
};

/// The metadata store over a SQL backend.
#[derive(Debug)]
pub struct SqlStore<B> {
    pub(super) db: B,
}

impl<B> SqlStore<B> {
    pub fn new(db: B) -> Self {
        Self { db }
    }
}

pub(super) fn json_text(m: &Map<String, Value>) -> String {
    Value::Object(m.clone()).to_string()
}

pub(super) fn json_map(text: &str) -> Map<String, Value> {
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

fn model_id(tx: &mut dyn Tx, name: &str) -> Result<i64> {
    tx.query_opt("SELECT id FROM models WHERE name = ?1", args![name])?
        .ok_or_else(|| RegistryError::UnknownModel(name.to_owned()))?
        .int(0)
}

pub(super) fn meta_value(tx: &mut dyn Tx, key: &str) -> Result<i64> {
    tx.query_one("SELECT value FROM meta WHERE key = ?1", args![key])?
        .int(0)
}

/// Appends an event; returns its revision.
fn event(
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

fn pairs(tx: &mut dyn Tx, sql: &str, id: i64) -> Result<Vec<(String, Val)>> {
    tx.query(sql, args![id])?
        .into_iter()
        .map(|r| Ok((r.text(0)?, r.0.get(1).cloned().unwrap_or(Val::Null))))
        .collect()
}

fn load_model(tx: &mut dyn Tx, id: i64) -> Result<ModelRecord> {
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

pub(super) fn write_spec(tx: &mut dyn Tx, id: i64, spec: &ModelSpec) -> Result<()> {
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

pub(super) fn files_of(tx: &mut dyn Tx, sql: &str, a: &[Val]) -> Result<Vec<FileEntry>> {
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

fn load_version(tx: &mut dyn Tx, model: &str, id: i64, version: i64) -> Result<VersionRecord> {
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

fn alias_of(tx: &mut dyn Tx, id: i64, alias: &str) -> Result<Option<i64>> {
    tx.query_opt(
        "SELECT version FROM aliases WHERE model_id = ?1 AND alias = ?2",
        args![id, alias],
    )?
    .map(|r| r.int(0))
    .transpose()
}

fn version_exists(tx: &mut dyn Tx, id: i64, version: i64) -> Result<bool> {
    Ok(tx
        .query_opt(
            "SELECT version FROM versions WHERE model_id = ?1 AND version = ?2",
            args![id, version],
        )?
        .is_some())
}

/// Applies one alias change after its compare-and-set; records history and
/// the event. Returns None when the alias already points there.
fn move_alias(
    tx: &mut dyn Tx,
    model: &str,
    id: i64,
    change: &AliasChange,
    reason: &str,
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
    }))
}

/// A content no version and no upload holds (`b` is the blobs row).
const UNHELD: &str = "NOT EXISTS (SELECT 1 FROM version_files f WHERE f.sha256 = b.sha256)
  AND NOT EXISTS (SELECT 1 FROM upload_files u WHERE u.sha256 = b.sha256)";

fn load_upload(tx: &mut dyn Tx, id: &str) -> Result<UploadRecord> {
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

fn list_models(tx: &mut dyn Tx, f: &ModelFilter) -> Result<(Vec<ModelRecord>, i64)> {
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

fn commit_upload(tx: &mut dyn Tx, upload_id: &str, now_ms: i64) -> Result<VersionRecord> {
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

fn rollback_alias(
    tx: &mut dyn Tx,
    model: &str,
    alias: &str,
    expected: Option<i64>,
    reason: &str,
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
    move_alias(tx, model, id, &change, reason, now_ms)?.ok_or_else(|| {
        RegistryError::FailedPrecondition(format!(
            "alias {alias:?} of model {model:?} already points at version {from}"
        ))
    })
}

impl<B: Backend> MetaStore for SqlStore<B> {
    fn create_model(&self, spec: &ModelSpec, now_ms: i64) -> Result<ModelRecord> {
        self.db.with(true, |tx| {
            let taken = tx
                .query_opt("SELECT id FROM models WHERE name = ?1", args![&spec.name])?
                .is_some();
            if taken {
                return Err(RegistryError::ModelExists(spec.name.clone()));
            }
            let id = tx
                .query_one(
                    "INSERT INTO models (name, description, metadata, latest_version, created_ms, updated_ms) VALUES (?1, ?2, ?3, 0, ?4, ?4) RETURNING id",
                    args![&spec.name, &spec.description, json_text(&spec.metadata), now_ms],
                )?
                .int(0)?;
            write_spec(tx, id, spec)?;
            event(tx, EventKind::ModelCreated, &spec.name, 0, "", 0, now_ms)?;
            load_model(tx, id)
        })
    }

    fn update_model(&self, spec: &ModelSpec, now_ms: i64) -> Result<ModelRecord> {
        self.db.with(true, |tx| {
            let id = model_id(tx, &spec.name)?;
            tx.exec(
                "UPDATE models SET description = ?2, metadata = ?3, updated_ms = ?4 WHERE id = ?1",
                args![id, &spec.description, json_text(&spec.metadata), now_ms],
            )?;
            write_spec(tx, id, spec)?;
            event(tx, EventKind::ModelUpdated, &spec.name, 0, "", 0, now_ms)?;
            load_model(tx, id)
        })
    }

    fn get_model(&self, name: &str) -> Result<ModelRecord> {
        self.db.with(false, |tx| {
            let id = model_id(tx, name)?;
            load_model(tx, id)
        })
    }

    fn list_models(&self, filter: &ModelFilter) -> Result<(Vec<ModelRecord>, i64)> {
        self.db.with(false, |tx| list_models(tx, filter))
    }

    fn start_upload(&self, u: &UploadRecord) -> Result<Vec<bool>> {
        self.db.with(true, |tx| {
            let id = model_id(tx, &u.model)?;
            tx.exec(
                "INSERT INTO uploads VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                args![
                    &u.id,
                    id,
                    json_text(&u.metadata),
                    serde_json::to_string(&u.lineage).unwrap_or_default(),
                    u.created_ms,
                    u.expires_ms
                ],
            )?;
            let mut held = Vec::with_capacity(u.files.len());
            for (i, f) in u.files.iter().enumerate() {
                tx.exec(
                    "INSERT INTO upload_files VALUES (?1, ?2, ?3, ?4, ?5)",
                    args![&u.id, i as i64, &f.path, f.size, &f.sha256],
                )?;
                let size = tx
                    .query_opt("SELECT size FROM blobs WHERE sha256 = ?1", args![&f.sha256])?
                    .map(|r| r.int(0))
                    .transpose()?;
                held.push(size == Some(f.size as i64));
            }
            Ok(held)
        })
    }

    fn get_upload(&self, id: &str) -> Result<UploadRecord> {
        self.db.with(false, |tx| load_upload(tx, id))
    }

    fn delete_upload(&self, id: &str) -> Result<()> {
        self.db.with(true, |tx| {
            tx.exec("DELETE FROM upload_files WHERE upload_id = ?1", args![id])?;
            tx.exec("DELETE FROM uploads WHERE id = ?1", args![id])?;
            Ok(())
        })
    }

    fn expired_uploads(&self, now_ms: i64) -> Result<Vec<String>> {
        self.db.with(false, |tx| {
            tx.query(
                "SELECT id FROM uploads WHERE expires_ms < ?1",
                args![now_ms],
            )?
            .into_iter()
            .map(|r| r.text(0))
            .collect()
        })
    }

    fn commit_upload(&self, id: &str, now_ms: i64) -> Result<VersionRecord> {
        self.db.with(true, |tx| commit_upload(tx, id, now_ms))
    }

    fn get_version(&self, model: &str, selector: &Selector) -> Result<VersionRecord> {
        self.db.with(false, |tx| {
            let id = model_id(tx, model)?;
            let version = match selector {
                Selector::Number(v) => *v,
                Selector::Alias(a) => {
                    alias_of(tx, id, a)?.ok_or_else(|| RegistryError::UnknownAlias {
                        model: model.to_owned(),
                        alias: a.clone(),
                    })?
                }
            };
            load_version(tx, model, id, version)
        })
    }

    fn list_versions(&self, model: &str, f: &VersionFilter) -> Result<(Vec<VersionRecord>, i64)> {
        self.db.with(false, |tx| {
            let id = model_id(tx, model)?;
            let numbers = tx
                .query(
                    "SELECT version FROM versions WHERE model_id = ?1
                     AND (CAST(?2 AS BIGINT) = 0 OR status = ?2)
                     AND (CAST(?3 AS TEXT) = '' OR task = ?3) AND version < ?4
                     ORDER BY version DESC LIMIT ?5",
                    args![
                        id,
                        f.status.map_or(0, |s| s as i64),
                        &f.task,
                        f.before.unwrap_or(i64::MAX),
                        i64::from(f.limit)
                    ],
                )?
                .into_iter()
                .map(|r| r.int(0))
                .collect::<Result<Vec<_>>>()?;
            let versions = numbers
                .into_iter()
                .map(|v| load_version(tx, model, id, v))
                .collect::<Result<Vec<_>>>()?;
            Ok((versions, meta_value(tx, "revision")?))
        })
    }

    fn set_status(
        &self,
        model: &str,
        version: i64,
        status: VersionStatus,
        now_ms: i64,
    ) -> Result<VersionRecord> {
        self.db.with(true, |tx| {
            let id = model_id(tx, model)?;
            let before = load_version(tx, model, id, version)?;
            if before.status != status {
                tx.exec(
                    "UPDATE versions SET status = ?3 WHERE model_id = ?1 AND version = ?2",
                    args![id, version, status as i64],
                )?;
                event(
                    tx,
                    EventKind::VersionStatusChanged,
                    model,
                    version,
                    "",
                    0,
                    now_ms,
                )?;
            }
            load_version(tx, model, id, version)
        })
    }

    fn delete_version(&self, model: &str, version: i64, now_ms: i64) -> Result<()> {
        self.db.with(true, |tx| {
            let id = model_id(tx, model)?;
            let v = load_version(tx, model, id, version)?;
            if !v.aliases.is_empty() {
                return Err(RegistryError::FailedPrecondition(format!(
                    "version {version} of model {model:?} is named by alias(es) {}; move them first",
                    v.aliases.join(", ")
                )));
            }
            tx.exec(
                "DELETE FROM version_files WHERE model_id = ?1 AND version = ?2",
                args![id, version],
            )?;
            tx.exec(
                "DELETE FROM versions WHERE model_id = ?1 AND version = ?2",
                args![id, version],
            )?;
            for f in &v.files {
                tx.exec(
                    &format!(
                        "UPDATE blobs AS b SET released_ms = ?2 WHERE sha256 = ?1 AND released_ms IS NULL AND {UNHELD}"
                    ),
                    args![&f.sha256, now_ms],
                )?;
            }
            event(tx, EventKind::VersionDeleted, model, version, "", 0, now_ms)?;
            Ok(())
        })
    }

    fn set_aliases(
        &self,
        model: &str,
        changes: &[AliasChange],
        reason: &str,
        now_ms: i64,
    ) -> Result<Vec<AliasMoveRecord>> {
        self.db.with(true, |tx| {
            let id = model_id(tx, model)?;
            let mut moves = Vec::new();
            for c in changes {
                moves.extend(move_alias(tx, model, id, c, reason, now_ms)?);
            }
            Ok(moves)
        })
    }

    fn rollback_alias(
        &self,
        model: &str,
        alias: &str,
        expected: Option<i64>,
        reason: &str,
        now_ms: i64,
    ) -> Result<AliasMoveRecord> {
        self.db.with(true, |tx| {
            rollback_alias(tx, model, alias, expected, reason, now_ms)
        })
    }

    fn alias_history(
        &self,
        model: &str,
        alias: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AliasMoveRecord>> {
        self.db.with(false, |tx| {
            let id = model_id(tx, model)?;
            tx.query(
                "SELECT alias, from_version, to_version, revision, moved_ms, reason FROM alias_history
                 WHERE model_id = ?1 AND (CAST(?2 AS TEXT) = '' OR alias = ?2) AND revision < ?3
                 ORDER BY revision DESC LIMIT ?4",
                args![
                    id,
                    alias.unwrap_or(""),
                    before.unwrap_or(i64::MAX),
                    i64::from(limit)
                ],
            )?
            .into_iter()
            .map(|r| {
                Ok(AliasMoveRecord {
                    model: model.to_owned(),
                    alias: r.text(0)?,
                    from_version: r.int(1)?,
                    to_version: r.int(2)?,
                    revision: r.int(3)?,
                    moved_ms: r.int(4)?,
                    reason: r.text(5)?,
                })
            })
            .collect()
        })
    }

    fn events_after(&self, after: i64, limit: u32) -> Result<Vec<EventRecord>> {
        self.db.with(false, |tx| {
            tx.query(
                "SELECT revision, kind, model, version, alias, from_version, time_ms FROM events
                 WHERE revision > ?1 ORDER BY revision LIMIT ?2",
                args![after, i64::from(limit)],
            )?
            .into_iter()
            .map(|r| {
                Ok(EventRecord {
                    revision: r.int(0)?,
                    kind: EventKind::from_i64(r.int(1)?).unwrap_or(EventKind::ModelUpdated),
                    model: r.text(2)?,
                    version: r.int(3)?,
                    alias: r.text(4)?,
                    from_version: r.int(5)?,
                    time_ms: r.int(6)?,
                })
            })
            .collect()
        })
    }

    fn revisions(&self) -> Result<Revisions> {
        self.db.with(false, |tx| {
            Ok(Revisions {
                head: meta_value(tx, "revision")?,
                oldest: meta_value(tx, "pruned_through")? + 1,
            })
        })
    }

    fn prune_events(&self, keep: u64) -> Result<u64> {
        self.db.with(true, |tx| {
            let head = meta_value(tx, "revision")?;
            let through = head - keep as i64;
            if through <= meta_value(tx, "pruned_through")? {
                return Ok(0);
            }
            let n = tx.exec("DELETE FROM events WHERE revision <= ?1", args![through])?;
            tx.exec(
                "UPDATE meta SET value = ?1 WHERE key = 'pruned_through'",
                args![through],
            )?;
            Ok(n)
        })
    }

    fn knows_blob(&self, sha256: &str) -> Result<bool> {
        self.db.with(false, |tx| {
            Ok(tx
                .query_opt("SELECT size FROM blobs WHERE sha256 = ?1", args![sha256])?
                .is_some())
        })
    }

    fn releasable_blobs(&self, released_before_ms: i64) -> Result<Vec<String>> {
        self.db.with(false, |tx| {
            tx.query(
                &format!(
                    "SELECT sha256 FROM blobs b WHERE released_ms IS NOT NULL AND released_ms < ?1 AND {UNHELD}"
                ),
                args![released_before_ms],
            )?
            .into_iter()
            .map(|r| r.text(0))
            .collect()
        })
    }

    fn forget_blob(&self, sha256: &str) -> Result<bool> {
        self.db.with(true, |tx| {
            let n = tx.exec(
                &format!("DELETE FROM blobs AS b WHERE sha256 = ?1 AND {UNHELD}"),
                args![sha256],
            )?;
            Ok(n > 0)
        })
    }

    fn export(&self) -> Result<Snapshot> {
        self.db.with(false, super::backup_sql::export)
    }

    fn import(&self, snapshot: &Snapshot) -> Result<()> {
        self.db
            .with(true, |tx| super::backup_sql::import(tx, snapshot))
    }

    fn ping(&self) -> Result<()> {
        self.db
            .with(false, |tx| meta_value(tx, "revision").map(|_| ()))
    }
}
