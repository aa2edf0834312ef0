//! Models that come from the model registry: `registry://<model>@<alias>`
//! follows an alias, `registry://<model>@<version>` serves a fixed version.
//!
//! A follower watches the registry for moves of its alias. Events only wake
//! it: it then reads where the alias points (so a missed or repeated event
//! cannot leave it on the wrong version), pulls that version into the local
//! cache with every file checked against its SHA-256, and has the model
//! manager load it beside the running version and swap. When the new
//! version fails to load, the running one keeps serving and the failure is
//! visible (RepositoryIndex reason, `registry_syncs_total{outcome="failure"}`,
//! an error log). A lost connection is retried with backoff.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Weak},
    time::Duration,
};

use mlmesh_proto::registry::v1 as pb;
use mlmesh_registry_client::{Client, Selector, Source, layout::Layout};
use mlmesh_runtime::tls::ClientTls;

use crate::{BuildError, metrics::Metrics, models::ModelManager, settings::InferenceSettings};

/// The client of the registry: one HTTP/2 connection (TLS when
/// `registry_tls` says so) shared by every follower, reconnected when lost.
pub(crate) fn registry_client(settings: &InferenceSettings) -> Result<Client, BuildError> {
    let fail = |key, reason: String| BuildError::Setting { key, reason };
    let tls = ClientTls::from_settings(&settings.registry_tls, "inference.registry_tls")
        .map_err(|e| fail("inference.registry_tls", e.to_string()))?;
    let token = mlmesh_runtime::admin::AdminToken::from_setting(
        &settings.registry_token_file,
        "inference.registry_token_file",
    )
    .map_err(|e| fail("inference.registry_token_file", e.to_string()))?;
    mlmesh_registry_client::connect(&settings.registry_addr, tls, token)
        .map_err(|reason| fail("inference.registry_addr", reason))
}

/// Starts a follower for every `inference.registry_models` entry.
pub fn spawn_all(
    settings: &InferenceSettings,
    models: &Arc<ModelManager>,
    metrics: &Metrics,
) -> Result<(), BuildError> {
    if settings.registry_models.is_empty() {
        return Ok(());
    }
    let client = registry_client(settings)?;
    for source in &settings.registry_models {
        let f = Follower {
            source: source.clone(),
            client: client.clone(),
            cache: settings.registry_cache_dir.join("models"),
            models: Arc::downgrade(models),
            metrics: metrics.clone(),
            serving: None,
        };
        tokio::spawn(f.run());
    }
    Ok(())
}

struct Follower {
    source: Source,
    client: Client,
    /// `<cache>/<model>/<version>/`: what the model manager reads.
    cache: PathBuf,
    models: Weak<ModelManager>,
    metrics: Metrics,
    /// The registry version being served, with its manifest digest: a
    /// registry restored or reset may reuse a number for other contents.
    serving: Option<(i64, String)>,
}

