//! The request queue of one model version and the worker threads that run
//! it, with Triton's dynamic-batching semantics:
//!
//! - requests wait in a bounded queue (full → RESOURCE_EXHAUSTED at once),
//!   ordered by priority level, then arrival;
//! - with `dynamic_batching`, a worker takes the oldest request plus every
//!   later compatible one (same trailing shapes) while the batch stays
//!   within `max_batch_size`; it runs at once when the batch is full or of
//!   a preferred size, otherwise it waits at most
//!   `max_queue_delay_microseconds` after the oldest request arrived;
//! - a request whose queue timeout passes is answered DEADLINE_EXCEEDED and
//!   never run; one whose caller left is dropped;
//! - the batch is one model run on the concatenated inputs, split back by
//!   rows, so batching never changes a result.
//!
//! Workers are OS threads, one per model instance, each owning its runner:
//! model runs never touch the async reactor.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::oneshot;

use crate::{backend::Runner, error::InferError, metrics::Metrics, tensor::Tensor};

/// Batching and queueing rules of one model (from its config).
#[derive(Clone, Debug)]
pub struct Policy {
    /// 0: the model has no batch axis.
    pub max_batch_size: usize,
    pub dynamic: bool,
    pub max_queue_delay: Duration,
    pub preferred: Vec<usize>,
    pub max_queue_size: usize,
    /// Which setting bounds the queue, for the error message.
    pub queue_setting: &'static str,
    pub default_timeout: Option<Duration>,
    pub allow_timeout_override: bool,
    /// 0: one level.
    pub priority_levels: u64,
    pub default_priority: u64,
}

/// What a request gets back.
#[derive(Debug)]
pub struct Done {
    /// Every output of the model, in signature order, this request's rows.
    pub outputs: Vec<Tensor>,
    pub queued: Duration,
    pub compute: Duration,
}

/// One request waiting for a model run.
pub struct Job {
    pub inputs: Vec<Tensor>,
    /// Rows along the batch axis (1 for unbatched models).
    pub rows: usize,
    /// 1 = highest; 0 = the model's default.
    pub priority: u64,
    /// Longest time in the queue.
    pub timeout: Option<Duration>,
    pub enqueued: Instant,
    pub reply: oneshot::Sender<Result<Done, InferError>>,
    /// The call's span: the batch run is recorded under it.
    pub span: tracing::Span,
    /// Open while the request waits; closed when a worker takes it.
    pub queue_span: Option<tracing::Span>,
}

/// Cumulative statistics (ModelStatistics).
#[derive(Default)]
pub struct Stats {
    pub success_count: AtomicU64,
    pub success_ns: AtomicU64,
    pub fail_count: AtomicU64,
    pub fail_ns: AtomicU64,
    pub queue_count: AtomicU64,
    pub queue_ns: AtomicU64,
    pub compute_count: AtomicU64,
    pub compute_ns: AtomicU64,
    pub inference_count: AtomicU64,
    pub execution_count: AtomicU64,
    pub last_inference_ms: AtomicU64,
    /// batch size → (runs, ns)
    pub batches: Mutex<BTreeMap<u64, (u64, u64)>>,
}

/// (priority, index) of each picked request, total rows, oldest arrival.
type Pick = (Vec<(u64, usize)>, usize, Instant);

struct State {
    /// priority level → FIFO.
    queues: BTreeMap<u64, VecDeque<Job>>,
    len: usize,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    ready: Condvar,
    policy: Policy,
    model: String,
    version: i64,
    metrics: Metrics,
    stats: Arc<Stats>,
}

/// The queue of one model version; dropping it stops its workers once the
/// queue is empty.
pub struct Scheduler {
    shared: Arc<Shared>,
}

impl Scheduler {
    /// Starts one worker thread per runner.
    pub fn start(
        model: &str,
        version: i64,
        policy: Policy,
        runners: Vec<Box<dyn Runner>>,
        metrics: Metrics,
        stats: Arc<Stats>,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queues: BTreeMap::new(),
                len: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            policy,
            model: model.to_owned(),
            version,
            metrics,
            stats,
        });
        for (i, runner) in runners.into_iter().enumerate() {
            let s = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("infer-{model}-{version}-{i}"))
                .spawn(move || s.work(runner))?;
        }
        Ok(Self { shared })
    }

    pub fn policy(&self) -> &Policy {
        &self.shared.policy
    }

    /// Queues a request, or refuses it at once when the queue is full.
    pub fn submit(&self, mut job: Job) -> Result<(), InferError> {
        let p = &self.shared.policy;
        if job.priority == 0 || (p.priority_levels > 0 && job.priority > p.priority_levels) {
            job.priority = p.default_priority;
        }
        if p.priority_levels == 0 {
            job.priority = 0;
        }
        let mut st = self.shared.lock();
        if st.closed {
            return Err(InferError::ShuttingDown);
        }
        if st.len >= p.max_queue_size {
            return Err(InferError::QueueFull {
                model: self.shared.model.clone(),
                version: self.shared.version,
                queued: st.len,
                max: p.max_queue_size,
                setting: p.queue_setting,
            });
        }
        st.queues.entry(job.priority).or_default().push_back(job);
        st.len += 1;
        self.shared.gauge(st.len);
        drop(st);
        self.shared.ready.notify_one();
        Ok(())
    }

    /// Requests waiting.
    pub fn queued(&self) -> usize {
        self.shared.lock().len
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
    }
}

