//! The embedding engine: the served models, each with its tokenizer, its
//! bounded batching queue and its worker threads.
//!
//! A request flows: validate → admit (reserve queue slots, or
//! RESOURCE_EXHAUSTED at once) → tokenize on the blocking pool → queue →
//! batched model run on a worker thread → pool → normalize / cut to
//! `dimensions` → reply.

pub mod batcher;
pub mod memory;
pub mod model;
pub mod rewrite;
pub mod runner;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use tokenizers::TruncationDirection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tracing::Instrument as _;

use self::{
    batcher::{BatchLimits, Batcher, Job},
    model::{ModelFolder, Overflow},
    runner::{Runner, RunnerOptions},
};
use crate::{
    error::{EmbedError, LoadError},
    metrics::Metrics,
    settings::EmbeddingSettings,
};

/// A request for vectors, already decoded from the wire.
#[derive(Clone, Debug)]
pub struct EmbedParams {
    pub model: String,
    pub normalize: bool,
    /// `Some(direction)`: cut over-long inputs; `None`: refuse them.
    pub truncate: Option<TruncationDirection>,
    pub dimensions: Option<u32>,
}

/// Vectors and what they cost.
#[derive(Debug, Default)]
pub struct Embedded {
    pub model: String,
    pub dimensions: usize,
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: u64,
    pub total_input_tokens: u64,
    pub tokenize: Duration,
    pub queue: Duration,
    pub inference: Duration,
}

/// One served model.
pub struct ServedModel {
    pub folder: Arc<ModelFolder>,
    batcher: Arc<Batcher>,
    /// Admission: one permit per input tokenizing, queued or running.
    slots: Arc<Semaphore>,
    max_slots: usize,
}

/// All served models.
pub struct Engine {
    models: HashMap<String, ServedModel>,
    /// Names in configuration order.
    names: Vec<String>,
    default_model: String,
    pub settings: EmbeddingSettings,
    metrics: Metrics,
}

impl Engine {
    /// Loads ONNX Runtime and every configured model, and starts workers.
    pub fn start(settings: &EmbeddingSettings, metrics: Metrics) -> Result<Self, LoadError> {
        let env = runner::init_runtime(&settings.ort_dylib())?;
        let mut models = HashMap::new();
        let mut names = Vec::new();
        for spec in &settings.models {
            let folder = Arc::new(ModelFolder::load(&spec.name, &spec.path)?);
            if settings.max_batch_tokens < folder.max_tokens {
                return Err(LoadError::Invalid {
                    model: spec.name.clone(),
                    reason: format!(
                        "embedding.max_batch_tokens ({}) is below the model's max input of {} tokens",
                        settings.max_batch_tokens, folder.max_tokens
                    ),
                });
            }
            let budget = settings.max_run_memory_mb.saturating_mul(1024 * 1024);
            let cost = memory::RunCost::of(folder.shape);
            if budget > 0 && cost.bytes(1, folder.max_tokens) > budget {
                return Err(LoadError::Invalid {
                    model: spec.name.clone(),
                    reason: format!(
                        "embedding.max_run_memory_mb ({}) is below what one input of the model's max {} tokens needs (about {} MiB)",
                        settings.max_run_memory_mb,
                        folder.max_tokens,
                        cost.bytes(1, folder.max_tokens).div_ceil(1024 * 1024)
                    ),
                });
            }
            let limits = BatchLimits {
                max_batch_size: settings.max_batch_size,
                max_batch_tokens: settings.max_batch_tokens,
                run_memory: (budget > 0).then_some((cost, budget)),
                cost,
            };
            let batcher = Batcher::new(&spec.name, limits, metrics.clone());
            // Workers are detached: `close()` ends them once the queue drains.
            for i in 0..settings.sessions_per_model {
                let runner = Runner::new(
                    &env,
                    &folder,
                    &RunnerOptions {
                        intra_op_threads: settings.intra_op_threads,
                        allow_spinning: settings.allow_spinning,
                        shrink_arena: settings.shrink_arena,
                        cpu_arena: settings.cpu_arena,
                    },
                )?;
                batcher
                    .spawn_worker(i, runner)
                    .map_err(|e| LoadError::Invalid {
                        model: spec.name.clone(),
                        reason: format!("cannot start worker thread: {e}"),
                    })?;
            }
            tracing::info!(
                model = %spec.name,
                path = %spec.path.display(),
                dimension = folder.dimension,
                max_tokens = folder.max_tokens,
                pooling = folder.pooling.as_str(),
                sessions = settings.sessions_per_model,
                intra_op_threads = settings.intra_op_threads,
                allow_spinning = settings.allow_spinning,
                "model loaded"
            );
            names.push(spec.name.clone());
            models.insert(
                spec.name.clone(),
                ServedModel {
                    folder,
                    batcher,
                    slots: Arc::new(Semaphore::new(settings.max_queued_inputs)),
                    max_slots: settings.max_queued_inputs,
                },
            );
        }
        let default_model = settings
            .default_model
            .clone()
            .or_else(|| names.first().cloned())
            .ok_or_else(|| LoadError::Invalid {
                model: String::new(),
                reason: "no model configured".into(),
            })?;
        Ok(Self {
            models,
            names,
            default_model,
            settings: settings.clone(),
            metrics,
        })
    }