impl Follower {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(200);
        loop {
            if self.models.strong_count() == 0 {
                return; // the service is gone
            }
            match self.session().await {
                Ok(()) => return, // a fixed version, served
                Err(e) => {
                    tracing::warn!(model = %self.source.model, error = %e, retry_in_ms = backoff.as_millis() as u64, "registry follower: retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Connects, syncs, then (for an alias) re-syncs on every move of it.
    async fn session(&mut self) -> Result<(), String> {
        // Lazily connected: the first call below reports an unreachable
        // registry (UNAVAILABLE naming the address).
        let mut c = self.client.clone();
        let alias = match &self.source.selector {
            Selector::Version(_) => {
                return self.sync(&mut c).await;
            }
            Selector::Alias(a) => a.clone(),
        };
        // Subscribed before reading the alias: no move can fall between.
        let mut events = c
            .watch(pb::WatchRequest {
                start_revision: 0,
                filter: Some(pb::WatchFilter {
                    models: vec![self.source.model.clone()],
                    aliases: vec![alias],
                    kinds: vec![pb::EventKind::AliasMoved as i32],
                }),
            })
            .await
            .map_err(|e| format!("watch: {}", e.message()))?
            .into_inner();
        // A failed sync (say, a version that does not load) is reported and
        // waits for the next move; the running version keeps serving.
        let _ = self.sync(&mut c).await;
        loop {
            match events.message().await {
                Ok(Some(e)) if e.kind == pb::EventKind::AliasMoved as i32 => {
                    let _ = self.sync(&mut c).await;
                }
                Ok(Some(_)) => {} // progress
                Ok(None) => return Err("the watch stream ended".into()),
                Err(e) => return Err(format!("watch: {}", e.message())),
            }
        }
    }

    /// Serves the version the source names now.
    async fn sync(&mut self, c: &mut Client) -> Result<(), String> {
        // The registry's name for registry calls; the served name (` as
        // <name>`) for everything this service shows.
        let registry_model = self.source.model.clone();
        let model = self.source.served_name().to_owned();
        let selector = self.source.selector.to_get();
        let v = match c
            .get_version(pb::GetVersionRequest {
                model: registry_model,
                selector: Some(selector),
            })
            .await
        {
            Ok(v) => v.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => {
                // An alias not set (yet): nothing to serve, wait for a move.
                tracing::warn!(%model, reason = %s.message(), "registry source names no version yet");
                return Ok(());
            }
            Err(s) => return Err(format!("get version: {}", s.message())),
        };
        if self
            .serving
            .as_ref()
            .is_some_and(|(n, d)| *n == v.version && *d == v.manifest_digest)
        {
            return Ok(());
        }
        let outcome = self.switch(c, &v).await;
        let label = if outcome.is_ok() {
            "success"
        } else {
            "failure"
        };
        self.metrics
            .registry_syncs
            .with_label_values(&[&model, label])
            .inc();
        match &outcome {
            Ok(()) => {
                tracing::info!(%model, version = v.version, previous = ?self.serving, "serving the registry version");
                self.serving = Some((v.version, v.manifest_digest.clone()));
                self.metrics
                    .registry_version
                    .with_label_values(&[&model])
                    .set(v.version);
                self.report_evidence(c, &v).await;
            }
            Err(e) => {
                tracing::error!(%model, version = v.version, serving = ?self.serving, error = %e, "registry version not served; the running version keeps serving");
            }
        }
        outcome
    }

    /// Says which validation evidence the version now served carries (a
    /// log line and `mlmesh_inference_registry_evidence`): the newest
    /// passing record bound to its manifest, or none. Informational: a
    /// registry that cannot answer does not stop serving.
    async fn report_evidence(&self, c: &mut Client, v: &pb::Version) {
        let listed = c
            .list_evidence(pb::ListEvidenceRequest {
                model: v.model.clone(),
                version: v.version,
                page_size: 100,
                page_token: String::new(),
            })
            .await;
        let list = match listed {
            Ok(r) => r.into_inner().evidence,
            Err(s) => {
                tracing::warn!(model = %v.model, version = v.version, error = %s.message(), "cannot list the served version's evidence");
                return;
            }
        };
        let bound: Vec<_> = list
            .iter()
            .filter(|e| e.manifest_digest == v.manifest_digest)
            .collect();
        let passing = bound.iter().find(|e| e.passed);
        self.metrics
            .registry_evidence
            .with_label_values(&[self.source.served_name()])
            .set(passing.map_or(0, |e| e.id));
        match passing {
            Some(e) => tracing::info!(
                model = %v.model,
                version = v.version,
                evidence = e.id,
                suite = %e.suite_digest,
                suite_source = %e.suite_source,
                against = e.against_version,
                records = bound.len(),
                "the served version carries passing validation evidence"
            ),
            None => tracing::warn!(
                model = %v.model,
                version = v.version,
                records = bound.len(),
                "the served version carries no passing validation evidence"
            ),
        }
    }

    async fn switch(&self, c: &mut Client, v: &pb::Version) -> Result<(), String> {
        let name = self.source.served_name().to_owned();
        let model_dir = self.cache.join(&name);
        let version_dir = model_dir.join(v.version.to_string());
        // The cached folder is this version only if its manifest is the
        // one the registry names now; otherwise (a registry restored or
        // reset reusing the number) it is pulled again.
        let marker = version_dir.join(MANIFEST_KEPT);
        let cached = tokio::task::spawn_blocking(move || fs::read_to_string(marker).ok())
            .await
            .map_err(|e| e.to_string())?;
        if cached.as_deref().map(str::trim) != Some(v.manifest_digest.as_str()) {
            if version_dir.exists() {
                tracing::warn!(model = %v.model, version = v.version, cached = ?cached, registry = %v.manifest_digest, "cached version differs from the registry's; pulling it again");
                let stale = model_dir.join(format!(".stale-{}-{}", v.version, std::process::id()));
                let dir = version_dir.clone();
                tokio::task::spawn_blocking(move || {
                    let _ = fs::remove_dir_all(&stale);
                    fs::rename(&dir, &stale)?;
                    fs::remove_dir_all(&stale)
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("removing the stale cached version: {e}"))?;
            }
            self.pull(c, v, &model_dir).await?;
        }
        // The config of the version served next becomes the model's; if
        // it fails to load, the config of the version still serving is put
        // back, so the next poll or a restart reads the right one.
        let config = version_dir.join(CONFIG_KEPT);
        let target = model_dir.join("config.pbtxt");
        let t = target.clone();
        let previous = tokio::task::spawn_blocking(move || fs::read(t).ok())
            .await
            .map_err(|e| e.to_string())?;
        let t = target.clone();
        let serve_as = self.source.serve_as.clone();
        run_blocking(move || {
            if config.is_file() {
                let bytes = fs::read(&config)?;
                match serve_as {
                    Some(n) => write_config(&t, Some(&renamed(&bytes, &n))),
                    None => write_config(&t, Some(&bytes)),
                }
            } else {
                write_config(&t, None)
            }
        })
        .await?;
        let Some(models) = self.models.upgrade() else {
            return Err("the service is stopping".into());
        };
        let loaded = models
            .load_version(&name, v.version)
            .await
            .map_err(|e| e.to_string());
        if loaded.is_err() {
            run_blocking(move || write_config(&target, previous.as_deref())).await?;
        }
        loaded
    }

    /// Downloads every file of `v` into `<model_dir>/<version>/`,
    /// verified and moved into place whole, then records its manifest.
    async fn pull(&self, c: &mut Client, v: &pb::Version, model_dir: &Path) -> Result<(), String> {
        let layout = Layout::of(&v.files);
        let dest = model_dir.join(v.version.to_string());
        mlmesh_registry_client::pull(c, v, &dest, move |p| layout.place(p), |_| {})
            .await
            .map_err(|e| e.to_string())?;
        // Written after the version is whole: a crash in between leaves a
        // version without the marker, which the next switch pulls again.
        let marker = dest.join(MANIFEST_KEPT);
        let digest = v.manifest_digest.clone();
        tokio::task::spawn_blocking(move || fs::write(marker, digest))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("recording the manifest: {e}"))
    }
}

/// Filesystem work off the reactor; an error says it was the config.
async fn run_blocking(
    f: impl FnOnce() -> std::io::Result<()> + Send + 'static,
) -> Result<(), String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("writing the config: {e}"))
}

/// A config served under another name (` as <name>`): its top-level
/// `name:` line (unindented, as configs write it) becomes `name`, since a
/// config's name must be its folder's; a config without one is kept (the
/// folder's name is taken).
fn renamed(config: &[u8], name: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(config);
    let mut done = false;
    let mut out = String::with_capacity(text.len() + name.len());
    for line in text.split_inclusive('\n') {
        if !done && line.starts_with("name:") {
            out.push_str(&format!("name: \"{name}\"\n"));
            done = true;
        } else {
            out.push_str(line);
        }
    }
    out.into_bytes()
}

/// The model folder's `config.pbtxt` becomes `bytes` (written whole, then
/// renamed into place), or is removed for `None`.
fn write_config(target: &Path, bytes: Option<&[u8]>) -> std::io::Result<()> {
    match bytes {
        Some(b) => {
            let tmp = target.with_extension("pbtxt.tmp");
            fs::write(&tmp, b)?;
            fs::rename(&tmp, target)
        }
        None => match fs::remove_file(target) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
}

/// The manifest digest of a cached version, written into its folder once
/// every file is verified.
const MANIFEST_KEPT: &str = ".mlmesh-manifest";

/// A version's `config.pbtxt` is kept inside its version folder under this
/// name, and copied to the model folder when that version is served.
const CONFIG_KEPT: &str = "config.pbtxt";
