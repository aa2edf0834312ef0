//! The PostgreSQL metadata backend, for several registry replicas behind
//! one Service. Same schema as SQLite (BIGINT and TEXT), same queries.
//!
//! Write transactions begin by locking the revision counter row
//! (`SELECT … FOR UPDATE`): writers of every replica take turns, so
//! compare-and-set reads are exact and revisions are handed out in commit
//! order without gaps. Reads run in REPEATABLE READ, READ ONLY: a call sees
//! one consistent view (Backup's snapshot included).
//!
//! The store's calls are blocking (they run on the blocking pool); each
//! drives its statements on the service's runtime with `Handle::block_on`.

use std::sync::Mutex;

use tokio::runtime::Handle;
use tokio_postgres::{
    Client, IsolationLevel, NoTls, Transaction,
    types::{ToSql, Type},
};

use super::{
    queries::SqlStore,
    sql::{Backend, Row, Tx, Val, dollar_placeholders},
};
use crate::error::{RegistryError, Result};

/// Replicas creating the schema at the same moment take turns on this
/// advisory lock (an arbitrary constant: "mlmesh" in ASCII).
const SCHEMA_LOCK: i64 = 0x6d6c_6d65_7368;

/// The PostgreSQL metadata store.
pub type PostgresStore = SqlStore<Postgres>;

/// A connection to PostgreSQL, driven by the service's runtime.
pub struct Postgres {
    client: Mutex<Client>,
    handle: Handle,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Postgres")
    }
}

fn pg(e: tokio_postgres::Error) -> RegistryError {
    // A database error carries the server's message; others (I/O) their own.
    match e.as_db_error() {
        Some(db) => RegistryError::Store(format!("postgres: {}", db.message())),
        None => RegistryError::Store(format!("postgres: {e}")),
    }
}

impl PostgresStore {
    /// Connects (`postgres://…` URL or `key=value` string) and creates the
    /// schema when missing. Call from a blocking context.
    pub fn connect(url: &str, handle: Handle) -> Result<Self> {
        let client = handle.block_on(async {
            let (client, conn) = tokio_postgres::connect(url, NoTls).await.map_err(pg)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::error!(error = %e, "postgres connection lost");
                }
            });
            let mut client = client;
            let tx = client.transaction().await.map_err(pg)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
                .await
                .map_err(pg)?;
            tx.batch_execute(&super::schema::schema("BIGSERIAL PRIMARY KEY"))
                .await
                .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            Ok::<_, RegistryError>(client)
        })?;
        Ok(SqlStore::new(Postgres {
            client: Mutex::new(client),
            handle,
        }))
    }
}

struct PgTx<'a> {
    tx: Transaction<'a>,
    handle: &'a Handle,
}

fn params(args: &[Val]) -> Vec<Box<dyn ToSql + Sync + Send>> {
    args.iter()
        .map(|v| -> Box<dyn ToSql + Sync + Send> {
            match v {
                Val::Null => Box::new(None::<i64>),
                Val::Int(i) => Box::new(*i),
                Val::Text(t) => Box::new(t.clone()),
            }
        })
        .collect()
}

impl Tx for PgTx<'_> {
    fn exec(&mut self, sql: &str, args: &[Val]) -> Result<u64> {
        let sql = dollar_placeholders(sql);
        let owned = params(args);
        let refs: Vec<&(dyn ToSql + Sync)> = owned.iter().map(|b| b.as_ref() as _).collect();
        self.handle
            .block_on(self.tx.execute(sql.as_str(), &refs))
            .map_err(pg)
    }

    fn query(&mut self, sql: &str, args: &[Val]) -> Result<Vec<Row>> {
        let sql = dollar_placeholders(sql);
        let owned = params(args);
        let refs: Vec<&(dyn ToSql + Sync)> = owned.iter().map(|b| b.as_ref() as _).collect();
        let rows = self
            .handle
            .block_on(self.tx.query(sql.as_str(), &refs))
            .map_err(pg)?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| {
                        let t = r.columns()[i].type_();
                        Ok(if *t == Type::INT8 {
                            r.try_get::<_, Option<i64>>(i)
                                .map_err(pg)?
                                .map_or(Val::Null, Val::Int)
                        } else if *t == Type::INT4 {
                            r.try_get::<_, Option<i32>>(i)
                                .map_err(pg)?
                                .map_or(Val::Null, |v| Val::Int(i64::from(v)))
                        } else if *t == Type::BOOL {
                            r.try_get::<_, Option<bool>>(i)
                                .map_err(pg)?
                                .map_or(Val::Null, |v| Val::Int(i64::from(v)))
                        } else {
                            r.try_get::<_, Option<String>>(i)
                                .map_err(pg)?
                                .map_or(Val::Null, Val::Text)
                        })
                    })
                    .collect::<Result<Vec<_>>>()
                    .map(Row)
            })
            .collect()
    }
}

impl Backend for Postgres {
    fn with<T>(&self, write: bool, f: impl FnOnce(&mut dyn Tx) -> Result<T>) -> Result<T> {
        let mut client = self
            .client
            .lock()
            .map_err(|_| RegistryError::Store("connection lock poisoned".into()))?;
        let handle = &self.handle;
        let tx = handle
            .block_on(async {
                let b = client.build_transaction();
                let b = if write {
                    b.isolation_level(IsolationLevel::ReadCommitted)
                } else {
                    b.isolation_level(IsolationLevel::RepeatableRead)
                        .read_only(true)
                };
                b.start().await
            })
            .map_err(pg)?;
        let mut tx = PgTx { tx, handle };
        if write {
            // Every writer of every replica takes turns here.
            tx.query(
                "SELECT value FROM meta WHERE key = 'revision' FOR UPDATE",
                &[],
            )?;
        }
        let out = f(&mut tx)?;
        handle.block_on(tx.tx.commit()).map_err(pg)?;
        Ok(out)
    }
}
