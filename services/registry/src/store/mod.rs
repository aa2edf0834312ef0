//! The metadata store: models, versions, aliases and their history, uploads
//! in progress, which file contents are held, and the event log.
//!
//! Every change is one transaction that also appends its event(s) with the
//! next revision(s), so the event log is exactly the order of the changes
//! and has no gaps. Calls block (run them off the reactor). The logic is
//! written once ([`queries`]) against a small SQL surface ([`sql`]);
//! [`sqlite`] is the embedded backend, [`postgres`] the one several
//! replicas share.

pub mod evidence;
pub mod postgres;
pub mod queries;
mod schema;
pub mod snapshot;
pub mod sql;
pub mod sqlite;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{error::Result, manifest::FileEntry};

/// Where a version came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Lineage {
    pub source_run: String,
    pub source_commit: String,
    pub dataset_digest: String,
    pub parent_version: i64,
    pub framework: String,
    pub task: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionStatus {
    Ready = 1,
    Deprecated = 2,
}

impl VersionStatus {
    pub fn from_i64(v: i64) -> Option<Self> {
        match v {
            1 => Some(Self::Ready),
            2 => Some(Self::Deprecated),
            _ => None,
        }
    }
}

/// A model's description, tags and metadata as given by a client.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    pub metadata: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelRecord {
    pub spec: ModelSpec,
    pub aliases: BTreeMap<String, i64>,
    pub latest_version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VersionRecord {
    pub model: String,
    pub version: i64,
    pub status: VersionStatus,
    pub files: Vec<FileEntry>,
    pub manifest_digest: String,
    pub metadata: Map<String, Value>,
    pub lineage: Lineage,
    pub created_ms: i64,
    pub aliases: Vec<String>,
}

