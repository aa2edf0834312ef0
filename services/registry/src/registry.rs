//! The protocol-free core: [`Registry`] holds the metadata store, the blob
//! store and the uploads in progress, and does every operation the faces
//! (gRPC today, the CLI through it) offer. Models, versions and aliases are
//! here; uploads, downloads, watch and housekeeping have their own modules.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::{
    blobs::{BlobStore, local::LocalBlobs, s3::S3Blobs},
    error::{RegistryError, Result},
    metrics::Metrics,
    names,
    settings::{MAX_PAGE_SIZE, RegistrySettings},
    staging::Staging,
    store::{
        AliasChange, AliasMoveRecord, MetaStore, ModelFilter, ModelRecord, ModelSpec, Selector,
        VersionFilter, VersionRecord, VersionStatus, evidence::Gate, postgres::PostgresStore,
        sqlite::SqliteStore,
    },
};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Most tags on a model, and most bytes of metadata JSON.
pub const MAX_TAGS: usize = 64;
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

/// The registry: stores, uploads in progress, and the head revision that
/// wakes watchers.
pub struct Registry {
    pub(crate) store: Arc<dyn MetaStore>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) staging: Staging,
    pub(crate) settings: RegistrySettings,
    pub(crate) metrics: Metrics,
    /// The newest revision; watchers wait on changes of it.
    pub(crate) head: watch::Sender<i64>,
    /// Uploads a call is writing now (one writer per upload).
    pub(crate) writing: Mutex<HashSet<String>>,
    /// Slots of the downloads and backups streaming now
    /// (`registry.max_concurrent_sends`).
    pub(crate) sends: Arc<tokio::sync::Semaphore>,
    /// Held while contents move into the blob store and are committed, and
    /// while housekeeping removes contents: a commit never references a
    /// content that is being removed.
    pub(crate) blob_lock: tokio::sync::Mutex<()>,
    /// Contents a backup or restore in progress needs: housekeeping keeps
    /// them whatever the metadata says.
    /// Contents a running backup or restore needs, with how many hold each.
    pub(crate) protected: Mutex<HashMap<String, usize>>,
    /// Set when the service stops: watchers and housekeeping end.
    pub(crate) closing: watch::Sender<bool>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("data_dir", &self.settings.data_dir)
            .finish()
    }
}

