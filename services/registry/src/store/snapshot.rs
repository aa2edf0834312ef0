//! The portable form of the registry's metadata, used by Backup and
//! Restore: every table as plain records, read in one transaction. It is
//! the same for every metadata store, so a backup of one store restores
//! into another.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    Lineage,
    evidence::{EvidenceBody, PolicyRecord},
};
use crate::manifest::FileEntry;

/// Bumped when the document changes incompatibly.
pub const FORMAT: u32 = 1;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub format: u32,
    pub revision: i64,
    pub pruned_through: i64,
    pub models: Vec<ModelRow>,
    pub versions: Vec<VersionRow>,
    pub aliases: Vec<AliasRow>,
    pub alias_history: Vec<HistoryRow>,
    pub events: Vec<EventRow>,
    pub blobs: Vec<BlobRow>,
    /// Added after format 1 was first written: absent in older backups.
    #[serde(default)]
    pub evidence: Vec<EvidenceRow>,
    #[serde(default)]
    pub policies: Vec<PolicyRow>,
    #[serde(default)]
    pub alias_gate: Vec<GateRow>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvidenceRow {
    pub id: i64,
    pub model: String,
    pub version: i64,
    pub manifest_digest: String,
    pub suite_digest: String,
    pub passed: bool,
    pub against_version: i64,
    pub recorded_ms: i64,
    pub body: EvidenceBody,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyRow {
    pub model: String,
    pub alias: String,
    pub policy: PolicyRecord,
    pub updated_ms: i64,
}

/// What the gate decided for the alias move of `revision`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateRow {
    pub revision: i64,
    pub evidence_id: i64,
    pub overridden: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelRow {
    pub name: String,
    pub description: String,
    pub tags: Vec<(String, String)>,
    pub metadata: Map<String, Value>,
    pub latest_version: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionRow {
    pub model: String,
    pub version: i64,
    pub status: i64,
    pub manifest_digest: String,
    pub metadata: Map<String, Value>,
    pub lineage: Lineage,
    pub created_ms: i64,
    pub files: Vec<FileEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AliasRow {
    pub model: String,
    pub alias: String,
    pub version: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryRow {
    pub revision: i64,
    pub model: String,
    pub alias: String,
    pub from_version: i64,
    pub to_version: i64,
    pub moved_ms: i64,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRow {
    pub revision: i64,
    pub kind: i64,
    pub model: String,
    pub version: i64,
    pub alias: String,
    pub from_version: i64,
    pub time_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlobRow {
    pub sha256: String,
    pub size: u64,
    pub released_ms: Option<i64>,
}
