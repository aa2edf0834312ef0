//! The metadata tables, written once for both backends: BIGINT and TEXT
//! columns (SQLite reads BIGINT as its INTEGER), `{SERIAL}` a
//! generated key (SQLite `INTEGER PRIMARY KEY`, PostgreSQL `BIGSERIAL
//! PRIMARY KEY`). Every statement is idempotent: it runs at every start.

/// The schema with the generated-key spelling of a backend.
pub fn schema(serial: &str) -> String {
    TABLES.replace("{SERIAL}", serial)
}

const TABLES: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO meta VALUES ('schema', 1), ('revision', 0), ('pruned_through', 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS models (
  id {SERIAL},
  name TEXT NOT NULL UNIQUE,
  description TEXT NOT NULL,
  metadata TEXT NOT NULL,
  latest_version BIGINT NOT NULL,
  created_ms BIGINT NOT NULL,
  updated_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS model_tags (
  model_id BIGINT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
  PRIMARY KEY (model_id, key)
);
CREATE TABLE IF NOT EXISTS model_meta (
  model_id BIGINT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
  PRIMARY KEY (model_id, key)
);
CREATE TABLE IF NOT EXISTS versions (
  model_id BIGINT NOT NULL, version BIGINT NOT NULL, status BIGINT NOT NULL,
  manifest_digest TEXT NOT NULL, metadata TEXT NOT NULL, lineage TEXT NOT NULL,
  task TEXT NOT NULL, created_ms BIGINT NOT NULL,
  PRIMARY KEY (model_id, version)
);
CREATE TABLE IF NOT EXISTS version_files (
  model_id BIGINT NOT NULL, version BIGINT NOT NULL, idx BIGINT NOT NULL,
  path TEXT NOT NULL, size BIGINT NOT NULL, sha256 TEXT NOT NULL,
  PRIMARY KEY (model_id, version, idx)
);
CREATE INDEX IF NOT EXISTS version_files_sha256 ON version_files (sha256);
CREATE TABLE IF NOT EXISTS aliases (
  model_id BIGINT NOT NULL, alias TEXT NOT NULL, version BIGINT NOT NULL,
  PRIMARY KEY (model_id, alias)
);
CREATE TABLE IF NOT EXISTS alias_history (
  revision BIGINT PRIMARY KEY,
  model_id BIGINT NOT NULL, alias TEXT NOT NULL,
  from_version BIGINT NOT NULL, to_version BIGINT NOT NULL,
  moved_ms BIGINT NOT NULL, reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alias_history_alias ON alias_history (model_id, alias, revision);
CREATE TABLE IF NOT EXISTS events (
  revision BIGINT PRIMARY KEY,
  kind BIGINT NOT NULL, model TEXT NOT NULL, version BIGINT NOT NULL,
  alias TEXT NOT NULL, from_version BIGINT NOT NULL, time_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS blobs (
  sha256 TEXT PRIMARY KEY, size BIGINT NOT NULL, released_ms BIGINT
);
CREATE TABLE IF NOT EXISTS uploads (
  id TEXT PRIMARY KEY, model_id BIGINT NOT NULL,
  metadata TEXT NOT NULL, lineage TEXT NOT NULL,
  created_ms BIGINT NOT NULL, expires_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS upload_files (
  upload_id TEXT NOT NULL, idx BIGINT NOT NULL,
  path TEXT NOT NULL, size BIGINT NOT NULL, sha256 TEXT NOT NULL,
  PRIMARY KEY (upload_id, idx)
);
CREATE INDEX IF NOT EXISTS upload_files_sha256 ON upload_files (sha256);
CREATE TABLE IF NOT EXISTS evidence (
  id {SERIAL}, model_id BIGINT NOT NULL, version BIGINT NOT NULL,
  manifest_digest TEXT NOT NULL, suite_digest TEXT NOT NULL, passed BIGINT NOT NULL,
  against_version BIGINT NOT NULL, recorded_ms BIGINT NOT NULL, body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS evidence_version ON evidence (model_id, version, suite_digest, id);
CREATE TABLE IF NOT EXISTS alias_policies (
  model_id BIGINT NOT NULL, alias TEXT NOT NULL, policy TEXT NOT NULL, updated_ms BIGINT NOT NULL,
  PRIMARY KEY (model_id, alias)
);
CREATE TABLE IF NOT EXISTS alias_gate (
  revision BIGINT PRIMARY KEY, evidence_id BIGINT NOT NULL, overridden BIGINT NOT NULL
)";