    /// Served models in configuration order, and the default's name.
    pub fn models(&self) -> impl Iterator<Item = (&ServedModel, bool)> {
        self.names
            .iter()
            .filter_map(|n| self.models.get(n))
            .map(|m| (m, m.folder.name == self.default_model))
    }

    /// The model named `name` (empty: the default).
    pub fn model(&self, name: &str) -> Result<&ServedModel, EmbedError> {
        let name = if name.is_empty() {
            &self.default_model
        } else {
            name
        };
        self.models
            .get(name)
            .ok_or_else(|| EmbedError::UnknownModel {
                name: name.into(),
                available: self.names.join(", "),
            })
    }

    /// Checks the batch size of a client request.
    pub fn check_batch(&self, field: &'static str, size: usize) -> Result<(), EmbedError> {
        if size == 0 {
            return Err(EmbedError::EmptyBatch { field });
        }
        if size > self.settings.max_client_batch {
            return Err(EmbedError::BatchTooLarge {
                field,
                size,
                max: self.settings.max_client_batch,
            });
        }
        Ok(())
    }

    /// Embeds `inputs` with `params`. Cancel-safe: dropping the future
    /// releases its queue slots and its queued inputs are skipped.
    pub async fn embed(
        &self,
        inputs: Vec<String>,
        params: &EmbedParams,
    ) -> Result<Embedded, EmbedError> {
        self.check_batch("inputs", inputs.len())?;
        let model = self.model(&params.model)?;
        let folder = Arc::clone(&model.folder);
        let dims = match params.dimensions {
            None | Some(0) => None,
            Some(d) if d as usize > folder.dimension => {
                return Err(EmbedError::DimensionsTooLarge {
                    requested: d,
                    max: folder.dimension,
                    model: folder.name.clone(),
                });
            }
            Some(d) => Some(d as usize),
        };
        let n = inputs.len();
        let _permit = model.admit(n)?;
        let in_flight = self
            .metrics
            .inputs_in_flight
            .with_label_values(&[&folder.name]);
        in_flight.add(n as i64);
        let _in_flight = scopeguard(move || in_flight.sub(n as i64));

        // Tokenize off the reactor.
        let t0 = Instant::now();
        let truncate = params.truncate;
        let tok_folder = Arc::clone(&folder);
        let tokenized = tokenize_blocking(inputs, move |i, text| {
            tok_folder.tokenize(text, i, truncate)
        })
        .await?;
        let tokenize = t0.elapsed();

        let mut out = Embedded {
            model: folder.name.clone(),
            tokenize,
            ..Embedded::default()
        };
        let mut receivers = Vec::with_capacity(n);
        let mut jobs = Vec::with_capacity(n);
        let now = Instant::now();
        for t in tokenized {
            out.prompt_tokens += t.ids.len() as u64;
            out.total_input_tokens += t.original_len as u64;
            let (tx, rx) = oneshot::channel();
            jobs.push(Job {
                ids: t.ids,
                enqueued: now,
                reply: tx,
            });
            receivers.push(rx);
        }
        model.batcher.push(jobs)?;
        self.metrics
            .tokens
            .with_label_values(&[&folder.name])
            .inc_by(out.prompt_tokens);

        out.vectors.reserve(n);
        let wait = mlmesh_runtime::call_span!("embed.wait", model = %folder.name, inputs = n, queue_us = tracing::field::Empty, inference_us = tracing::field::Empty);
        async {
            for rx in receivers {
                let pooled = rx.await.map_err(|_| EmbedError::ShuttingDown)??;
                out.queue = out.queue.max(pooled.queued);
                out.inference = out.inference.max(pooled.inference);
                out.vectors
                    .push(model::finish(pooled.vector, dims, params.normalize));
            }
            Ok::<_, EmbedError>(())
        }
        .instrument(wait.clone())
        .await?;
        wait.record("queue_us", out.queue.as_micros() as u64);
        wait.record("inference_us", out.inference.as_micros() as u64);
        out.dimensions = dims.unwrap_or(folder.dimension);
        Ok(out)
    }

