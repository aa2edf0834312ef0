//! Shadow traffic: a sampled share of a model's live ModelInfer calls is
//! sent to a shadow model (version) as well, after the primary has
//! answered; the shadow's answer is compared with the primary's and never
//! returned. The primary never waits for, and never fails because of, its
//! shadow: the only work on its path is reading the model's name (the
//! request's first field, without decoding the message), one random draw
//! and, when sampled, taking a slot of `shadow.max_in_flight` without
//! waiting (none free: the call is counted as skipped) and spawning the
//! comparison.
//!
//! Per rule: calls, agreements, disagreements, shadow errors, skips,
//! output drift (the largest absolute difference of an answer) and both
//! latencies, as metrics (`mlmesh_gateway_shadow_*`) and as a report
//! (`GET /v1/shadow`) with the agreement rate's 95% Wilson interval.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use mlmesh_proto::inference as pb;
use mlmesh_tensor::DataType;
use prost::Message as _;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::{
    downstream::{Deadline, Pool, rpc},
    metrics::Metrics,
    settings::shadow::{Compare, ShadowRule, ShadowSettings},
};

/// Figures kept per rule for the report's quantiles (the newest).
const KEPT: usize = 10_000;

/// A bounded window of the newest figures.
#[derive(Debug, Default)]
struct Window(VecDeque<f64>);

impl Window {
    fn push(&mut self, v: f64) {
        if self.0.len() == KEPT {
            self.0.pop_front();
        }
        self.0.push_back(v);
    }

    fn quantiles(&self) -> serde_json::Value {
        let mut v: Vec<f64> = self.0.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        let q = |q: f64| {
            if v.is_empty() {
                return None;
            }
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            Some(v[rank - 1])
        };
        json!({"n": v.len(), "p50": q(0.5), "p99": q(0.99), "max": v.last()})
    }
}

#[derive(Debug, Default)]
struct Stats {
    calls: u64,
    agree: u64,
    disagree: u64,
    errors: u64,
    skipped: u64,
    drift: Window,
    shadow_ms: Window,
    primary_ms: Window,
    last_error: String,
}

/// A sampled call's rule and its slot of `shadow.max_in_flight` (given
/// back when the comparison ends).
#[derive(Debug)]
pub struct Ticket {
    rule: usize,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// What one comparison found.
#[derive(Debug, PartialEq)]
pub struct Comparison {
    pub agree: bool,
    /// The largest absolute difference of the compared elements.
    pub drift: f64,
}

/// The shadows of one gateway.
pub struct Shadows {
    rules: Vec<ShadowRule>,
    stats: Vec<Mutex<Stats>>,
    slots: Arc<Semaphore>,
    timeout: Duration,
    pool: Arc<Pool>,
    metrics: Metrics,
}

impl std::fmt::Debug for Shadows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadows")
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

/// The rule of a model, as an index.
fn rule_of(rules: &[ShadowRule], model: &str) -> Option<usize> {
    rules.iter().position(|r| r.model == model)
}

/// A ModelInferRequest's `model_name` (field 1) when it is the message's
/// first field, as encoders write it; None otherwise (then the call is not
/// shadowed). Reads a few bytes, decodes nothing else.
pub fn model_name_of(msg: &[u8]) -> Option<&str> {
    let (&tag, rest) = msg.split_first()?;
    if tag != 0x0a {
        return None;
    }
    let (mut len, mut shift, mut used) = (0usize, 0u32, 0usize);
    for &b in rest.iter().take(5) {
        len |= usize::from(b & 0x7f) << shift;
        used += 1;
        if b & 0x80 == 0 {
            return rest
                .get(used..used.checked_add(len)?)
                .and_then(|s| std::str::from_utf8(s).ok());
        }
        shift += 7;
    }
    None
}

/// One cheap pseudo-random draw in [0, 1) per call (no lock; quality is
/// that of sampling, not of cryptography).
fn draw() -> f64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                ^ 0x9E37_79B9_7F4A_7C15)
                | 1,
        );
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

