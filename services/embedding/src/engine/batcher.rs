//! The batching queue of one model: concurrent requests' inputs are packed
//! into model runs bounded by a token budget and a batch size, grouping
//! inputs of similar length so little compute goes to padding.
//!
//! Inputs wait in a mutex-guarded queue served by dedicated worker threads,
//! one per ONNX Runtime session, so model runs never touch the async reactor.
//! Admission is bounded elsewhere (see `engine::ServedModel`); here an input
//! whose caller has gone (cancelled, deadline passed) is dropped before it
//! costs a model run.

use std::{
    collections::VecDeque,
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::oneshot;

use super::{memory::RunCost, runner::Runner};
use crate::{error::EmbedError, metrics::Metrics};

/// What a worker sends back for one input.
#[derive(Debug)]
pub struct Pooled {
    /// Pooled vector, full dimension, not normalized.
    pub vector: Vec<f32>,
    /// Time spent waiting in the queue.
    pub queued: Duration,
    /// Wall time of the model run that included this input.
    pub inference: Duration,
}

/// One input waiting for a model run.
pub struct Job {
    pub ids: Vec<i64>,
    pub enqueued: Instant,
    pub reply: oneshot::Sender<Result<Pooled, EmbedError>>,
}

struct State {
    jobs: VecDeque<Job>,
    closed: bool,
}

/// Limits of one model run.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    pub max_batch_size: usize,
    pub max_batch_tokens: usize,
    /// The model's memory cost and the bytes one run may take
    /// (`embedding.max_run_memory_mb`); `None`: no memory bound.
    pub run_memory: Option<(RunCost, u64)>,
    /// The model's memory cost, to tell large runs from small ones.
    pub cost: RunCost,
}

/// Runs estimated under this leave nothing worth giving back.
pub const KEEP_ARENA_BYTES: u64 = 32 * 1024 * 1024;

/// How long a worker waits with nothing to do before it gives back the
/// arena's memory a large run left behind. Under load the next run would
/// map it again (giving it back after every run cost long inputs a quarter
/// of their throughput); after a burst, the process shrinks back within
/// this.
pub const IDLE_BEFORE_GIVING_BACK: Duration = Duration::from_millis(250);

/// What a worker gets from the queue.
enum Next {
    /// The jobs of the next run.
    Batch(Vec<Job>),
    /// Nothing arrived within the idle wait.
    Idle,
    /// Closed and drained.
    Closed,
}

/// The queue shared by a model's workers and its request handlers.
pub struct Batcher {
    state: Mutex<State>,
    ready: Condvar,
    limits: BatchLimits,
    model: String,
    metrics: Metrics,
}

