//! The model manager: which models are loaded, loading and unloading them,
//! zero-downtime reloads, loading on demand, and the memory budget.
//!
//! - A load builds the new [`Served`] beside the running one (its own
//!   sessions and worker threads, warmed up), then swaps it in under the
//!   lock: calls that already hold a [`Lease`] finish on the old one, whose
//!   workers stop when the last lease is dropped. A failed load leaves the
//!   old one serving and records the reason (RepositoryIndex, log, metric).
//! - Loads are serialised (one at a time) so the memory each one adds can
//!   be measured (resident set before and after).
//! - Over `memory_budget_mb`, the least recently used models that have no
//!   call in flight and are not pinned are unloaded; if that is not enough
//!   the new load is refused with RESOURCE_EXHAUSTED.

pub mod served;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

pub use served::{Io, Served, Version};

use crate::{
    backend::OrtOptions,
    error::{InferError, LoadError},
    metrics::Metrics,
    repository::Repository,
    settings::InferenceSettings,
};

/// A model's state as RepositoryIndex reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Loading,
    Ready,
    Unloading,
    /// Not loaded; the reason (failed load, unloaded, evicted).
    Unavailable(String),
}

impl State {
    pub fn label(&self) -> &'static str {
        match self {
            State::Loading => "LOADING",
            State::Ready => "READY",
            State::Unloading => "UNLOADING",
            State::Unavailable(_) => "UNAVAILABLE",
        }
    }
}

struct Entry {
    served: Option<Arc<Served>>,
    state: State,
    /// The last load failure, kept while an older load keeps serving.
    last_error: Option<String>,
    last_used: Instant,
    fingerprint: Vec<(std::path::PathBuf, u64, Option<std::time::SystemTime>)>,
}

/// A call's hold on one loaded version: keeps it alive (and counts as in
/// flight for eviction) until dropped.
pub struct Lease {
    pub served: Arc<Served>,
    pub version: Arc<Version>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.served.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One row of RepositoryIndex.
#[derive(Clone, Debug)]
pub struct IndexEntry {
    pub name: String,
    pub version: String,
    pub state: String,
    pub reason: String,
}

pub struct ModelManager {
    repo: Repository,
    settings: InferenceSettings,
    ort: OrtOptions,
    metrics: Metrics,
    entries: Mutex<HashMap<String, Entry>>,
    /// One load at a time (memory measurement, budget decisions).
    load_lock: tokio::sync::Mutex<()>,
    /// Models whose served version is chosen outside the config's policy
    /// (a registry alias): name → version.
    pins: Mutex<HashMap<String, i64>>,
}

impl ModelManager {
    pub fn new(settings: &InferenceSettings, metrics: Metrics) -> Self {
        Self {
            repo: Repository::new(&settings.model_repository)
                .with_pulled(settings.registry_cache_dir.join("models")),
            ort: OrtOptions {
                dylib: settings.ort_dylib(),
                intra_op_threads: settings.intra_op_threads,
                allow_spinning: settings.allow_spinning,
            },
            settings: settings.clone(),
            metrics,
            entries: Mutex::new(HashMap::new()),
            load_lock: tokio::sync::Mutex::new(()),
            pins: Mutex::new(HashMap::new()),
        }
    }

    fn pin_of(&self, name: &str) -> Option<i64> {
        self.pins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied()
    }

    /// Serves exactly `version` of `name` (loaded beside the running
    /// version, then swapped in); on failure the running version keeps
    /// serving and the pin goes back to it.
    pub async fn load_version(&self, name: &str, version: i64) -> Result<(), InferError> {
        let _one_at_a_time = self.load_lock.lock().await;
        let before = self
            .pins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), version);
        let r = self.load_locked(name).await;
        if r.is_err() {
            let mut pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
            match before {
                Some(v) => pins.insert(name.to_owned(), v),
                None => pins.remove(name),
            };
        }
        r
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Models in the repository folder.
    pub fn repository_models(&self) -> Vec<String> {
        self.repo.model_names().unwrap_or_default()
    }

    /// Models of the repository folder itself (those pulled from the
    /// registry are loaded by their follower, at the version it pins).
    fn own_models(&self) -> Vec<String> {
        self.repository_models()
            .into_iter()
            .filter(|n| !self.is_pulled(n))
            .collect()
    }