impl Shadows {
    pub fn new(settings: &ShadowSettings, pool: Arc<Pool>, metrics: Metrics) -> Self {
        Self {
            rules: settings.rules.clone(),
            stats: settings.rules.iter().map(|_| Mutex::default()).collect(),
            slots: Arc::new(Semaphore::new(settings.max_in_flight)),
            timeout: Duration::from_millis(settings.timeout_ms),
            pool,
            metrics,
        }
    }

    /// Whether any rule exists (otherwise nothing is ever done).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether a typed call of `model` is shadowed this time: its ticket
    /// (the caller then keeps a copy of the request for [`Self::offer`]).
    pub fn ticket(&self, model: &str) -> Option<Ticket> {
        self.take(model)
    }

    /// A sampled rule's index and a slot, or None (not shadowed, not
    /// sampled, or no slot free: counted as skipped).
    fn take(&self, model: &str) -> Option<Ticket> {
        if self.is_empty() {
            return None;
        }
        let i = rule_of(&self.rules, model)?;
        if draw() >= self.rules[i].fraction {
            return None;
        }
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => Some(Ticket {
                rule: i,
                _permit: permit,
            }),
            Err(_) => {
                self.count(i, "skipped");
                if let Ok(mut s) = self.stats[i].lock() {
                    s.skipped += 1;
                }
                None
            }
        }
    }

    fn count(&self, i: usize, outcome: &str) {
        self.metrics
            .shadow_calls
            .with_label_values(&[&self.rules[i].model, outcome])
            .inc();
    }

    /// A forwarded (undecoded) call and its answer.
    pub fn offer_raw(self: &Arc<Self>, request: &Bytes, response: &Bytes, primary: Duration) {
        let Some(ticket) = model_name_of(request).and_then(|m| self.take(m)) else {
            return;
        };
        let (this, request, response) = (Arc::clone(self), request.clone(), response.clone());
        tokio::spawn(async move {
            let decoded = pb::ModelInferRequest::decode(request)
                .and_then(|rq| pb::ModelInferResponse::decode(response).map(|rs| (rq, rs)));
            match decoded {
                Ok((rq, rs)) => this.run(ticket, rq, rs, primary).await,
                Err(e) => this.failed(ticket.rule, format!("undecodable call: {e}")),
            }
        });
    }

    /// A typed call (HTTP face, pipelines) its [`Self::ticket`] sampled,
    /// and its answer.
    pub fn offer(
        self: &Arc<Self>,
        ticket: Ticket,
        request: pb::ModelInferRequest,
        response: &pb::ModelInferResponse,
        primary: Duration,
    ) {
        let (this, rs) = (Arc::clone(self), response.clone());
        tokio::spawn(async move { this.run(ticket, request, rs, primary).await });
    }

    /// The shadow call and its comparison; the ticket's slot is held to
    /// the end.
    async fn run(
        &self,
        ticket: Ticket,
        mut rq: pb::ModelInferRequest,
        primary_answer: pb::ModelInferResponse,
        primary: Duration,
    ) {
        let i = ticket.rule;
        let rule = &self.rules[i];
        rq.model_name = rule.shadow_model.clone();
        rq.model_version = rule.shadow_version.clone();
        let start = Instant::now();
        let answer = self
            .pool
            .unary(&rpc::MODEL_INFER, Deadline::after(self.timeout), rq)
            .await;
        let took = start.elapsed();
        self.metrics
            .shadow_seconds
            .with_label_values(&[&rule.model])
            .observe(took.as_secs_f64());
        let shadow_answer = match answer {
            Ok(a) => a,
            Err(e) => return self.failed(i, e.to_string()),
        };
        match compare(rule, &primary_answer, &shadow_answer) {
            Ok(c) => {
                self.count(i, if c.agree { "agree" } else { "disagree" });
                self.metrics
                    .shadow_drift
                    .with_label_values(&[&rule.model])
                    .observe(c.drift);
                if let Ok(mut s) = self.stats[i].lock() {
                    s.calls += 1;
                    if c.agree {
                        s.agree += 1;
                    } else {
                        s.disagree += 1;
                    }
                    s.drift.push(c.drift);
                    s.shadow_ms.push(took.as_secs_f64() * 1000.0);
                    s.primary_ms.push(primary.as_secs_f64() * 1000.0);
                }
            }
            Err(why) => self.failed(i, why),
        }
    }

    fn failed(&self, i: usize, why: String) {
        self.count(i, "error");
        tracing::debug!(model = %self.rules[i].model, shadow = %self.rules[i].shadow_model, error = %why, "shadow call failed");
        if let Ok(mut s) = self.stats[i].lock() {
            s.calls += 1;
            s.errors += 1;
            s.last_error = why.chars().take(512).collect();
        }
    }

    /// Every rule's figures.
    pub fn report(&self) -> serde_json::Value {
        let rules: Vec<_> = self
            .rules
            .iter()
            .zip(&self.stats)
            .map(|(r, s)| {
                let s = match s.lock() {
                    Ok(s) => s,
                    Err(p) => p.into_inner(),
                };
                let compared = s.agree + s.disagree;
                let (low, high) = wilson(s.agree, compared);
                json!({
                    "model": r.model,
                    "shadow_model": r.shadow_model,
                    "shadow_version": r.shadow_version,
                    "fraction": r.fraction,
                    "compare": r.compare,
                    "output": r.output,
                    "atol": r.atol,
                    "rtol": r.rtol,
                    "calls": s.calls,
                    "agree": s.agree,
                    "disagree": s.disagree,
                    "errors": s.errors,
                    "skipped": s.skipped,
                    "agreement": (compared > 0).then(|| s.agree as f64 / compared as f64),
                    "agreement_interval": (compared > 0).then(|| json!({"low": low, "high": high, "confidence": 0.95})),
                    "drift": s.drift.quantiles(),
                    "shadow_ms": s.shadow_ms.quantiles(),
                    "primary_ms": s.primary_ms.quantiles(),
                    "last_error": s.last_error,
                })
            })
            .collect();
        json!({ "rules": rules })
    }
}