    /// Tokenizes for inspection (the `Tokenize` RPC); never fails for length.
    pub async fn tokenize(
        &self,
        inputs: Vec<String>,
        model: &str,
        truncate: Option<TruncationDirection>,
    ) -> Result<(String, Vec<(tokenizers::Encoding, usize)>), EmbedError> {
        self.check_batch("inputs", inputs.len())?;
        let folder = Arc::clone(&self.model(model)?.folder);
        let name = folder.name.clone();
        // Asked not to truncate: show the whole input rather than fail.
        let overflow = truncate.map_or(Overflow::Keep, Overflow::Truncate);
        let encs = tokenize_blocking(inputs, move |i, t| folder.encode(t, i, overflow)).await?;
        Ok((name, encs))
    }

    /// Stops accepting work; workers exit once their queues drain.
    pub fn close(&self) {
        for m in self.models.values() {
            m.batcher.close();
        }
    }
}

impl ServedModel {
    /// Reserves queue slots for `n` inputs, or refuses at once.
    fn admit(&self, n: usize) -> Result<OwnedSemaphorePermit, EmbedError> {
        let n32 = u32::try_from(n).unwrap_or(u32::MAX);
        Arc::clone(&self.slots)
            .try_acquire_many_owned(n32)
            .map_err(|_| EmbedError::QueueFull {
                model: self.folder.name.clone(),
                queued: self.max_slots - self.slots.available_permits(),
                max: self.max_slots,
            })
    }
}

/// Runs `f` on every input on the blocking pool (never on the reactor),
/// inside an `embed.tokenize` span parented on the caller's span (the
/// blocking pool does not inherit it).
async fn tokenize_blocking<T, F>(inputs: Vec<String>, f: F) -> Result<Vec<T>, EmbedError>
where
    T: Send + 'static,
    F: Fn(usize, &str) -> Result<T, EmbedError> + Send + 'static,
{
    let parent = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let span =
            mlmesh_runtime::call_span!(parent: &parent, "embed.tokenize", inputs = inputs.len());
        let _g = span.enter();
        inputs
            .iter()
            .enumerate()
            .map(|(i, text)| f(i, text))
            .collect()
    })
    .await
    .map_err(|e| EmbedError::Tokenizer(format!("tokenizer task failed: {e}")))?
}

/// Runs `f` when dropped (also on cancellation).
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
