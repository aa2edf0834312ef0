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
        conn.execute_batch(&super::schema::schema("INTEGER PRIMARY KEY"))?;
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