impl Registry {
    /// Opens the storage: metadata in SQLite under `settings.data_dir` or
    /// in PostgreSQL (`metadata_url`), contents under `data_dir`. Call from a
    /// blocking context of the service's runtime.
    pub fn open(settings: &RegistrySettings, metrics: Metrics) -> Result<Self> {
        let dir = &settings.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| {
            RegistryError::Store(format!(
                "cannot create {} (registry.data_dir): {e}",
                dir.display()
            ))
        })?;
        // The shared stores' clients are async; their blocking calls drive
        // them on the service's runtime.
        let runtime = || {
            tokio::runtime::Handle::try_current().map_err(|_| {
                RegistryError::Store("PostgreSQL and S3 need the service's runtime".into())
            })
        };
        let store: Arc<dyn MetaStore> = if settings.metadata_url.is_empty() {
            Arc::new(SqliteStore::open(&dir.join("registry.db"))?)
        } else {
            Arc::new(
                PostgresStore::connect(&settings.metadata_url.0, runtime()?).map_err(|e| {
                    RegistryError::Store(format!(
                        "registry.metadata_url ({}): {e}",
                        settings.metadata_url.redacted()
                    ))
                })?,
            )
        };
        let blobs: Arc<dyn BlobStore> = if settings.blob_url.is_empty() {
            Arc::new(LocalBlobs::open(&dir.join("blobs"))?)
        } else {
            Arc::new(S3Blobs::open(&settings.blob_url, &settings.s3, runtime()?)?)
        };
        Self::with_stores(settings, metrics, store, blobs, &dir.join("uploads"))
    }

    /// A registry over given stores (the embedded ones, or others).
    pub fn with_stores(
        settings: &RegistrySettings,
        metrics: Metrics,
        store: Arc<dyn MetaStore>,
        blobs: Arc<dyn BlobStore>,
        staging_dir: &Path,
    ) -> Result<Self> {
        let head = store.revisions()?.head;
        Ok(Self {
            store,
            blobs,
            staging: Staging::open(staging_dir)?,
            settings: settings.clone(),
            metrics,
            head: watch::Sender::new(head),
            writing: Mutex::new(HashSet::new()),
            sends: Arc::new(tokio::sync::Semaphore::new(settings.max_concurrent_sends)),
            blob_lock: tokio::sync::Mutex::new(()),
            protected: Mutex::new(HashMap::new()),
            closing: watch::Sender::new(false),
        })
    }

    /// The blob store (for operations tools and tests; its calls block).
    pub fn blob_store(&self) -> Arc<dyn BlobStore> {
        Arc::clone(&self.blobs)
    }

    /// Ends watch streams and housekeeping (the service is stopping).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Runs a metadata-store call off the reactor.
    pub(crate) async fn meta<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn MetaStore) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(store.as_ref())).await?
    }

    /// Runs a blob-store call off the reactor.
    pub(crate) async fn blob<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn BlobStore) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let blobs = Arc::clone(&self.blobs);
        tokio::task::spawn_blocking(move || f(blobs.as_ref())).await?
    }

    /// Tells watchers the store has moved on.
    pub(crate) async fn changed(&self) {
        if let Ok(r) = self.meta(|s| s.revisions()).await {
            self.head.send_if_modified(|h| {
                let moved = r.head > *h;
                *h = r.head.max(*h);
                moved
            });
        }
    }

    pub(crate) fn page_size(&self, asked: u32) -> u32 {
        match asked {
            0 => self.settings.page_size,
            n => n.min(MAX_PAGE_SIZE),
        }
    }

    // ----- models -----

    pub async fn create_model(&self, spec: ModelSpec) -> Result<ModelRecord> {
        check_spec(&spec)?;
        let m = self.meta(move |s| s.create_model(&spec, now_ms())).await?;
        self.changed().await;
        Ok(m)
    }

    pub async fn update_model(&self, spec: ModelSpec) -> Result<ModelRecord> {
        check_spec(&spec)?;
        let m = self.meta(move |s| s.update_model(&spec, now_ms())).await?;
        self.changed().await;
        Ok(m)
    }

    pub async fn get_model(&self, name: String) -> Result<ModelRecord> {
        self.meta(move |s| s.get_model(&name)).await
    }

    /// A page of models and the revision it was read at; the next page
    /// starts after the last name.
    pub async fn list_models(
        &self,
        mut filter: ModelFilter,
    ) -> Result<(Vec<ModelRecord>, Option<String>, i64)> {
        filter.limit = self.page_size(filter.limit);
        let limit = filter.limit as usize;
        let (models, rev) = self.meta(move |s| s.list_models(&filter)).await?;
        let next = next_page(&models, limit, |m| m.spec.name.clone());
        Ok((models, next, rev))
    }

    // ----- versions -----

    pub async fn get_version(&self, model: String, selector: Selector) -> Result<VersionRecord> {
        self.meta(move |s| s.get_version(&model, &selector)).await
    }

    pub async fn list_versions(
        &self,
        model: String,
        mut filter: VersionFilter,
    ) -> Result<(Vec<VersionRecord>, Option<i64>, i64)> {
        filter.limit = self.page_size(filter.limit);
        let limit = filter.limit as usize;
        let (versions, rev) = self.meta(move |s| s.list_versions(&model, &filter)).await?;
        let next = next_page(&versions, limit, |v| v.version);
        Ok((versions, next, rev))
    }

    pub async fn set_status(
        &self,
        model: String,
        version: i64,
        status: VersionStatus,
    ) -> Result<VersionRecord> {
        let v = self
            .meta(move |s| s.set_status(&model, version, status, now_ms()))
            .await?;
        self.changed().await;
        Ok(v)
    }

    pub async fn delete_version(&self, model: String, version: i64) -> Result<()> {
        self.meta(move |s| s.delete_version(&model, version, now_ms()))
            .await?;
        self.changed().await;
        Ok(())
    }

    // ----- aliases -----

    pub async fn set_aliases(
        &self,
        model: String,
        changes: Vec<AliasChange>,
        reason: String,
        gate: Gate,
    ) -> Result<Vec<AliasMoveRecord>> {
        check_reason(&reason, gate)?;
        if changes.is_empty() {
            return Err(RegistryError::invalid("aliases: at least one alias to set"));
        }
        let mut seen = HashSet::new();
        for (i, c) in changes.iter().enumerate() {
            names::check(&format!("aliases[{i}].alias"), &c.alias)?;
            if !seen.insert(c.alias.as_str()) {
                return Err(RegistryError::invalid(format!(
                    "aliases[{i}].alias {:?} is given twice",
                    c.alias
                )));
            }
            if c.version < 0 || c.expected.is_some_and(|e| e < 0) {
                return Err(RegistryError::invalid(format!(
                    "aliases[{i}]: versions are positive (0: none)"
                )));
            }
        }
        let moves = self
            .meta(move |s| s.set_aliases(&model, &changes, &reason, gate, now_ms()))
            .await?;
        self.metrics.alias_moves.inc_by(moves.len() as u64);
        self.changed().await;
        Ok(moves)
    }

    pub async fn rollback_alias(
        &self,
        model: String,
        alias: String,
        expected: Option<i64>,
        reason: String,
        gate: Gate,
    ) -> Result<AliasMoveRecord> {
        names::check("alias", &alias)?;
        check_reason(&reason, gate)?;
        let m = self
            .meta(move |s| s.rollback_alias(&model, &alias, expected, &reason, gate, now_ms()))
            .await?;
        self.metrics.alias_moves.inc();
        self.changed().await;
        Ok(m)
    }

    pub async fn alias_history(
        &self,
        model: String,
        alias: String,
        before: Option<i64>,
        page_size: u32,
    ) -> Result<(Vec<AliasMoveRecord>, Option<i64>)> {
        let limit = self.page_size(page_size);
        let moves = self
            .meta(move |s| {
                s.alias_history(
                    &model,
                    (!alias.is_empty()).then_some(alias.as_str()),
                    before,
                    limit,
                )
            })
            .await?;
        let next = next_page(&moves, limit as usize, |m| m.revision);
        Ok((moves, next))
    }
}