    fn is_pulled(&self, name: &str) -> bool {
        let own = self.repo.root.join(name).is_dir();
        !own && self.repo.dir(name).is_some()
    }

    fn unknown(&self, name: &str) -> InferError {
        InferError::UnknownModel {
            name: name.to_owned(),
            available: self.repository_models().join(", "),
        }
    }

    /// Loads the models named by `inference.load_models` (all when empty).
    /// A model that fails is logged and reported by RepositoryIndex; the
    /// others serve.
    pub async fn load_startup(&self) {
        let names = if self.settings.load_models.is_empty() {
            self.own_models()
        } else {
            self.settings.load_models.clone()
        };
        for name in names {
            if let Err(e) = self.load(&name).await {
                tracing::error!(model = %name, error = %e, "model failed to load at start; the others serve");
            }
        }
    }

    /// Loads `name`, or reloads it beside the running load and swaps.
    pub async fn load(&self, name: &str) -> Result<(), InferError> {
        let _one_at_a_time = self.load_lock.lock().await;
        self.load_locked(name).await
    }

    async fn load_locked(&self, name: &str) -> Result<(), InferError> {
        if self.is_pulled(name) && self.pin_of(name).is_none() {
            return Err(InferError::Unavailable {
                name: name.to_owned(),
                state: "its registry source has not chosen a version yet".into(),
            });
        }
        let repo = self.repo.clone();
        let n = name.to_owned();
        let pin = self.pin_of(name);
        let source = match tokio::task::spawn_blocking(move || repo.read_version(&n, pin)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                if self.repo.dir(name).is_none() {
                    return Err(self.unknown(name));
                }
                return Err(self.failed(name, e));
            }
            Err(e) => return Err(self.failed(name, LoadError::Invalid(e.to_string()))),
        };
        if !source.skipped_fields.is_empty() {
            tracing::warn!(model = %name, fields = ?source.skipped_fields, "config.pbtxt fields not used by mlmesh were skipped");
        }
        {
            let mut entries = self.lock();
            let e = entries.entry(name.to_owned()).or_insert_with(|| Entry {
                served: None,
                state: State::Loading,
                last_error: None,
                last_used: Instant::now(),
                fingerprint: Vec::new(),
            });
            if e.served.is_none() {
                e.state = State::Loading;
            }
        }
        let (settings, ort, metrics) = (
            self.settings.clone(),
            self.ort.clone(),
            self.metrics.clone(),
        );
        let fingerprint = source.fingerprint.clone();
        let built =
            tokio::task::spawn_blocking(move || served::build(&source, &settings, &ort, &metrics))
                .await;
        let served = match built {
            Ok(Ok(s)) => Arc::new(s),
            Ok(Err(e)) => return Err(self.failed(name, e)),
            Err(e) => return Err(self.failed(name, LoadError::Invalid(e.to_string()))),
        };
        self.make_room(name, served.memory_bytes)?;
        let old = {
            let mut entries = self.lock();
            let Some(e) = entries.get_mut(name) else {
                return Err(self.unknown(name));
            };
            e.state = State::Ready;
            e.last_error = None;
            e.last_used = Instant::now();
            e.fingerprint = fingerprint;
            e.served.replace(Arc::clone(&served))
        };
        self.metrics
            .loads
            .with_label_values(&[name, "success"])
            .inc();
        self.metrics
            .loaded_bytes
            .with_label_values(&[name])
            .set(served.memory_bytes as i64);
        self.metrics
            .load_seconds
            .with_label_values(&[name])
            .observe(served.load_time.as_secs_f64());
        tracing::info!(
            model = %name,
            versions = ?served.versions.keys().collect::<Vec<_>>(),
            memory_bytes = served.memory_bytes,
            load_ms = served.load_time.as_secs_f64() * 1e3,
            reload = old.is_some(),
            "model loaded"
        );
        // `old` drops here; calls still holding a lease finish on it.
        drop(old);
        Ok(())
    }

    /// Records a failed load: the old load (if any) keeps serving.
    fn failed(&self, name: &str, e: LoadError) -> InferError {
        let reason = e.to_string();
        self.metrics
            .loads
            .with_label_values(&[name, "failure"])
            .inc();
        let mut entries = self.lock();
        let entry = entries.entry(name.to_owned()).or_insert_with(|| Entry {
            served: None,
            state: State::Unavailable(String::new()),
            last_error: None,
            last_used: Instant::now(),
            fingerprint: Vec::new(),
        });
        entry.last_error = Some(reason.clone());
        let keeps_serving = entry.served.is_some();
        if !keeps_serving {
            entry.state = State::Unavailable(reason.clone());
        }
        drop(entries);
        tracing::error!(model = %name, %reason, keeps_serving, "model load failed");
        InferError::LoadFailed {
            model: name.to_owned(),
            reason: if keeps_serving {
                format!("{reason} (the previously loaded version keeps serving)")
            } else {
                reason
            },
        }
    }

    /// Evicts least recently used idle models until `extra` bytes fit.
    fn make_room(&self, loading: &str, extra: u64) -> Result<(), InferError> {
        let budget = self.settings.memory_budget_mb * 1024 * 1024;
        if budget == 0 {
            return Ok(());
        }
        let mut entries = self.lock();
        let used = |entries: &HashMap<String, Entry>| -> u64 {
            entries
                .iter()
                .filter(|(n, _)| n.as_str() != loading)
                .filter_map(|(_, e)| e.served.as_ref())
                .map(|s| s.memory_bytes)
                .sum()
        };
        while used(&entries) + extra > budget {
            let victim = entries
                .iter()
                .filter(|(n, e)| {
                    n.as_str() != loading
                        && !self.settings.pinned_models.contains(n)
                        && e.served.as_ref().is_some_and(|s| s.in_flight() == 0)
                })
                .min_by_key(|(_, e)| e.last_used)
                .map(|(n, _)| n.clone());
            let Some(victim) = victim else {
                return Err(InferError::OverBudget {
                    model: loading.to_owned(),
                    reason: format!(
                        "it takes {} MB, {} MB are held by models that are pinned or in use, and the budget is {} MB (inference.memory_budget_mb)",
                        extra.div_ceil(1 << 20),
                        used(&entries).div_ceil(1 << 20),
                        self.settings.memory_budget_mb
                    ),
                });
            };
            if let Some(e) = entries.get_mut(&victim) {
                e.served = None;
                e.state =
                    State::Unavailable("evicted to stay within inference.memory_budget_mb".into());
            }
            self.metrics.evictions.with_label_values(&[&victim]).inc();
            self.metrics
                .loaded_bytes
                .with_label_values(&[&victim])
                .set(0);
            tracing::info!(model = %victim, for_model = %loading, "evicted (least recently used) to stay within the memory budget");
        }
        Ok(())
    }

    /// Unloads `name`; calls in flight finish first.
    pub fn unload(&self, name: &str) -> Result<(), InferError> {
        let mut entries = self.lock();
        let Some(e) = entries.get_mut(name) else {
            drop(entries);
            if self.repo.dir(name).is_some() {
                return Ok(());
            }
            return Err(self.unknown(name));
        };
        let was = e.served.take();
        e.state = State::Unavailable("unloaded".into());
        drop(entries);
        if was.is_some() {
            self.metrics.unloads.with_label_values(&[name]).inc();
            self.metrics.loaded_bytes.with_label_values(&[name]).set(0);
            tracing::info!(model = %name, "model unloaded");
        }
        Ok(())
    }

    /// The loaded version for a call, loading the model first when
    /// `load_on_demand` allows. `version` empty: the highest served.
    pub async fn acquire(&self, name: &str, version: &str) -> Result<Lease, InferError> {
        match self.try_acquire(name, version) {
            Err(InferError::NotLoaded { .. }) if self.settings.load_on_demand => {
                let _one = self.load_lock.lock().await;
                // Another call may have loaded it meanwhile.
                if !self.is_loaded(name) {
                    // For a call, a model that cannot load is unavailable;
                    // the reason (path, cause) travels in the message.
                    self.load_locked(name).await.map_err(|e| match e {
                        InferError::LoadFailed { model, reason } => InferError::Unavailable {
                            name: model,
                            state: format!("not loaded: {reason}"),
                        },
                        other => other,
                    })?;
                }
                drop(_one);
                self.try_acquire(name, version)
            }
            other => other,
        }
    }

    fn is_loaded(&self, name: &str) -> bool {
        self.lock().get(name).is_some_and(|e| e.served.is_some())
    }

    /// The loaded version, without loading.
    pub fn try_acquire(&self, name: &str, version: &str) -> Result<Lease, InferError> {
        let mut entries = self.lock();
        let Some(e) = entries.get_mut(name) else {
            drop(entries);
            if self.repo.dir(name).is_some() {
                return Err(InferError::NotLoaded {
                    name: name.to_owned(),
                    state: "never loaded".into(),
                });
            }
            return Err(self.unknown(name));
        };
        let Some(served) = e.served.clone() else {
            return Err(match &e.state {
                State::Loading => InferError::Unavailable {
                    name: name.to_owned(),
                    state: "loading".into(),
                },
                State::Unavailable(r) => InferError::NotLoaded {
                    name: name.to_owned(),
                    state: if r.is_empty() {
                        "unavailable".into()
                    } else {
                        r.clone()
                    },
                },
                s => InferError::Unavailable {
                    name: name.to_owned(),
                    state: s.label().to_lowercase(),
                },
            });
        };
        e.last_used = Instant::now();
        drop(entries);
        let v = if version.is_empty() {
            served.versions.values().next_back().cloned()
        } else {
            version
                .parse::<i64>()
                .ok()
                .and_then(|v| served.versions.get(&v).cloned())
        };
        let Some(v) = v else {
            return Err(InferError::UnknownVersion {
                name: name.to_owned(),
                version: version.to_owned(),
                available: served
                    .versions
                    .keys()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        served.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok(Lease { served, version: v })
    }

    /// Every loaded model (for statistics).
    pub fn loaded(&self) -> Vec<Arc<Served>> {
        let entries = self.lock();
        let mut v: Vec<_> = entries.values().filter_map(|e| e.served.clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// RepositoryIndex rows: one per served version of a loaded model, one
    /// per model otherwise.
    pub fn index(&self, ready_only: bool) -> Vec<IndexEntry> {
        let names = self.repository_models();
        let entries = self.lock();
        let mut rows = Vec::new();
        let mut all: Vec<&String> = names.iter().collect();
        for n in entries.keys() {
            if !all.contains(&n) {
                all.push(n);
            }
        }
        all.sort();
        for name in all {
            match entries.get(name.as_str()) {
                Some(e) => {
                    if let Some(s) = &e.served {
                        for v in s.versions.keys() {
                            rows.push(IndexEntry {
                                name: name.clone(),
                                version: v.to_string(),
                                state: "READY".into(),
                                reason: e
                                    .last_error
                                    .as_ref()
                                    .map(|r| format!("last reload failed: {r}"))
                                    .unwrap_or_default(),
                            });
                        }
                    } else if !ready_only {
                        rows.push(IndexEntry {
                            name: name.clone(),
                            version: String::new(),
                            state: e.state.label().into(),
                            reason: match &e.state {
                                State::Unavailable(r) => r.clone(),
                                _ => String::new(),
                            },
                        });
                    }
                }
                None if !ready_only => rows.push(IndexEntry {
                    name: name.clone(),
                    version: String::new(),
                    state: String::new(),
                    reason: String::new(),
                }),
                None => {}
            }
        }
        rows
    }

    /// Reloads loaded models whose files changed, and loads new models when
    /// every model is served (`inference.load_models` empty).
    pub async fn poll(&self) {
        let loaded: Vec<(String, Vec<_>)> = {
            let entries = self.lock();
            entries
                .iter()
                .filter(|(_, e)| e.served.is_some() || e.last_error.is_some())
                .map(|(n, e)| (n.clone(), e.fingerprint.clone()))
                .collect()
        };
        for (name, fp) in loaded {
            let repo = self.repo.clone();
            let n = name.clone();
            let pin = self.pin_of(&name);
            let now = tokio::task::spawn_blocking(move || {
                repo.read_version(&n, pin).map(|s| s.fingerprint)
            })
            .await;
            if let Ok(Ok(now)) = now
                && now != fp
            {
                tracing::info!(model = %name, "model files changed; reloading");
                let _ = self.load(&name).await;
            }
        }
        if self.settings.load_models.is_empty() {
            for name in self.own_models() {
                let known = self.lock().contains_key(&name);
                if !known {
                    let _ = self.load(&name).await;
                }
            }
        }
    }

    /// Polls every `poll_interval_secs` until the manager is dropped.
    pub fn spawn_poller(self: &Arc<Self>) {
        let secs = self.settings.poll_interval_secs;
        if secs == 0 {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(secs));
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(m) = weak.upgrade() else { break };
                m.poll().await;
            }
        });
    }
}