impl Batcher {
    pub fn new(model: &str, limits: BatchLimits, metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            limits,
            model: model.into(),
            metrics,
        })
    }

    /// Queues jobs (already admitted). Fails only when shutting down.
    pub fn push(&self, jobs: Vec<Job>) -> Result<(), EmbedError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.closed {
            return Err(EmbedError::ShuttingDown);
        }
        st.jobs.extend(jobs);
        self.metrics
            .queue_depth
            .with_label_values(&[&self.model])
            .set(st.jobs.len() as i64);
        drop(st);
        self.ready.notify_all();
        Ok(())
    }

    /// Stops the workers once the queue is empty.
    pub fn close(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.ready.notify_all();
    }

    /// Starts a worker thread that owns `runner`.
    pub fn spawn_worker(self: &Arc<Self>, index: usize, runner: Runner) -> std::io::Result<()> {
        let this = Arc::clone(self);
        std::thread::Builder::new()
            .name(format!("embed-{}-{index}", self.model))
            .spawn(move || this.work(runner))
            .map(drop)
    }

    /// Blocks until a batch is ready, or at most `idle` when given.
    fn next(&self, idle: Option<Duration>) -> Next {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let before = st.jobs.len();
            st.jobs.retain(|j| !j.reply.is_closed());
            let dropped = before - st.jobs.len();
            if dropped > 0 {
                self.metrics
                    .dropped_inputs
                    .with_label_values(&[&self.model])
                    .inc_by(dropped as u64);
            }
            if !st.jobs.is_empty() {
                let picked = select_batch(st.jobs.iter().map(|j| j.ids.len()), self.limits);
                // Remove picked jobs, keeping the others in arrival order.
                let mut batch = Vec::with_capacity(picked.len());
                let mut rest = VecDeque::with_capacity(st.jobs.len() - picked.len());
                let mut next = picked.iter().peekable();
                for (i, job) in st.jobs.drain(..).enumerate() {
                    if next.peek() == Some(&&i) {
                        next.next();
                        batch.push(job);
                    } else {
                        rest.push_back(job);
                    }
                }
                st.jobs = rest;
                self.metrics
                    .queue_depth
                    .with_label_values(&[&self.model])
                    .set(st.jobs.len() as i64);
                return Next::Batch(batch);
            }
            if st.closed {
                return Next::Closed;
            }
            st = match idle {
                None => self.ready.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let (st, waited) = self
                        .ready
                        .wait_timeout(st, d)
                        .unwrap_or_else(|p| p.into_inner());
                    if waited.timed_out() && st.jobs.is_empty() && !st.closed {
                        return Next::Idle;
                    }
                    st
                }
            };
        }
    }

    fn work(&self, mut runner: Runner) {
        let m = &self.metrics;
        let label = [self.model.as_str()];
        // The arena holds what a large run left behind.
        let mut holding = false;
        loop {
            let batch = match self.next(holding.then_some(IDLE_BEFORE_GIVING_BACK)) {
                Next::Closed => break,
                Next::Idle => {
                    if let Err(e) = runner.give_back_arena() {
                        tracing::warn!(model = %self.model, error = %e, "could not give back the arena's memory");
                    }
                    holding = false;
                    continue;
                }
                Next::Batch(batch) => batch,
            };
            let start = Instant::now();
            let seqs: Vec<&[i64]> = batch.iter().map(|j| j.ids.as_slice()).collect();
            let longest = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
            let span = tracing::debug_span!("embed.batch", model = %self.model, size = seqs.len(), padded_len = longest);
            let result = span.in_scope(|| runner.run_keeping_arena(&seqs));
            holding |= self.limits.cost.bytes(seqs.len(), longest) > KEEP_ARENA_BYTES;
            let inference = start.elapsed();
            m.batch_size
                .with_label_values(&label)
                .observe(seqs.len() as f64);
            m.batch_tokens
                .with_label_values(&label)
                .observe((seqs.len() * longest) as f64);
            m.inference_seconds
                .with_label_values(&label)
                .observe(inference.as_secs_f64());
            match result {
                Ok(vectors) => {
                    for (job, vector) in batch.into_iter().zip(vectors) {
                        let queued = start.saturating_duration_since(job.enqueued);
                        m.queue_seconds
                            .with_label_values(&label)
                            .observe(queued.as_secs_f64());
                        // A closed receiver means the caller left meanwhile.
                        let _ = job.reply.send(Ok(Pooled {
                            vector,
                            queued,
                            inference,
                        }));
                    }
                }
                Err(e) => {
                    tracing::error!(model = %self.model, error = %e, "model run failed");
                    let msg = e.to_string();
                    for job in batch {
                        let _ = job.reply.send(Err(EmbedError::Inference(msg.clone())));
                    }
                }
            }
        }
        tracing::debug!(model = %self.model, "batch worker stopped");
    }
}

