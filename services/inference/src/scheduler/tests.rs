//! The scheduler alone: priorities, batch limits, batch compatibility and
//! a failed joined run, with recording runners in place of models.
use super::*;
use crate::tensor::Data;

/// Records the first input value of every run; the first run blocks
/// until released so later requests queue up behind it.
struct Recorder {
    seen: Arc<Mutex<Vec<Vec<f32>>>>,
    gate: Option<std::sync::mpsc::Receiver<()>>,
}

impl Runner for Recorder {
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        if let Some(g) = self.gate.take() {
            let _ = g.recv_timeout(Duration::from_secs(5));
        }
        let Data::F32(v) = &inputs[0].data else {
            return Err("f32".into());
        };
        self.seen.lock().map_err(|e| e.to_string())?.push(v.clone());
        Ok(inputs)
    }
}

fn job(value: f32, priority: u64) -> (Job, oneshot::Receiver<Result<Done, InferError>>) {
    let (tx, rx) = oneshot::channel();
    (
        Job {
            inputs: vec![Tensor {
                name: "x".into(),
                shape: vec![1, 1],
                data: Data::F32(vec![value]),
            }],
            rows: 1,
            priority,
            timeout: None,
            enqueued: Instant::now(),
            reply: tx,
            span: tracing::Span::none(),
            queue_span: None,
        },
        rx,
    )
}

/// Refuses any run of more than one row: stands for a model that fails
/// on one caller's data.
struct OneRowOnly;

impl Runner for OneRowOnly {
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        if inputs[0].shape[0] > 1 {
            return Err("more than one row".into());
        }
        Ok(inputs)
    }
}

fn named(names: &[&str], value: f32) -> Job {
    let (mut j, _) = job(value, 0);
    j.inputs = names
        .iter()
        .map(|n| Tensor {
            name: (*n).into(),
            shape: vec![1, 1],
            data: Data::F32(vec![value]),
        })
        .collect();
    j
}

#[test]
fn only_requests_with_the_same_inputs_share_a_batch() {
    let ab = named(&["a", "b"], 1.0);
    assert!(compatible(&ab, &named(&["a", "b"], 2.0)));
    assert!(!compatible(&ab, &named(&["a"], 2.0)));
    assert!(!compatible(&ab, &named(&["a", "c"], 2.0)));
    assert!(!compatible(&ab, &named(&["b", "a"], 2.0)));
    let mut other_type = named(&["a", "b"], 2.0);
    other_type.inputs[1].data = Data::F64(vec![2.0]);
    assert!(!compatible(&ab, &other_type));
    let mut other_rank = named(&["a", "b"], 2.0);
    other_rank.inputs[0].shape = vec![1];
    assert!(!compatible(&ab, &other_rank));
}

#[tokio::test]
async fn a_failed_batch_runs_its_requests_alone() -> Result<(), Box<dyn std::error::Error>> {
    let s = Scheduler::start(
        "m",
        1,
        Policy {
            max_queue_delay: Duration::from_millis(50),
            ..policy(8)
        },
        vec![Box::new(OneRowOnly)],
        Metrics::new()?,
        Arc::new(Stats::default()),
    )?;
    let mut replies = Vec::new();
    for v in 0..4 {
        let (j, r) = job(v as f32, 0);
        s.submit(j)?;
        replies.push(r);
    }
    for (v, r) in replies.into_iter().enumerate() {
        let done = r.await??;
        assert_eq!(done.outputs[0].data, Data::F32(vec![v as f32]));
    }
    Ok(())
}

fn policy(max_batch_size: usize) -> Policy {
    Policy {
        max_batch_size,
        dynamic: true,
        max_queue_delay: Duration::ZERO,
        preferred: Vec::new(),
        max_queue_size: 16,
        queue_setting: "test",
        default_timeout: None,
        allow_timeout_override: true,
        priority_levels: 2,
        default_priority: 2,
    }
}

#[tokio::test]
async fn higher_priority_requests_run_first() -> Result<(), Box<dyn std::error::Error>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (release, gate) = std::sync::mpsc::channel();
    let metrics = Metrics::new()?;
    let s = Scheduler::start(
        "m",
        1,
        policy(1),
        vec![Box::new(Recorder {
            seen: Arc::clone(&seen),
            gate: Some(gate),
        })],
        metrics,
        Arc::new(Stats::default()),
    )?;
    let (first, r0) = job(0.0, 2);
    s.submit(first)?;
    // Let the worker take the first job and block in it.
    while s.queued() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (low, r1) = job(1.0, 2);
    let (high, r2) = job(2.0, 1);
    let (default, r3) = job(3.0, 0);
    s.submit(low)?;
    s.submit(high)?;
    s.submit(default)?;
    release.send(())?;
    for r in [r0, r1, r2, r3] {
        r.await??;
    }
    let order: Vec<f32> = seen
        .lock()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|v| v[0])
        .collect();
    // Priority 1 first; then level 2 (the default) in arrival order.
    assert_eq!(order, vec![0.0, 2.0, 1.0, 3.0]);
    Ok(())
}

#[tokio::test]
async fn dynamic_batches_stop_at_max_batch_size_and_keep_rows_apart()
-> Result<(), Box<dyn std::error::Error>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (release, gate) = std::sync::mpsc::channel();
    let s = Scheduler::start(
        "m",
        1,
        policy(2),
        vec![Box::new(Recorder {
            seen: Arc::clone(&seen),
            gate: Some(gate),
        })],
        Metrics::new()?,
        Arc::new(Stats::default()),
    )?;
    let mut replies = Vec::new();
    for v in 0..5 {
        let (j, r) = job(v as f32, 0);
        s.submit(j)?;
        replies.push(r);
    }
    release.send(())?;
    for (v, r) in replies.into_iter().enumerate() {
        let done = r.await??;
        // Each request gets back exactly its own row.
        assert_eq!(done.outputs[0].data, Data::F32(vec![v as f32]));
    }
    let runs: Vec<usize> = seen
        .lock()
        .map_err(|e| e.to_string())?
        .iter()
        .map(Vec::len)
        .collect();
    assert!(runs.iter().all(|&n| n <= 2), "{runs:?}");
    assert!(runs.contains(&2), "no batch formed: {runs:?}");
    Ok(())
}
