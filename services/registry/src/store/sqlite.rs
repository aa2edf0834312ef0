//! The embedded metadata store: one SQLite file (`registry.db`) in WAL mode
//! with `synchronous=FULL`, so a change is on disk when its call returns.
//!
//! Writers take the database's write lock at the start of their transaction
//! (`BEGIN IMMEDIATE`); the revision counter lives in a row of `meta`, so
//! revisions are handed out in commit order without gaps.

use std::{collections::BTreeMap, path::Path, sync::Mutex, time::Duration};

use rusqlite::{
    Connection, OptionalExtension, Transaction, TransactionBehavior, params, params_from_iter,
    types::Value as SqlValue,
};
use serde_json::{Map, Value};

use super::{
    AliasChange, AliasMoveRecord, EventKind, EventRecord, MetaStore, ModelFilter, ModelRecord,
    ModelSpec, Revisions, Selector, UploadRecord, VersionFilter, VersionRecord, VersionStatus,
    snapshot::Snapshot,
};
use crate::{
    error::{RegistryError, Result},
    manifest::{self, FileEntry},
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('schema', 1), ('revision', 0), ('pruned_through', 0);
CREATE TABLE IF NOT EXISTS models (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  description TEXT NOT NULL,
  metadata TEXT NOT NULL,
  latest_version INTEGER NOT NULL,
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS model_tags (
  model_id INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
  PRIMARY KEY (model_id, key)
);
-- Top-level metadata fields, for search: strings as they are, other values
-- as JSON text.
CREATE TABLE IF NOT EXISTS model_meta (
  model_id INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
  PRIMARY KEY (model_id, key)
);
CREATE TABLE IF NOT EXISTS versions (
  model_id INTEGER NOT NULL,
  version INTEGER NOT NULL,
  status INTEGER NOT NULL,
  manifest_digest TEXT NOT NULL,
  metadata TEXT NOT NULL,
  lineage TEXT NOT NULL,
  task TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  PRIMARY KEY (model_id, version)
);
CREATE TABLE IF NOT EXISTS version_files (
  model_id INTEGER NOT NULL, version INTEGER NOT NULL, idx INTEGER NOT NULL,
  path TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
  PRIMARY KEY (model_id, version, idx)
);
CREATE INDEX IF NOT EXISTS version_files_sha256 ON version_files (sha256);
CREATE TABLE IF NOT EXISTS aliases (
  model_id INTEGER NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL,
  PRIMARY KEY (model_id, alias)
);
CREATE TABLE IF NOT EXISTS alias_history (
  revision INTEGER PRIMARY KEY,
  model_id INTEGER NOT NULL, alias TEXT NOT NULL,
  from_version INTEGER NOT NULL, to_version INTEGER NOT NULL,
  moved_ms INTEGER NOT NULL, reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alias_history_alias ON alias_history (model_id, alias, revision);
CREATE TABLE IF NOT EXISTS events (
  revision INTEGER PRIMARY KEY,
  kind INTEGER NOT NULL, model TEXT NOT NULL, version INTEGER NOT NULL,
  alias TEXT NOT NULL, from_version INTEGER NOT NULL, time_ms INTEGER NOT NULL
);
-- Contents held by the blob store. released_ms: when the last version
-- holding it went (NULL while held).
CREATE TABLE IF NOT EXISTS blobs (
  sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, released_ms INTEGER
);
CREATE TABLE IF NOT EXISTS uploads (
  id TEXT PRIMARY KEY, model_id INTEGER NOT NULL,
  metadata TEXT NOT NULL, lineage TEXT NOT NULL,
  created_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS upload_files (
  upload_id TEXT NOT NULL, idx INTEGER NOT NULL,
  path TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
  PRIMARY KEY (upload_id, idx)
);
CREATE INDEX IF NOT EXISTS upload_files_sha256 ON upload_files (sha256);
";

/// The SQLite metadata store.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

impl SqliteStore {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)
            .map_err(|e| RegistryError::Store(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, write: bool, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| RegistryError::Store("connection lock poisoned".into()))?;
        let behavior = if write {
            TransactionBehavior::Immediate
        } else {
            TransactionBehavior::Deferred
        };
        let tx = conn.transaction_with_behavior(behavior)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
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

fn model_id(tx: &Transaction<'_>, name: &str) -> Result<i64> {
    tx.query_row("SELECT id FROM models WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .optional()?
    .ok_or_else(|| RegistryError::UnknownModel(name.to_owned()))
}

fn next_revision(tx: &Transaction<'_>) -> Result<i64> {
    Ok(tx.query_row(
        "UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value",
        [],
        |r| r.get(0),
    )?)
}

pub(super) fn meta_value(tx: &Transaction<'_>, key: &str) -> Result<i64> {
    Ok(tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))?)
}

/// Appends an event; returns its revision.
fn event(
    tx: &Transaction<'_>,
    kind: EventKind,
    model: &str,
    version: i64,
    alias: &str,
    from_version: i64,
    now_ms: i64,
) -> Result<i64> {
    let rev = next_revision(tx)?;
    tx.execute(
        "INSERT INTO events VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
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

fn load_model(tx: &Transaction<'_>, id: i64) -> Result<ModelRecord> {
    let (name, description, metadata, latest_version, created_ms, updated_ms): (
        String,
        String,
        String,
        i64,
        i64,
        i64,
    ) = tx.query_row(
        "SELECT name, description, metadata, latest_version, created_ms, updated_ms FROM models WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
    )?;
    let mut tags = BTreeMap::new();
    let mut st = tx.prepare_cached("SELECT key, value FROM model_tags WHERE model_id = ?1")?;
    for row in st.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))? {
        let (k, v) = row?;
        tags.insert(k, v);
    }
    let mut aliases = BTreeMap::new();
    let mut st = tx.prepare_cached("SELECT alias, version FROM aliases WHERE model_id = ?1")?;
    for row in st.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))? {
        let (k, v) = row?;
        aliases.insert(k, v);
    }
    Ok(ModelRecord {
        spec: ModelSpec {
            name,
            description,
            tags,
            metadata: json_map(&metadata),
        },
        aliases,
        latest_version,
        created_ms,
        updated_ms,
    })
}

fn write_spec(tx: &Transaction<'_>, id: i64, spec: &ModelSpec) -> Result<()> {
    tx.execute("DELETE FROM model_tags WHERE model_id = ?1", [id])?;
    tx.execute("DELETE FROM model_meta WHERE model_id = ?1", [id])?;
    for (k, v) in &spec.tags {
        tx.execute(
            "INSERT INTO model_tags VALUES (?1, ?2, ?3)",
            params![id, k, v],
        )?;
    }
    for (k, v) in &spec.metadata {
        tx.execute(
            "INSERT INTO model_meta VALUES (?1, ?2, ?3)",
            params![id, k, meta_text(v)],
        )?;
    }
    Ok(())
}

fn load_version(tx: &Transaction<'_>, model: &str, id: i64, version: i64) -> Result<VersionRecord> {
    let row: Option<(i64, String, String, String, i64)> = tx
        .query_row(
            "SELECT status, manifest_digest, metadata, lineage, created_ms FROM versions WHERE model_id = ?1 AND version = ?2",
            params![id, version],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    let Some((status, manifest_digest, metadata, lineage, created_ms)) = row else {
        return Err(RegistryError::UnknownVersion {
            model: model.to_owned(),
            version,
        });
    };
    let mut st = tx.prepare_cached(
        "SELECT path, size, sha256 FROM version_files WHERE model_id = ?1 AND version = ?2 ORDER BY idx",
    )?;
    let files = st
        .query_map(params![id, version], |r| {
            Ok(FileEntry {
                path: r.get(0)?,
                size: r.get::<_, i64>(1)? as u64,
                sha256: r.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut st = tx.prepare_cached(
        "SELECT alias FROM aliases WHERE model_id = ?1 AND version = ?2 ORDER BY alias",
    )?;
    let aliases = st
        .query_map(params![id, version], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(VersionRecord {
        model: model.to_owned(),
        version,
        status: VersionStatus::from_i64(status).unwrap_or(VersionStatus::Ready),
        files,
        manifest_digest,
        metadata: json_map(&metadata),
        lineage: serde_json::from_str(&lineage).unwrap_or_default(),
        created_ms,
        aliases,
    })
}

fn alias_of(tx: &Transaction<'_>, id: i64, alias: &str) -> Result<Option<i64>> {
    Ok(tx
        .query_row(
            "SELECT version FROM aliases WHERE model_id = ?1 AND alias = ?2",
            params![id, alias],
            |r| r.get(0),
        )
        .optional()?)
}

fn version_exists(tx: &Transaction<'_>, id: i64, version: i64) -> Result<bool> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM versions WHERE model_id = ?1 AND version = ?2",
            params![id, version],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Applies one alias change after its compare-and-set; records history and
/// the event. Returns None when the alias already points there.
fn move_alias(
    tx: &Transaction<'_>,
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
    tx.execute(
        "INSERT INTO alias_history VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            revision,
            id,
            change.alias,
            from,
            change.version,
            now_ms,
            reason
        ],
    )?;
    if change.version == 0 {
        tx.execute(
            "DELETE FROM aliases WHERE model_id = ?1 AND alias = ?2",
            params![id, change.alias],
        )?;
    } else {
        tx.execute(
            "INSERT INTO aliases VALUES (?1, ?2, ?3) ON CONFLICT (model_id, alias) DO UPDATE SET version = excluded.version",
            params![id, change.alias, change.version],
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

const HELD: &str = "NOT EXISTS (SELECT 1 FROM version_files f WHERE f.sha256 = b.sha256)
  AND NOT EXISTS (SELECT 1 FROM upload_files u WHERE u.sha256 = b.sha256)";

impl MetaStore for SqliteStore {
    fn create_model(&self, spec: &ModelSpec, now_ms: i64) -> Result<ModelRecord> {
        self.with(true, |tx| {
            let taken = tx
                .query_row("SELECT 1 FROM models WHERE name = ?1", [&spec.name], |_| Ok(()))
                .optional()?
                .is_some();
            if taken {
                return Err(RegistryError::ModelExists(spec.name.clone()));
            }
            tx.execute(
                "INSERT INTO models (name, description, metadata, latest_version, created_ms, updated_ms) VALUES (?1, ?2, ?3, 0, ?4, ?4)",
                params![spec.name, spec.description, json_text(&spec.metadata), now_ms],
            )?;
            let id = tx.last_insert_rowid();
            write_spec(tx, id, spec)?;
            event(tx, EventKind::ModelCreated, &spec.name, 0, "", 0, now_ms)?;
            load_model(tx, id)
        })
    }

    fn update_model(&self, spec: &ModelSpec, now_ms: i64) -> Result<ModelRecord> {
        self.with(true, |tx| {
            let id = model_id(tx, &spec.name)?;
            tx.execute(
                "UPDATE models SET description = ?2, metadata = ?3, updated_ms = ?4 WHERE id = ?1",
                params![id, spec.description, json_text(&spec.metadata), now_ms],
            )?;
            write_spec(tx, id, spec)?;
            event(tx, EventKind::ModelUpdated, &spec.name, 0, "", 0, now_ms)?;
            load_model(tx, id)
        })
    }

    fn get_model(&self, name: &str) -> Result<ModelRecord> {
        self.with(false, |tx| {
            let id = model_id(tx, name)?;
            load_model(tx, id)
        })
    }

    fn list_models(&self, f: &ModelFilter) -> Result<(Vec<ModelRecord>, i64)> {
        self.with(false, |tx| {
            let mut sql = String::from("SELECT m.id FROM models m WHERE 1 = 1");
            let mut args: Vec<SqlValue> = Vec::new();
            let mut arg = |sql: &mut String, text: &str, v: SqlValue| {
                args.push(v);
                sql.push_str(&text.replace('?', &format!("?{}", args.len())));
            };
            if !f.name_prefix.is_empty() {
                arg(
                    &mut sql,
                    " AND substr(m.name, 1, length(?)) = ",
                    SqlValue::Text(f.name_prefix.clone()),
                );
                arg(&mut sql, "?", SqlValue::Text(f.name_prefix.clone()));
            }
            if let Some(after) = &f.after {
                arg(&mut sql, " AND m.name > ?", SqlValue::Text(after.clone()));
            }
            for (table, pairs) in [("model_tags", &f.tags), ("model_meta", &f.metadata)] {
                for (k, v) in pairs {
                    sql.push_str(&format!(
                        " AND EXISTS (SELECT 1 FROM {table} t WHERE t.model_id = m.id"
                    ));
                    arg(&mut sql, " AND t.key = ?", SqlValue::Text(k.clone()));
                    arg(&mut sql, " AND t.value = ?)", SqlValue::Text(v.clone()));
                }
            }
            if !f.task.is_empty() {
                arg(
                    &mut sql,
                    " AND EXISTS (SELECT 1 FROM versions v WHERE v.model_id = m.id AND v.task = ?)",
                    SqlValue::Text(f.task.clone()),
                );
            }
            arg(
                &mut sql,
                " ORDER BY m.name LIMIT ?",
                SqlValue::Integer(i64::from(f.limit)),
            );
            let ids = tx
                .prepare(&sql)?
                .query_map(params_from_iter(args), |r| r.get::<_, i64>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            let models = ids
                .into_iter()
                .map(|id| load_model(tx, id))
                .collect::<Result<Vec<_>>>()?;
            Ok((models, meta_value(tx, "revision")?))
        })
    }

    fn start_upload(&self, u: &UploadRecord) -> Result<Vec<bool>> {
        self.with(true, |tx| {
            let id = model_id(tx, &u.model)?;
            tx.execute(
                "INSERT INTO uploads VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    u.id,
                    id,
                    json_text(&u.metadata),
                    serde_json::to_string(&u.lineage).unwrap_or_default(),
                    u.created_ms,
                    u.expires_ms
                ],
            )?;
            let mut held = Vec::with_capacity(u.files.len());
            for (i, f) in u.files.iter().enumerate() {
                tx.execute(
                    "INSERT INTO upload_files VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![u.id, i as i64, f.path, f.size as i64, f.sha256],
                )?;
                let size: Option<i64> = tx
                    .query_row(
                        "SELECT size FROM blobs WHERE sha256 = ?1",
                        [&f.sha256],
                        |r| r.get(0),
                    )
                    .optional()?;
                held.push(size == Some(f.size as i64));
            }
            Ok(held)
        })
    }

    fn get_upload(&self, id: &str) -> Result<UploadRecord> {
        self.with(false, |tx| {
            let row: Option<(String, String, String, i64, i64)> = tx
                .query_row(
                    "SELECT m.name, u.metadata, u.lineage, u.created_ms, u.expires_ms FROM uploads u JOIN models m ON m.id = u.model_id WHERE u.id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()?;
            let Some((model, metadata, lineage, created_ms, expires_ms)) = row else {
                return Err(RegistryError::UnknownUpload(id.to_owned()));
            };
            let files = tx
                .prepare_cached(
                    "SELECT path, size, sha256 FROM upload_files WHERE upload_id = ?1 ORDER BY idx",
                )?
                .query_map([id], |r| {
                    Ok(FileEntry {
                        path: r.get(0)?,
                        size: r.get::<_, i64>(1)? as u64,
                        sha256: r.get(2)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(UploadRecord {
                id: id.to_owned(),
                model,
                files,
                metadata: json_map(&metadata),
                lineage: serde_json::from_str(&lineage).unwrap_or_default(),
                created_ms,
                expires_ms,
            })
        })
    }

    fn delete_upload(&self, id: &str) -> Result<()> {
        self.with(true, |tx| {
            tx.execute("DELETE FROM upload_files WHERE upload_id = ?1", [id])?;
            tx.execute("DELETE FROM uploads WHERE id = ?1", [id])?;
            Ok(())
        })
    }

    fn expired_uploads(&self, now_ms: i64) -> Result<Vec<String>> {
        self.with(false, |tx| {
            Ok(tx
                .prepare("SELECT id FROM uploads WHERE expires_ms < ?1")?
                .query_map([now_ms], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?)
        })
    }

    fn commit_upload(&self, upload_id: &str, now_ms: i64) -> Result<VersionRecord> {
        let upload = self.get_upload(upload_id)?;
        self.with(true, |tx| {
            // Still there inside the write transaction (a second commit of
            // the same upload finds it gone).
            let still = tx
                .query_row("SELECT 1 FROM uploads WHERE id = ?1", [upload_id], |_| Ok(()))
                .optional()?
                .is_some();
            if !still {
                return Err(RegistryError::UnknownUpload(upload_id.to_owned()));
            }
            let id = model_id(tx, &upload.model)?;
            let version: i64 = tx.query_row(
                "UPDATE models SET latest_version = latest_version + 1, updated_ms = ?2 WHERE id = ?1 RETURNING latest_version",
                params![id, now_ms],
                |r| r.get(0),
            )?;
            tx.execute(
                "INSERT INTO versions VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    id,
                    version,
                    VersionStatus::Ready as i64,
                    manifest::digest(&upload.files),
                    json_text(&upload.metadata),
                    serde_json::to_string(&upload.lineage).unwrap_or_default(),
                    upload.lineage.task,
                    now_ms
                ],
            )?;
            for (i, f) in upload.files.iter().enumerate() {
                tx.execute(
                    "INSERT INTO version_files VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![id, version, i as i64, f.path, f.size as i64, f.sha256],
                )?;
                tx.execute(
                    "INSERT INTO blobs VALUES (?1, ?2, NULL) ON CONFLICT (sha256) DO UPDATE SET released_ms = NULL",
                    params![f.sha256, f.size as i64],
                )?;
            }
            tx.execute("DELETE FROM upload_files WHERE upload_id = ?1", [upload_id])?;
            tx.execute("DELETE FROM uploads WHERE id = ?1", [upload_id])?;
            event(tx, EventKind::VersionCreated, &upload.model, version, "", 0, now_ms)?;
            load_version(tx, &upload.model, id, version)
        })
    }

    fn get_version(&self, model: &str, selector: &Selector) -> Result<VersionRecord> {
        self.with(false, |tx| {
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
        self.with(false, |tx| {
            let id = model_id(tx, model)?;
            let numbers = tx
                .prepare_cached(
                    "SELECT version FROM versions WHERE model_id = ?1
                     AND (?2 = 0 OR status = ?2) AND (?3 = '' OR task = ?3) AND version < ?4
                     ORDER BY version DESC LIMIT ?5",
                )?
                .query_map(
                    params![
                        id,
                        f.status.map_or(0, |s| s as i64),
                        f.task,
                        f.before.unwrap_or(i64::MAX),
                        i64::from(f.limit)
                    ],
                    |r| r.get::<_, i64>(0),
                )?
                .collect::<Result<Vec<_>, _>>()?;
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
        self.with(true, |tx| {
            let id = model_id(tx, model)?;
            let before = load_version(tx, model, id, version)?;
            if before.status != status {
                tx.execute(
                    "UPDATE versions SET status = ?3 WHERE model_id = ?1 AND version = ?2",
                    params![id, version, status as i64],
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
        self.with(true, |tx| {
            let id = model_id(tx, model)?;
            let v = load_version(tx, model, id, version)?;
            if !v.aliases.is_empty() {
                return Err(RegistryError::FailedPrecondition(format!(
                    "version {version} of model {model:?} is named by alias(es) {}; move them first",
                    v.aliases.join(", ")
                )));
            }
            tx.execute(
                "DELETE FROM version_files WHERE model_id = ?1 AND version = ?2",
                params![id, version],
            )?;
            tx.execute(
                "DELETE FROM versions WHERE model_id = ?1 AND version = ?2",
                params![id, version],
            )?;
            for f in &v.files {
                tx.execute(
                    &format!(
                        "UPDATE blobs AS b SET released_ms = ?2 WHERE sha256 = ?1 AND released_ms IS NULL AND {HELD}"
                    ),
                    params![f.sha256, now_ms],
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
        self.with(true, |tx| {
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
        self.with(true, |tx| {
            let id = model_id(tx, model)?;
            let last: Option<(i64, i64)> = tx
                .query_row(
                    "SELECT from_version, to_version FROM alias_history WHERE model_id = ?1 AND alias = ?2 ORDER BY revision DESC LIMIT 1",
                    params![id, alias],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((from, to)) = last else {
                return Err(RegistryError::UnknownAlias {
                    model: model.to_owned(),
                    alias: alias.to_owned(),
                });
            };
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
        })
    }

    fn alias_history(
        &self,
        model: &str,
        alias: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AliasMoveRecord>> {
        self.with(false, |tx| {
            let id = model_id(tx, model)?;
            Ok(tx
                .prepare_cached(
                    "SELECT alias, from_version, to_version, revision, moved_ms, reason FROM alias_history
                     WHERE model_id = ?1 AND (?2 = '' OR alias = ?2) AND revision < ?3
                     ORDER BY revision DESC LIMIT ?4",
                )?
                .query_map(
                    params![
                        id,
                        alias.unwrap_or(""),
                        before.unwrap_or(i64::MAX),
                        i64::from(limit)
                    ],
                    |r| {
                        Ok(AliasMoveRecord {
                            model: model.to_owned(),
                            alias: r.get(0)?,
                            from_version: r.get(1)?,
                            to_version: r.get(2)?,
                            revision: r.get(3)?,
                            moved_ms: r.get(4)?,
                            reason: r.get(5)?,
                        })
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn events_after(&self, after: i64, limit: u32) -> Result<Vec<EventRecord>> {
        self.with(false, |tx| {
            Ok(tx
                .prepare_cached(
                    "SELECT revision, kind, model, version, alias, from_version, time_ms FROM events
                     WHERE revision > ?1 ORDER BY revision LIMIT ?2",
                )?
                .query_map(params![after, i64::from(limit)], |r| {
                    Ok(EventRecord {
                        revision: r.get(0)?,
                        kind: EventKind::from_i64(r.get(1)?).unwrap_or(EventKind::ModelUpdated),
                        model: r.get(2)?,
                        version: r.get(3)?,
                        alias: r.get(4)?,
                        from_version: r.get(5)?,
                        time_ms: r.get(6)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn revisions(&self) -> Result<Revisions> {
        self.with(false, |tx| {
            Ok(Revisions {
                head: meta_value(tx, "revision")?,
                oldest: meta_value(tx, "pruned_through")? + 1,
            })
        })
    }

    fn prune_events(&self, keep: u64) -> Result<u64> {
        self.with(true, |tx| {
            let head = meta_value(tx, "revision")?;
            let through = head - keep as i64;
            if through <= meta_value(tx, "pruned_through")? {
                return Ok(0);
            }
            let n = tx.execute("DELETE FROM events WHERE revision <= ?1", [through])?;
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'pruned_through'",
                [through],
            )?;
            Ok(n as u64)
        })
    }

    fn knows_blob(&self, sha256: &str) -> Result<bool> {
        self.with(false, |tx| {
            Ok(tx
                .query_row(
                    "SELECT 1 FROM blobs WHERE sha256 = ?1",
                    [sha256],
                    |_| Ok(()),
                )
                .optional()?
                .is_some())
        })
    }

    fn releasable_blobs(&self, released_before_ms: i64) -> Result<Vec<String>> {
        self.with(false, |tx| {
            Ok(tx
                .prepare(&format!(
                    "SELECT sha256 FROM blobs b WHERE released_ms IS NOT NULL AND released_ms < ?1 AND {HELD}"
                ))?
                .query_map([released_before_ms], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?)
        })
    }

    fn forget_blob(&self, sha256: &str) -> Result<bool> {
        self.with(true, |tx| {
            let n = tx.execute(
                &format!("DELETE FROM blobs AS b WHERE sha256 = ?1 AND {HELD}"),
                [sha256],
            )?;
            Ok(n > 0)
        })
    }

    fn export(&self) -> Result<Snapshot> {
        self.with(false, super::sqlite_backup::export)
    }

    fn import(&self, snapshot: &Snapshot) -> Result<()> {
        self.with(true, |tx| super::sqlite_backup::import(tx, snapshot))
    }

    fn ping(&self) -> Result<()> {
        self.with(false, |tx| meta_value(tx, "revision").map(|_| ()))
    }
}