/// The key the next page starts after: the last item's, when the page is
/// full (a short page is the last one).
pub(crate) fn next_page<T, K>(items: &[T], limit: usize, key: impl Fn(&T) -> K) -> Option<K> {
    if items.len() == limit {
        items.last().map(key)
    } else {
        None
    }
}

/// Longest reason kept in the alias history.
pub const MAX_REASON_BYTES: usize = 4096;

/// A reason fits the history; an override must say why.
fn check_reason(reason: &str, gate: Gate) -> Result<()> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(RegistryError::invalid(format!(
            "reason: {} bytes, more than the limit of {MAX_REASON_BYTES}",
            reason.len()
        )));
    }
    if gate == Gate::Override && reason.trim().is_empty() {
        return Err(RegistryError::invalid(
            "reason: an override_policy move must say why (it is kept in the alias history)",
        ));
    }
    Ok(())
}

/// Checks a model's name, tags and metadata against the limits.
fn check_spec(spec: &ModelSpec) -> Result<()> {
    names::check("name", &spec.name)?;
    check_tags(&spec.tags)?;
    check_metadata("metadata", &spec.metadata)
}

fn check_tags(tags: &BTreeMap<String, String>) -> Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(RegistryError::invalid(format!(
            "tags: {} tags, more than the limit of {MAX_TAGS}",
            tags.len()
        )));
    }
    for (k, v) in tags {
        if k.is_empty() || k.len() > 256 || v.len() > 1024 {
            return Err(RegistryError::invalid(format!(
                "tags[{k:?}]: keys are 1-256 bytes, values at most 1024"
            )));
        }
    }
    Ok(())
}

/// Metadata is a JSON object of at most [`MAX_METADATA_BYTES`].
pub(crate) fn check_metadata(field: &str, m: &Map<String, Value>) -> Result<()> {
    let len = Value::Object(m.clone()).to_string().len();
    if len > MAX_METADATA_BYTES {
        return Err(RegistryError::invalid(format!(
            "{field}: {len} bytes of JSON, more than the limit of {MAX_METADATA_BYTES}"
        )));
    }
    Ok(())
}
