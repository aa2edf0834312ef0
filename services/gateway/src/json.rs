//! The JSON forms every JSON face shares (the HTTP API, its server-sent
//! events, the MCP tools): pipeline inputs from JSON, a finished run as
//! JSON. Written once so the faces cannot answer differently.

use std::collections::HashMap;

use serde_json::{Map, Value as Json, json};

use crate::{
    core::{PipelineRun, StepReport},
    error::GatewayError,
    tensor::{ShapeLimits, Tensor},
};

fn step_json(s: &StepReport) -> Json {
    json!({
        "step": s.step,
        "service": s.service,
        "model": s.model,
        "model_version": s.version,
        "fallback": s.fallback,
        "arm": s.arm,
        "started_us": s.started.as_micros() as u64,
        "duration_us": s.duration.as_micros() as u64,
    })
}

/// A finished run as JSON: outputs by name, then the calls made.
pub fn run_json(pipeline: &str, run: &PipelineRun) -> Result<Json, GatewayError> {
    let mut outputs = Map::new();
    for (k, t) in &run.outputs {
        outputs.insert(k.clone(), t.to_json(k)?);
    }
    Ok(json!({
        "pipeline": pipeline,
        "outputs": outputs,
        "steps": run.steps.iter().map(step_json).collect::<Vec<_>>(),
    }))
}

/// JSON inputs as tensors, each named `inputs.<name>` in errors.
pub fn inputs_from_json(
    inputs: &Map<String, Json>,
    limits: &ShapeLimits,
) -> Result<HashMap<String, Tensor>, GatewayError> {
    inputs
        .iter()
        .map(|(k, v)| {
            Ok((
                k.clone(),
                Tensor::from_json(&format!("inputs.{k}"), v, limits)?,
            ))
        })
        .collect()
}
