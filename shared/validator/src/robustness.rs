//! Robustness probes generated from the model's signature and its first
//! example: NaN, ±Inf, the largest and a denormal float, a wrong datatype,
//! a wrong rank, an empty batch, the maximum batch and one row more. Each
//! must end in a clear status (OK, or INVALID_ARGUMENT / OUT_OF_RANGE /
//! RESOURCE_EXHAUSTED naming the problem) within its deadline — never
//! INTERNAL, UNKNOWN, UNAVAILABLE or a hang — and the service must still
//! be live afterwards. The answers of a batch of N examples must equal the
//! N answers given one at a time.

use std::time::Duration;

use mlmesh_proto::inference::{
    self as inf, grpc_inference_service_client::GrpcInferenceServiceClient,
};
use mlmesh_runtime::client::H2Channel;
use mlmesh_validate::checks::{Answers, CheckResult};
use tonic::Code;

type Client = GrpcInferenceServiceClient<H2Channel>;

/// How long one probe may take before it counts as a hang.
const PROBE_DEADLINE: Duration = Duration::from_secs(10);
/// Rows of the batch compared with single calls.
const BATCH_ROWS: usize = 8;

fn clear(code: Code) -> bool {
    matches!(
        code,
        Code::Ok | Code::InvalidArgument | Code::OutOfRange | Code::ResourceExhausted
    )
}

async fn send(
    client: &mut Client,
    rq: inf::ModelInferRequest,
) -> Result<inf::ModelInferResponse, tonic::Status> {
    let mut r = tonic::Request::new(rq);
    r.set_timeout(PROBE_DEADLINE);
    match tokio::time::timeout(
        PROBE_DEADLINE + Duration::from_secs(1),
        client.model_infer(r),
    )
    .await
    {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded("no answer (hang)")),
    }
}

/// Every float input of `rq` filled with `value`.
fn fill_floats(rq: &inf::ModelInferRequest, value: f32) -> Option<inf::ModelInferRequest> {
    let mut out = rq.clone();
    let mut any = false;
    for (t, raw) in out.inputs.iter().zip(out.raw_input_contents.iter_mut()) {
        if t.datatype == "FP32" {
            let n = raw.len() / 4;
            *raw = std::iter::repeat_n(value.to_le_bytes(), n)
                .flatten()
                .collect::<Vec<u8>>()
                .into();
            any = true;
        }
    }
    any.then_some(out)
}

/// `rows` copies of a one-row request stacked along the batch axis.
fn stacked(rq: &inf::ModelInferRequest, rows: usize) -> inf::ModelInferRequest {
    let mut out = rq.clone();
    for (t, raw) in out.inputs.iter_mut().zip(out.raw_input_contents.iter_mut()) {
        if let Some(d) = t.shape.first_mut() {
            *d = rows as i64;
        }
        *raw = raw.repeat(rows).into();
    }
    out
}

