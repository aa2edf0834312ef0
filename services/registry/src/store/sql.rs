//! The small SQL surface the metadata store's logic is written against, so
//! one body of queries serves SQLite and PostgreSQL: statements with `?1 …`
//! placeholders, values that are integers, text or NULL, rows of them.
//!
//! Each backend maps its own types onto these and runs a closure inside one
//! transaction ([`Backend::with`]); the schema uses BIGINT and TEXT only.

use crate::error::{RegistryError, Result};

/// A statement argument or a column value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Val {
    Null,
    Int(i64),
    Text(String),
}

impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Val::Int(v)
    }
}

impl From<u64> for Val {
    fn from(v: u64) -> Self {
        Val::Int(v as i64)
    }
}

impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Val::Text(v.to_owned())
    }
}

impl From<&String> for Val {
    fn from(v: &String) -> Self {
        Val::Text(v.clone())
    }
}

impl From<String> for Val {
    fn from(v: String) -> Self {
        Val::Text(v)
    }
}

impl From<Option<i64>> for Val {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Val::Null, Val::Int)
    }
}

/// `args![a, b, …]`: statement arguments.
macro_rules! args {
    ($($v:expr),* $(,)?) => { &[$($crate::store::sql::Val::from($v)),*][..] };
}
pub(crate) use args;

/// One result row.
#[derive(Debug)]
pub struct Row(pub Vec<Val>);

impl Row {
    fn at(&self, i: usize) -> Result<&Val> {
        self.0
            .get(i)
            .ok_or_else(|| RegistryError::Store(format!("no column {i}")))
    }

    pub fn int(&self, i: usize) -> Result<i64> {
        match self.at(i)? {
            Val::Int(v) => Ok(*v),
            other => Err(RegistryError::Store(format!(
                "column {i}: {other:?} is not an integer"
            ))),
        }
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self.at(i)? {
            Val::Null => Ok(None),
            _ => self.int(i).map(Some),
        }
    }

    pub fn text(&self, i: usize) -> Result<String> {
        match self.at(i)? {
            Val::Text(v) => Ok(v.clone()),
            other => Err(RegistryError::Store(format!(
                "column {i}: {other:?} is not text"
            ))),
        }
    }
}

/// One open transaction.
pub trait Tx {
    /// Runs a statement; the number of rows it changed.
    fn exec(&mut self, sql: &str, args: &[Val]) -> Result<u64>;
    fn query(&mut self, sql: &str, args: &[Val]) -> Result<Vec<Row>>;

    fn query_opt(&mut self, sql: &str, args: &[Val]) -> Result<Option<Row>> {
        Ok(self.query(sql, args)?.into_iter().next())
    }

    fn query_one(&mut self, sql: &str, args: &[Val]) -> Result<Row> {
        self.query_opt(sql, args)?
            .ok_or_else(|| RegistryError::Store(format!("no row from {sql}")))
    }
}

/// A database the store runs on.
pub trait Backend: Send + Sync + 'static {
    /// Runs `f` in one transaction, committed when it returns Ok. A write
    /// transaction excludes every other writer (of every replica) from its
    /// start, so compare-and-set reads and the revision counter are exact.
    fn with<T>(&self, write: bool, f: impl FnOnce(&mut dyn Tx) -> Result<T>) -> Result<T>;
}

/// `?N` placeholders as PostgreSQL's `$N`.
pub fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        assert_eq!(
            dollar_placeholders("SELECT a FROM t WHERE b = ?1 AND c = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = $12"
        );
    }
}