/// Picks the jobs of the next run, as indices into the queue, ascending.
///
/// The oldest job always goes (so nothing starves); the rest are the jobs
/// closest to it in length, added while the padded size (jobs × longest)
/// stays within the token budget and the count within the batch size.
pub fn select_batch(lengths: impl Iterator<Item = usize>, limits: BatchLimits) -> Vec<usize> {
    let lengths: Vec<usize> = lengths.collect();
    if lengths.is_empty() {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    // Stable: equal lengths keep arrival order.
    order.sort_by_key(|&i| lengths[i]);
    let anchor = order.iter().position(|&i| i == 0).unwrap_or(0);
    let (mut lo, mut hi) = (anchor, anchor + 1); // window [lo, hi) in `order`
    let mut longest = lengths[0];
    let fits = |n: usize, longest: usize| {
        n <= limits.max_batch_size
            && n * longest <= limits.max_batch_tokens
            && limits
                .run_memory
                .is_none_or(|(cost, budget)| cost.bytes(n, longest) <= budget)
    };
    loop {
        let n = hi - lo;
        let left = (lo > 0).then(|| lengths[order[lo - 1]]);
        let right = (hi < order.len()).then(|| lengths[order[hi]]);
        let anchor_len = lengths[0];
        // Prefer the neighbour closer in length to the oldest job.
        let take_left = match (left, right) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => anchor_len - l <= r - anchor_len,
        };
        let cand = if take_left { left } else { right }.unwrap_or(0);
        let new_longest = longest.max(cand);
        if !fits(n + 1, new_longest) {
            // The other side may still fit (a shorter job on the left).
            let other = if take_left { right } else { left };
            match other {
                Some(o) if fits(n + 1, longest.max(o)) => {
                    longest = longest.max(o);
                    if take_left {
                        hi += 1
                    } else {
                        lo -= 1
                    }
                    continue;
                }
                _ => break,
            }
        }
        longest = new_longest;
        if take_left { lo -= 1 } else { hi += 1 }
    }
    let mut picked: Vec<usize> = order[lo..hi].to_vec();
    picked.sort_unstable();
    picked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minilm() -> super::super::memory::RunCost {
        super::super::memory::RunCost::of(super::super::memory::Shape {
            hidden: 384,
            heads: 12,
            intermediate: 1536,
        })
    }

    const L: BatchLimits = BatchLimits {
        max_batch_size: 4,
        max_batch_tokens: 100,
        run_memory: None,
        cost: super::super::memory::RunCost::ZERO,
    };

    #[test]
    fn short_texts_are_small_runs_long_batches_large_ones() {
        let cost = minilm();
        assert!(cost.bytes(32, 16) < KEEP_ARENA_BYTES);
        assert!(cost.bytes(9, 256) > KEEP_ARENA_BYTES);
    }

    #[test]
    fn oldest_always_goes_even_when_alone_over_budget() {
        assert_eq!(select_batch([300, 5, 5].into_iter(), L), vec![0]);
    }

    #[test]
    fn groups_similar_lengths_around_the_oldest() {
        // Oldest is 10 tokens; the 11, 9, 12 join; the 50s wait.
        let picked = select_batch([10, 50, 11, 50, 9, 12, 50].into_iter(), L);
        assert_eq!(picked, vec![0, 2, 4, 5]);
    }

    #[test]
    fn respects_token_budget_and_batch_size() {
        // 3 × 30 = 90 fits, 4 × 30 = 120 does not.
        assert_eq!(select_batch([30, 30, 30, 30].into_iter(), L), vec![0, 1, 2]);
        let many = select_batch(std::iter::repeat_n(1, 10), L);
        assert_eq!(many, vec![0, 1, 2, 3]);
    }

    #[test]
    fn respects_the_memory_budget_whatever_the_token_budget() {
        let cost = minilm();
        let roomy = BatchLimits {
            max_batch_size: 64,
            max_batch_tokens: 1 << 20,
            run_memory: Some((cost, 3 * cost.bytes(1, 256))),
            cost,
        };
        // Three 256-token inputs fit the memory budget, a fourth does not.
        assert_eq!(select_batch([256; 6].into_iter(), roomy), vec![0, 1, 2]);
        // Short inputs cost little: the batch size binds first.
        assert_eq!(select_batch([16; 80].into_iter(), roomy).len(), 64);
        // The oldest goes even when it alone is over the budget.
        let tight = BatchLimits {
            run_memory: Some((cost, 1)),
            ..roomy
        };
        assert_eq!(select_batch([256, 256].into_iter(), tight), vec![0]);
    }

    #[test]
    fn one_job_per_batch_then_an_idle_wait_ends() {
        let metrics = crate::metrics::Metrics::new().expect("metrics");
        let one_at_a_time = BatchLimits {
            max_batch_size: 1,
            ..L
        };
        let b = Batcher::new("m", one_at_a_time, metrics);
        let mut replies = Vec::new();
        let jobs = (0..3)
            .map(|_| {
                let (reply, rx) = oneshot::channel();
                replies.push(rx);
                Job {
                    ids: vec![1, 2, 3],
                    enqueued: Instant::now(),
                    reply,
                }
            })
            .collect();
        b.push(jobs).expect("push");
        for _ in 0..3 {
            assert!(matches!(b.next(None), Next::Batch(j) if j.len() == 1));
        }
        // Nothing more: an idle wait says so; a closed queue ends the worker.
        assert!(matches!(
            b.next(Some(Duration::from_millis(10))),
            Next::Idle
        ));
        b.close();
        assert!(matches!(b.next(None), Next::Closed));
    }
}
