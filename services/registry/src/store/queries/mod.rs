//! The metadata store's logic, written once against [`sql::Tx`] and run by
//! every backend ([`SqlStore`]): each [`MetaStore`] method is one
//! transaction, and every change appends its event with the next revision
//! from the `meta` counter row inside that transaction.

mod aliases;
mod backup;
mod gate;
mod rows;

use super::{
    AliasChange, AliasMoveRecord, EventKind, EventRecord, MetaStore, ModelFilter, ModelRecord,
    ModelSpec, Revisions, Selector, UploadQuota, UploadRecord, VersionFilter, VersionRecord,
    VersionStatus,
    evidence::{EvidenceRecord, Gate, PolicyRecord},
    snapshot::Snapshot,
    sql::{Backend, args},
};
use crate::error::{RegistryError, Result};

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

pub use self::rows::meta_text;
use self::{
    aliases::{move_alias, rollback_alias},
    rows::*,
};

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

    fn start_upload(&self, u: &UploadRecord, quota: &UploadQuota) -> Result<Vec<bool>> {
        self.db.with(true, |tx| {
            let id = model_id(tx, &u.model)?;
            // One start at a time, across replicas too: the row lock on
            // the revision counter (held to commit) serializes this
            // count-then-insert (SQLite writers are serialized anyway).
            tx.exec(
                "UPDATE meta SET value = value WHERE key = 'revision'",
                &[],
            )?;
            // Open uploads (expired ones count until housekeeping drops
            // them: their bytes are still staged) and what they declare.
            let row = tx.query_one(
                "SELECT COUNT(DISTINCT u.id), CAST(COALESCE(SUM(f.size), 0) AS BIGINT) FROM uploads u LEFT JOIN upload_files f ON f.upload_id = u.id",
                &[],
            )?;
            let (open, staged) = (row.int(0)?.max(0) as u64, row.int(1)?.max(0) as u64);
            if open >= quota.max_open {
                return Err(RegistryError::Exhausted(format!(
                    "{open} uploads are open; at most {} (registry.max_open_uploads): commit or abort one, or wait for expiry",
                    quota.max_open
                )));
            }
            let declared: u64 = u.files.iter().map(|f| f.size).fold(0, u64::saturating_add);
            if staged.saturating_add(declared) > quota.max_bytes {
                return Err(RegistryError::Exhausted(format!(
                    "open uploads declare {staged} bytes and this one {declared}; at most {} in all (registry.max_staged_bytes)",
                    quota.max_bytes
                )));
            }
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
        gate: Gate,
        now_ms: i64,
    ) -> Result<Vec<AliasMoveRecord>> {
        self.db.with(true, |tx| {
            let id = model_id(tx, model)?;
            let mut moves = Vec::new();
            for c in changes {
                moves.extend(move_alias(tx, model, id, c, reason, gate, now_ms)?);
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
        gate: Gate,
        now_ms: i64,
    ) -> Result<AliasMoveRecord> {
        self.db.with(true, |tx| {
            rollback_alias(tx, model, alias, expected, reason, gate, now_ms)
        })
    }

    fn record_evidence(&self, e: &EvidenceRecord, now_ms: i64) -> Result<EvidenceRecord> {
        self.db
            .with(true, |tx| gate::record_evidence(tx, e, now_ms))
    }

    fn list_evidence(
        &self,
        model: &str,
        version: Option<i64>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<EvidenceRecord>> {
        self.db.with(false, |tx| {
            gate::list_evidence(tx, model, version, before, limit)
        })
    }

    fn set_policy(&self, p: &PolicyRecord, remove: bool, now_ms: i64) -> Result<PolicyRecord> {
        self.db
            .with(true, |tx| gate::set_policy(tx, p, remove, now_ms))
    }

    fn list_policies(&self, model: &str) -> Result<Vec<PolicyRecord>> {
        self.db.with(false, |tx| gate::list_policies(tx, model))
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
                "SELECT h.alias, h.from_version, h.to_version, h.revision, h.moved_ms, h.reason,
                        COALESCE(g.evidence_id, 0), COALESCE(g.overridden, 0)
                 FROM alias_history h LEFT JOIN alias_gate g ON g.revision = h.revision
                 WHERE h.model_id = ?1 AND (CAST(?2 AS TEXT) = '' OR h.alias = ?2) AND h.revision < ?3
                 ORDER BY h.revision DESC LIMIT ?4",
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
                    evidence_id: r.int(6)?,
                    overridden: r.int(7)? != 0,
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

    fn refers_to_blob(&self, sha256: &str) -> Result<bool> {
        self.db.with(false, |tx| {
            Ok(tx
                .query_opt(
                    "SELECT 1 FROM blobs WHERE sha256 = ?1 UNION ALL SELECT 1 FROM upload_files WHERE sha256 = ?1 LIMIT 1",
                    args![sha256],
                )?
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
        self.db.with(false, backup::export)
    }

    fn import(&self, snapshot: &Snapshot) -> Result<()> {
        self.db.with(true, |tx| backup::import(tx, snapshot))
    }

    fn ping(&self) -> Result<()> {
        self.db
            .with(false, |tx| meta_value(tx, "revision").map(|_| ()))
    }
}