impl VersionRecord {
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// An upload that has started and is not yet committed.
#[derive(Clone, Debug)]
pub struct UploadRecord {
    pub id: String,
    pub model: String,
    pub files: Vec<FileEntry>,
    pub metadata: Map<String, Value>,
    pub lineage: Lineage,
    pub created_ms: i64,
    pub expires_ms: i64,
}

/// How a call names a version.
#[derive(Clone, Debug)]
pub enum Selector {
    Number(i64),
    Alias(String),
}

/// One alias change of a SetAliases call.
#[derive(Clone, Debug)]
pub struct AliasChange {
    pub alias: String,
    /// 0 removes the alias.
    pub version: i64,
    /// Compare-and-set: what the alias must point at now (0: must not exist).
    pub expected: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AliasMoveRecord {
    pub model: String,
    pub alias: String,
    pub from_version: i64,
    pub to_version: i64,
    pub revision: i64,
    pub moved_ms: i64,
    pub reason: String,
    /// The evidence the alias's policy accepted (0: none needed).
    pub evidence_id: i64,
    /// The move passed over the alias's policy.
    pub overridden: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    ModelCreated = 1,
    ModelUpdated = 2,
    VersionCreated = 3,
    VersionStatusChanged = 4,
    VersionDeleted = 5,
    AliasMoved = 6,
    EvidenceRecorded = 8,
    PolicyChanged = 9,
}

impl EventKind {
    pub fn from_i64(v: i64) -> Option<Self> {
        Some(match v {
            1 => Self::ModelCreated,
            2 => Self::ModelUpdated,
            3 => Self::VersionCreated,
            4 => Self::VersionStatusChanged,
            5 => Self::VersionDeleted,
            6 => Self::AliasMoved,
            8 => Self::EvidenceRecorded,
            9 => Self::PolicyChanged,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    pub revision: i64,
    pub kind: EventKind,
    pub model: String,
    pub version: i64,
    pub alias: String,
    pub from_version: i64,
    pub time_ms: i64,
}

/// ListModels' filters and page.
#[derive(Clone, Debug, Default)]
pub struct ModelFilter {
    pub name_prefix: String,
    pub tags: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    pub task: String,
    /// Names after this one (the page token).
    pub after: Option<String>,
    pub limit: u32,
}

/// ListVersions' filters and page.
#[derive(Clone, Debug, Default)]
pub struct VersionFilter {
    pub status: Option<VersionStatus>,
    pub task: String,
    /// Versions below this number (the page token).
    pub before: Option<i64>,
    pub limit: u32,
}

/// The registry's revisions: the newest, and the oldest Watch can start at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revisions {
    pub head: i64,
    pub oldest: i64,
}

/// The metadata store. Every method is one transaction.
/// What all open uploads together may hold (`registry.max_open_uploads`,
/// `registry.max_staged_bytes`).
#[derive(Clone, Copy, Debug)]
pub struct UploadQuota {
    pub max_open: u64,
    pub max_bytes: u64,
}

pub trait MetaStore: Send + Sync + 'static {
    fn create_model(&self, spec: &ModelSpec, now_ms: i64) -> Result<ModelRecord>;
    fn update_model(&self, spec: &ModelSpec, now_ms: i64) -> Result<ModelRecord>;
    fn get_model(&self, name: &str) -> Result<ModelRecord>;
    fn list_models(&self, filter: &ModelFilter) -> Result<(Vec<ModelRecord>, i64)>;

    /// Records an upload; returns, per file, whether its content is already
    /// held (such files count as received). From now until the upload ends,
    /// its digests are never collected.
    /// Records `upload` unless the open uploads would pass `quota` (then
    /// RESOURCE_EXHAUSTED naming the setting); which of its files' contents
    /// are already held.
    fn start_upload(&self, upload: &UploadRecord, quota: &UploadQuota) -> Result<Vec<bool>>;
    fn get_upload(&self, id: &str) -> Result<UploadRecord>;
    /// Forgets an upload (aborted or expired). Missing is not an error.
    fn delete_upload(&self, id: &str) -> Result<()>;
    fn expired_uploads(&self, now_ms: i64) -> Result<Vec<String>>;
    /// Turns a complete upload into the model's next version (its files'
    /// contents are in the blob store), in one transaction with its event.
    fn commit_upload(&self, id: &str, now_ms: i64) -> Result<VersionRecord>;

    fn get_version(&self, model: &str, selector: &Selector) -> Result<VersionRecord>;
    fn list_versions(
        &self,
        model: &str,
        filter: &VersionFilter,
    ) -> Result<(Vec<VersionRecord>, i64)>;
    fn set_status(
        &self,
        model: &str,
        version: i64,
        status: VersionStatus,
        now_ms: i64,
    ) -> Result<VersionRecord>;
    /// Deletes a version; contents no other version holds are released.
    fn delete_version(&self, model: &str, version: i64, now_ms: i64) -> Result<()>;

    /// Moves aliases; each move with a policy passes the gate (or is
    /// overridden) in the same transaction.
    fn set_aliases(
        &self,
        model: &str,
        changes: &[AliasChange],
        reason: &str,
        gate: evidence::Gate,
        now_ms: i64,
    ) -> Result<Vec<AliasMoveRecord>>;
    fn rollback_alias(
        &self,
        model: &str,
        alias: &str,
        expected: Option<i64>,
        reason: &str,
        gate: evidence::Gate,
        now_ms: i64,
    ) -> Result<AliasMoveRecord>;

    /// Stores evidence for a version (bound to its manifest digest).
    fn record_evidence(
        &self,
        e: &evidence::EvidenceRecord,
        now_ms: i64,
    ) -> Result<evidence::EvidenceRecord>;
    /// Newest first; `before`: ids below it (the page token).
    fn list_evidence(
        &self,
        model: &str,
        version: Option<i64>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<evidence::EvidenceRecord>>;
    /// Sets or removes an alias's policy.
    fn set_policy(
        &self,
        p: &evidence::PolicyRecord,
        remove: bool,
        now_ms: i64,
    ) -> Result<evidence::PolicyRecord>;
    fn list_policies(&self, model: &str) -> Result<Vec<evidence::PolicyRecord>>;
    /// Moves newest first; `before`: revisions below it (the page token).
    fn alias_history(
        &self,
        model: &str,
        alias: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AliasMoveRecord>>;

    /// Events with a revision above `after`, in order, at most `limit`.
    fn events_after(&self, after: i64, limit: u32) -> Result<Vec<EventRecord>>;
    fn revisions(&self) -> Result<Revisions>;
    /// Drops events beyond the newest `keep`; returns how many.
    fn prune_events(&self, keep: u64) -> Result<u64>;

    /// Whether the store knows the content `sha256` (held or in its grace
    /// period).
    fn knows_blob(&self, sha256: &str) -> Result<bool>;
    /// Whether anything refers to the content: the store knows it, or a
    /// file of an upload in progress declares it (that upload's commit may
    /// be about to use a stored copy, possibly on another replica).
    fn refers_to_blob(&self, sha256: &str) -> Result<bool>;
    /// Contents no version and no upload holds, released before the time.
    fn releasable_blobs(&self, released_before_ms: i64) -> Result<Vec<String>>;
    /// Forgets a content if still nothing holds it; true when forgotten
    /// (the caller then removes the bytes).
    fn forget_blob(&self, sha256: &str) -> Result<bool>;

    /// Every table as a [`snapshot::Snapshot`], read in one transaction.
    fn export(&self) -> Result<snapshot::Snapshot>;
    /// Fills an empty store from a snapshot, in one transaction.
    fn import(&self, snapshot: &snapshot::Snapshot) -> Result<()>;

    /// Checks that the store answers.
    fn ping(&self) -> Result<()>;
}