/// Runs the probes against `client`, serving `model` with `max_batch`
/// rows at most (0: not batched); `singles` are the answers the suite's
/// examples got one at a time, `examples` their raw requests.
pub async fn probe(
    client: &mut Client,
    model: &str,
    max_batch: i32,
    examples: &[inf::ModelInferRequest],
    singles: &Answers,
) -> CheckResult {
    let mut outcomes: Vec<(String, Result<Code, String>)> = Vec::new();
    let Some(first) = examples.first() else {
        return CheckResult::new(
            "robustness",
            false,
            "the suite has no example to probe from",
        );
    };
    let mut probes: Vec<(String, inf::ModelInferRequest)> = Vec::new();
    for (name, v) in [
        ("NaN", f32::NAN),
        ("+Inf", f32::INFINITY),
        ("-Inf", f32::NEG_INFINITY),
        ("largest float", f32::MAX),
        ("denormal", f32::from_bits(1)),
    ] {
        if let Some(rq) = fill_floats(first, v) {
            probes.push((name.into(), rq));
        }
    }
    let mut wrong_type = first.clone();
    for t in &mut wrong_type.inputs {
        t.datatype = if t.datatype == "INT64" {
            "FP32"
        } else {
            "INT64"
        }
        .into();
    }
    probes.push(("wrong datatype".into(), wrong_type));
    let mut wrong_rank = first.clone();
    for t in &mut wrong_rank.inputs {
        t.shape.push(1);
    }
    probes.push(("wrong rank".into(), wrong_rank));
    if max_batch > 0 {
        let mut empty = first.clone();
        for (t, raw) in empty
            .inputs
            .iter_mut()
            .zip(empty.raw_input_contents.iter_mut())
        {
            if let Some(d) = t.shape.first_mut() {
                *d = 0;
            }
            *raw = Default::default();
        }
        probes.push(("empty batch".into(), empty));
        probes.push((
            format!("maximum batch ({max_batch})"),
            stacked(first, max_batch as usize),
        ));
        probes.push((
            format!("one row over ({})", max_batch + 1),
            stacked(first, max_batch as usize + 1),
        ));
    }
    for (name, rq) in probes {
        let outcome = match send(client, rq).await {
            Ok(_) => Ok(Code::Ok),
            Err(s) if clear(s.code()) => Ok(s.code()),
            Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
        };
        outcomes.push((name, outcome));
    }
    let live = client
        .server_live(inf::ServerLiveRequest {})
        .await
        .map(|r| r.into_inner().live)
        .unwrap_or(false);
    let batch = batch_agrees(client, model, max_batch, examples, singles).await;
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|(n, o)| o.as_ref().err().map(|e| format!("{n} → {e}")))
        .collect();
    let summary: Vec<String> = outcomes
        .iter()
        .map(|(n, o)| match o {
            Ok(c) => format!("{n}: {c:?}"),
            Err(e) => format!("{n}: {e}"),
        })
        .collect();
    let passed = failed.is_empty() && live && batch.as_ref().is_ok();
    let mut detail = format!("{} probes ({})", outcomes.len(), summary.join(", "));
    if !live {
        detail.push_str("; the service is no longer live");
    }
    match &batch {
        Ok(Some(n)) => detail.push_str(&format!("; a batch of {n} equals {n} single calls")),
        Ok(None) => {}
        Err(e) => detail.push_str(&format!("; {e}")),
    }
    let mut r = CheckResult::new("robustness", passed, detail);
    r.figures.insert("probes".into(), outcomes.len() as f64);
    r.figures.insert("unclear".into(), failed.len() as f64);
    r
}

/// The first rows of the suite sent as one batch, compared output by
/// output with the single answers (atol 1e-5 + rtol 1e-5); `None` when the
/// model is not batched or the examples are not single rows.
async fn batch_agrees(
    client: &mut Client,
    model: &str,
    max_batch: i32,
    examples: &[inf::ModelInferRequest],
    singles: &Answers,
) -> Result<Option<usize>, String> {
    let n = BATCH_ROWS
        .min(examples.len())
        .min(max_batch.max(0) as usize);
    let rows = &examples[..n];
    if n < 2
        || rows
            .iter()
            .any(|r| r.inputs.iter().any(|t| t.shape.first() != Some(&1)))
    {
        return Ok(None);
    }
    let mut rq = rows[0].clone();
    rq.model_name = model.to_owned();
    for (i, (t, raw)) in rq
        .inputs
        .iter_mut()
        .zip(rq.raw_input_contents.iter_mut())
        .enumerate()
    {
        t.shape[0] = n as i64;
        let mut all = Vec::new();
        for r in rows {
            all.extend_from_slice(r.raw_input_contents.get(i).map_or(&[][..], |b| &b[..]));
        }
        *raw = all.into();
    }
    let resp = send(client, rq)
        .await
        .map_err(|s| format!("a batch of {n}: {:?} {}", s.code(), s.message()))?;
    for (o, raw) in resp.outputs.iter().zip(&resp.raw_output_contents) {
        let values = crate::numbers(o, raw).map_err(|e| e.to_string())?;
        let per = values.len() / n;
        for (row, single) in singles.iter().take(n).enumerate() {
            let want: &[f64] = single.get(&o.name).map_or(&[], Vec::as_slice);
            let got = values.get(row * per..(row + 1) * per).unwrap_or(&[]);
            let agree = got.len() == want.len()
                && got
                    .iter()
                    .zip(want)
                    .all(|(g, w)| (g - w).abs() <= 1e-5 + 1e-5 * w.abs());
            if !agree {
                return Err(format!(
                    "output {:?} of row {row} differs in a batch of {n}: {got:?} alone {want:?}",
                    o.name
                ));
            }
        }
    }
    Ok(Some(n))
}