/// The 95% Wilson score interval of `k` successes in `n`.
pub fn wilson(k: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n, z) = (k as f64, n as f64, 1.959_963_984_540_054);
    let p = k / n;
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * ((p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt()) / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// An output's elements as numbers (raw contents; booleans as 0/1), and
/// its shape.
fn output(r: &pb::ModelInferResponse, name: &str) -> Result<(Vec<f64>, Vec<i64>), String> {
    let i = r
        .outputs
        .iter()
        .position(|o| o.name == name)
        .ok_or_else(|| format!("no output {name:?}"))?;
    let o = &r.outputs[i];
    let raw = r
        .raw_output_contents
        .get(i)
        .ok_or_else(|| format!("output {name:?} has no raw contents"))?;
    let dt = DataType::parse(&o.datatype)
        .ok_or_else(|| format!("output {name:?}: datatype {}", o.datatype))?;
    let values = mlmesh_tensor::json::from_raw(dt, raw, name).map_err(|e| e.to_string())?;
    Ok((
        values
            .iter()
            .map(|v| {
                v.as_f64()
                    .or_else(|| v.as_bool().map(|b| f64::from(u8::from(b))))
                    .unwrap_or(f64::NAN)
            })
            .collect(),
        o.shape.clone(),
    ))
}

/// Compares two answers as `rule` says.
pub fn compare(
    rule: &ShadowRule,
    primary: &pb::ModelInferResponse,
    shadow: &pb::ModelInferResponse,
) -> Result<Comparison, String> {
    let names: Vec<&str> = if rule.output.is_empty() {
        primary.outputs.iter().map(|o| o.name.as_str()).collect()
    } else {
        vec![rule.output.as_str()]
    };
    let (mut agree, mut drift) = (true, 0f64);
    for name in names {
        let (a, shape) = output(primary, name)?;
        let (b, _) = output(shadow, name).map_err(|e| format!("shadow: {e}"))?;
        if a.len() != b.len() {
            return Ok(Comparison {
                agree: false,
                drift: f64::INFINITY,
            });
        }
        for (x, y) in a.iter().zip(&b) {
            let d = (x - y).abs();
            if d.is_nan() {
                if !(x.is_nan() && y.is_nan()) {
                    agree &= rule.compare != Compare::Tensor;
                    drift = f64::INFINITY;
                }
                continue;
            }
            drift = drift.max(d);
            if rule.compare == Compare::Tensor && d > rule.atol + rule.rtol * x.abs() {
                agree = false;
            }
        }
        if rule.compare == Compare::Argmax {
            let cols = shape.last().copied().unwrap_or(1).max(1) as usize;
            let argmax = |v: &[f64]| -> Vec<usize> {
                v.chunks(cols)
                    .map(|row| {
                        row.iter()
                            .enumerate()
                            .fold((0, f64::NEG_INFINITY), |best, (j, &x)| {
                                if x > best.1 { (j, x) } else { best }
                            })
                            .0
                    })
                    .collect()
            };
            agree &= argmax(&a) == argmax(&b);
        }
    }
    Ok(Comparison { agree, drift })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(values: &[f32]) -> pb::ModelInferResponse {
        pb::ModelInferResponse {
            outputs: vec![pb::model_infer_response::InferOutputTensor {
                name: "p".into(),
                datatype: "FP32".into(),
                shape: vec![(values.len() / 3) as i64, 3],
                ..Default::default()
            }],
            raw_output_contents: vec![values.iter().flat_map(|v| v.to_le_bytes()).collect()],
            ..Default::default()
        }
    }

    fn rule(compare: Compare) -> ShadowRule {
        ShadowRule {
            model: "m".into(),
            shadow_model: "s".into(),
            shadow_version: String::new(),
            fraction: 1.0,
            compare,
            output: "p".into(),
            atol: 1e-3,
            rtol: 0.0,
        }
    }

    #[test]
    fn answers_are_compared_by_tolerance_or_by_class() {
        let a = answer(&[0.1, 0.7, 0.2, 0.5, 0.3, 0.2]);
        let close = answer(&[0.1005, 0.7, 0.2, 0.5, 0.3, 0.2]);
        let other_class = answer(&[0.1, 0.2, 0.7, 0.5, 0.3, 0.2]);
        let t = compare(&rule(Compare::Tensor), &a, &close).expect("compares");
        assert!(t.agree && (t.drift - 0.0005).abs() < 1e-6, "{t:?}");
        assert!(
            !compare(&rule(Compare::Tensor), &a, &other_class)
                .expect("c")
                .agree
        );
        let m = compare(&rule(Compare::Argmax), &a, &other_class).expect("c");
        assert!(!m.agree && (m.drift - 0.5).abs() < 1e-6, "{m:?}");
        let shifted = answer(&[0.2, 0.6, 0.2, 0.6, 0.3, 0.1]);
        assert!(
            compare(&rule(Compare::Argmax), &a, &shifted)
                .expect("c")
                .agree
        );
        let missing = pb::ModelInferResponse::default();
        assert!(compare(&rule(Compare::Tensor), &a, &missing).is_err());
    }

    #[test]
    fn the_model_name_is_read_without_decoding() {
        let rq = pb::ModelInferRequest {
            model_name: "iris-logreg".into(),
            model_version: "3".into(),
            ..Default::default()
        };
        let bytes = rq.encode_to_vec();
        assert_eq!(model_name_of(&bytes), Some("iris-logreg"));
        assert_eq!(model_name_of(&[0x12, 1, b'x']), None, "another field first");
        assert_eq!(model_name_of(&[0x0a, 9, b'x']), None, "truncated");
        assert_eq!(model_name_of(&[]), None);
    }

    #[test]
    fn wilson_matches_its_closed_form() {
        // 45 of 50: the Wilson (1927) interval computed independently in
        // Python from its formula, to 4 places.
        let (lo, hi) = wilson(45, 50);
        assert!(
            (lo - 0.7864).abs() < 1e-4 && (hi - 0.9565).abs() < 1e-4,
            "{lo} {hi}"
        );
        assert_eq!(wilson(0, 0), (0.0, 1.0));
    }
}
