//! The embedded metadata backend: one SQLite file (`registry.db`) in WAL
//! mode with `synchronous=FULL`, so a change is on disk when its call
//! returns. Write transactions start with `BEGIN IMMEDIATE` (the database's
//! one writer lock), which also makes the revision counter exact.

use std::{path::Path, sync::Mutex, time::Duration};

use rusqlite::{Connection, Transaction, TransactionBehavior, params_from_iter, types::ValueRef};

use super::{
    queries::SqlStore,
    sql::{Backend, Row, Tx, Val},
};
use crate::error::{RegistryError, Result};

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
pub type SqliteStore = SqlStore<Sqlite>;

/// A SQLite database file.
pub struct Sqlite {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Sqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sqlite")
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
        Ok(SqlStore::new(Sqlite {
            conn: Mutex::new(conn),
        }))
    }
}

struct SqliteTx<'a>(Transaction<'a>);

fn to_sql(v: &Val) -> rusqlite::types::Value {
    match v {
        Val::Null => rusqlite::types::Value::Null,
        Val::Int(i) => rusqlite::types::Value::Integer(*i),
        Val::Text(t) => rusqlite::types::Value::Text(t.clone()),
    }
}

impl Tx for SqliteTx<'_> {
    fn exec(&mut self, sql: &str, args: &[Val]) -> Result<u64> {
        let mut st = self.0.prepare_cached(sql)?;
        Ok(st.execute(params_from_iter(args.iter().map(to_sql)))? as u64)
    }

    fn query(&mut self, sql: &str, args: &[Val]) -> Result<Vec<Row>> {
        let mut st = self.0.prepare_cached(sql)?;
        let n = st.column_count();
        let mut rows = st.query(params_from_iter(args.iter().map(to_sql)))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut vals = Vec::with_capacity(n);
            for i in 0..n {
                vals.push(match r.get_ref(i)? {
                    ValueRef::Null => Val::Null,
                    ValueRef::Integer(v) => Val::Int(v),
                    ValueRef::Real(v) => Val::Int(v as i64),
                    ValueRef::Text(t) | ValueRef::Blob(t) => {
                        Val::Text(String::from_utf8_lossy(t).into_owned())
                    }
                });
            }
            out.push(Row(vals));
        }
        Ok(out)
    }
}

impl Backend for Sqlite {
    fn with<T>(&self, write: bool, f: impl FnOnce(&mut dyn Tx) -> Result<T>) -> Result<T> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| RegistryError::Store("connection lock poisoned".into()))?;
        let behavior = if write {
            TransactionBehavior::Immediate
        } else {
            TransactionBehavior::Deferred
        };
        let mut tx = SqliteTx(conn.transaction_with_behavior(behavior)?);
        let out = f(&mut tx)?;
        tx.0.commit()?;
        Ok(out)
    }
}