/// Can share one batch: the same set of inputs (names, in signature order,
/// as the API decodes them), each of the same datatype, rank and trailing
/// shape. Anything else runs in a batch of its own: a request sending an
/// optional input must never be joined with one that leaves it out.
fn compatible(a: &Job, b: &Job) -> bool {
    a.inputs.len() == b.inputs.len()
        && a.inputs.iter().zip(&b.inputs).all(|(x, y)| {
            x.name == y.name
                && x.data.dtype() == y.data.dtype()
                && x.shape.len() == y.shape.len()
                && x.shape.get(1..) == y.shape.get(1..)
        })
}

/// The batch's input `k`: that input of every request, found by name (never
/// by position alone), concatenated along the batch axis.
fn join(jobs: &[Job], k: usize) -> Result<Tensor, InferError> {
    let name = &jobs[0].inputs[k].name;
    let parts: Vec<&Tensor> =
        jobs.iter()
            .map(|j| {
                j.inputs.iter().find(|t| &t.name == name).ok_or_else(|| {
                    InferError::invalid(format!("input {name:?} missing in a batch"))
                })
            })
            .collect::<Result<_, _>>()?;
    Tensor::concat(&parts)
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn gauge(&self, len: usize) {
        let v = self.version.to_string();
        self.metrics
            .queue_depth
            .with_label_values(&[&self.model, &v])
            .set(len as i64);
    }

    /// Answers and removes requests whose caller left or whose queue
    /// timeout passed.
    fn expire(&self, st: &mut State, now: Instant) {
        let mut removed = 0;
        for q in st.queues.values_mut() {
            q.retain_mut(|j| {
                if j.reply.is_closed() {
                    removed += 1;
                    return false;
                }
                if let Some(t) = j.timeout
                    && now.duration_since(j.enqueued) > t
                {
                    removed += 1;
                    let waited = now.duration_since(j.enqueued);
                    let (tx, _) = oneshot::channel();
                    let reply = std::mem::replace(&mut j.reply, tx);
                    let _ = reply.send(Err(InferError::Timeout {
                        model: self.model.clone(),
                        waited_us: waited.as_micros() as u64,
                        timeout_us: t.as_micros() as u64,
                    }));
                    return false;
                }
                true
            });
        }
        st.len -= removed;
    }

    /// Picks the next batch: (priority, index) of each request in order,
    /// total rows, and when the oldest arrived.
    fn pick(&self, st: &State) -> Option<Pick> {
        let p = &self.policy;
        let mut it = st
            .queues
            .iter()
            .flat_map(|(&prio, q)| q.iter().enumerate().map(move |(i, j)| (prio, i, j)));
        let (prio0, i0, first) = it.next()?;
        let mut chosen = vec![(prio0, i0)];
        let mut rows = first.rows;
        if p.dynamic && p.max_batch_size > 0 {
            for (prio, i, j) in it {
                if rows >= p.max_batch_size {
                    break;
                }
                if rows + j.rows <= p.max_batch_size && compatible(first, j) {
                    chosen.push((prio, i));
                    rows += j.rows;
                }
            }
        }
        Some((chosen, rows, first.enqueued))
    }

    fn next_batch(&self) -> Option<Vec<Job>> {
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            self.expire(&mut st, now);
            if let Some((chosen, rows, oldest)) = self.pick(&st) {
                let p = &self.policy;
                let deadline = oldest + p.max_queue_delay;
                let ready = !p.dynamic
                    || p.max_batch_size == 0
                    || rows >= p.max_batch_size
                    || p.preferred.contains(&rows)
                    || now >= deadline
                    || st.closed;
                if ready {
                    let mut jobs = Vec::with_capacity(chosen.len());
                    // Remove back to front so earlier indexes stay valid.
                    for &(prio, i) in chosen.iter().rev() {
                        if let Some(q) = st.queues.get_mut(&prio)
                            && let Some(j) = q.remove(i)
                        {
                            jobs.push(j);
                        }
                    }
                    jobs.reverse();
                    for j in &mut jobs {
                        j.queue_span = None;
                    }
                    st.queues.retain(|_, q| !q.is_empty());
                    st.len -= jobs.len();
                    self.gauge(st.len);
                    return Some(jobs);
                }
                let wait = deadline.saturating_duration_since(now);
                st = self
                    .ready
                    .wait_timeout(st, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                continue;
            }
            if st.closed {
                return None;
            }
            // Wake now and then to expire timed-out requests.
            st = self
                .ready
                .wait_timeout(st, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn work(self: Arc<Self>, mut runner: Box<dyn Runner>) {
        while let Some(jobs) = self.next_batch() {
            self.run_batch(runner.as_mut(), jobs);
        }
    }

    fn run_batch(&self, runner: &mut dyn Runner, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let start = Instant::now();
        let rows: Vec<usize> = jobs.iter().map(|j| j.rows).collect();
        let total: usize = rows.iter().sum();
        let n_inputs = jobs[0].inputs.len();
        let inputs: Result<Vec<Tensor>, InferError> = if jobs.len() == 1 {
            Ok(jobs[0].inputs.clone())
        } else {
            (0..n_inputs).map(|k| join(&jobs, k)).collect()
        };
        // One `batch run` span under each request's span (a batch serves
        // several calls, each with its own trace).
        let run_spans: Vec<tracing::Span> = jobs
            .iter()
            .map(|j| {
                mlmesh_runtime::call_span!(parent: &j.span, "infer.batch_run", model = %self.model, version = self.version, batch_rows = total, batch_requests = jobs.len())
            })
            .collect();
        let result = inputs.and_then(|inputs| {
            runner.run(inputs).map_err(|reason| InferError::Run {
                model: self.model.clone(),
                reason,
            })
        });
        drop(run_spans);
        let compute = start.elapsed();
        let v = self.version.to_string();
        let labels = [self.model.as_str(), v.as_str()];
        self.metrics
            .compute_seconds
            .with_label_values(&labels)
            .observe(compute.as_secs_f64());
        self.metrics
            .batch_size
            .with_label_values(&labels)
            .observe(total as f64);
        let s = &self.stats;
        let ns = compute.as_nanos() as u64;
        s.execution_count.fetch_add(1, Ordering::Relaxed);
        s.compute_count.fetch_add(1, Ordering::Relaxed);
        s.compute_ns.fetch_add(ns, Ordering::Relaxed);
        {
            let mut b = s.batches.lock().unwrap_or_else(|p| p.into_inner());
            let e = b.entry(total as u64).or_default();
            e.0 += 1;
            e.1 += ns;
        }
        match result {
            Ok(outputs) => {
                s.inference_count.fetch_add(total as u64, Ordering::Relaxed);
                let now_ms = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                s.last_inference_ms.store(now_ms, Ordering::Relaxed);
                // Per output, this request's rows.
                let split: Result<Vec<Vec<Tensor>>, InferError> = if jobs.len() == 1 {
                    Ok(outputs.into_iter().map(|t| vec![t]).collect())
                } else {
                    outputs.iter().map(|t| t.split(&rows)).collect()
                };
                match split {
                    Ok(mut per_output) => {
                        for (idx, job) in jobs.into_iter().enumerate().rev() {
                            let outs = per_output
                                .iter_mut()
                                .map(|parts| parts.swap_remove(idx))
                                .collect();
                            let queued = start.duration_since(job.enqueued);
                            self.record_queue(queued, &labels);
                            let _ = job.reply.send(Ok(Done {
                                outputs: outs,
                                queued,
                                compute,
                            }));
                        }
                    }
                    Err(e) => self.fail_or_retry(runner, jobs, &e.to_string()),
                }
            }
            Err(e) => self.fail_or_retry(runner, jobs, &e.to_string()),
        }
    }

    /// A run of several requests failed: one request's data may be what
    /// the model refuses, so each runs again alone and only the ones that
    /// fail on their own are answered with an error. Requests never fail
    /// each other.
    fn fail_or_retry(&self, runner: &mut dyn Runner, jobs: Vec<Job>, reason: &str) {
        if jobs.len() == 1 {
            return self.fail_all(jobs, reason);
        }
        tracing::warn!(model = %self.model, version = self.version, requests = jobs.len(), %reason, "batched run failed; running its requests one by one");
        for job in jobs {
            self.run_batch(runner, vec![job]);
        }
    }

    fn record_queue(&self, queued: Duration, labels: &[&str; 2]) {
        self.metrics
            .queue_seconds
            .with_label_values(labels)
            .observe(queued.as_secs_f64());
        self.stats.queue_count.fetch_add(1, Ordering::Relaxed);
        self.stats
            .queue_ns
            .fetch_add(queued.as_nanos() as u64, Ordering::Relaxed);
    }

    fn fail_all(&self, jobs: Vec<Job>, reason: &str) {
        tracing::error!(model = %self.model, version = self.version, %reason, "model run failed");
        for job in jobs {
            let _ = job.reply.send(Err(InferError::Run {
                model: self.model.clone(),
                reason: reason.to_owned(),
            }));
        }
    }
}

#[cfg(test)]
mod tests;
