//! Protocol messages to the service's types and back: an inference
//! request's inputs decoded and checked against the served version (names,
//! datatypes, shapes, batch rows, every byte count) before any work, its
//! parameters, and the metadata and statistics messages.

use mlmesh_proto::inference as pb;

use crate::{
    error::InferError,
    models::{Io, Version},
    tensor::{Data, DataType, Tensor, element_count},
};

pub(crate) fn param_u64(
    p: &std::collections::HashMap<String, pb::InferParameter>,
    key: &str,
) -> Result<Option<u64>, InferError> {
    use pb::infer_parameter::ParameterChoice as C;
    match p.get(key).and_then(|v| v.parameter_choice.as_ref()) {
        None => Ok(None),
        Some(C::Int64Param(i)) if *i >= 0 => Ok(Some(*i as u64)),
        Some(C::Uint64Param(u)) => Ok(Some(*u)),
        Some(other) => Err(InferError::invalid(format!(
            "parameter `{key}` must be a non-negative integer, got {other:?}"
        ))),
    }
}

/// Checks the request's inputs against the served version and decodes them
/// in the model's shapes. Returns the tensors and the batch rows.
pub(crate) fn decode_inputs(
    req: &mut pb::ModelInferRequest,
    v: &Version,
) -> Result<(Vec<Tensor>, usize), InferError> {
    let model = &v.model;
    let raw = std::mem::take(&mut req.raw_input_contents);
    if !raw.is_empty() && raw.len() != req.inputs.len() {
        return Err(InferError::invalid(format!(
            "raw_input_contents has {} entries for {} inputs; send one per input, in order",
            raw.len(),
            req.inputs.len()
        )));
    }
    let names = || {
        v.inputs
            .iter()
            .map(|i| format!("{} {} {:?}", i.name, i.dtype.name(), i.shape))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let batched = v.max_batch_size > 0;
    let mut out: Vec<Tensor> = Vec::with_capacity(req.inputs.len());
    let mut rows: Option<usize> = None;
    for (k, input) in req.inputs.iter().enumerate() {
        let what = format!("input {:?}", input.name);
        let spec: &Io = v
            .inputs
            .iter()
            .find(|s| s.name == input.name)
            .ok_or_else(|| {
                InferError::invalid(format!(
                    "{what} is not an input of model {model:?}; its inputs are: {}",
                    names()
                ))
            })?;
        if out.iter().any(|t| t.name == input.name) {
            return Err(InferError::invalid(format!("{what} is given twice")));
        }
        let dtype = DataType::parse(&input.datatype).ok_or_else(|| {
            InferError::invalid(format!(
                "{what}: datatype {:?} is not a protocol datatype (BOOL, INT8…INT64, UINT8…UINT64, FP16, FP32, FP64, BYTES)",
                input.datatype
            ))
        })?;
        if dtype != spec.dtype {
            return Err(InferError::invalid(format!(
                "{what}: datatype {} was sent; model {model:?} expects {}",
                dtype.name(),
                spec.dtype.name()
            )));
        }
        let fits = input.shape.len() == spec.shape.len()
            && input.shape.iter().all(|&d| d >= 0)
            && input
                .shape
                .iter()
                .zip(&spec.shape)
                .all(|(&a, &b)| b == -1 || a == b);
        if !fits {
            return Err(InferError::invalid(format!(
                "{what}: shape {:?} was sent; model {model:?} expects {:?} (-1: any size)",
                input.shape, spec.shape
            )));
        }
        let r = match input.shape.first() {
            Some(&d) if batched => d as usize,
            // A batched model's signature always has the batch axis first;
            // a rank-0 tensor cannot say how many rows it carries.
            None if batched => {
                return Err(InferError::invalid(format!(
                    "{what}: shape [] has no batch axis; model {model:?} is batched (max_batch_size {}), send [rows, …]",
                    v.max_batch_size
                )));
            }
            _ => 1,
        };
        if batched {
            if r == 0 || r > v.max_batch_size {
                return Err(InferError::invalid(format!(
                    "{what}: batch size {r} is outside 1..={} (max_batch_size of model {model:?})",
                    v.max_batch_size
                )));
            }
            if let Some(prev) = rows
                && prev != r
            {
                return Err(InferError::invalid(format!(
                    "{what}: batch size {r} differs from the other inputs' {prev}"
                )));
            }
        }
        rows = Some(r);
        let count = element_count(&input.shape).ok_or_else(|| {
            InferError::invalid(format!("{what}: shape {:?} is too large", input.shape))
        })?;
        let data = if raw.is_empty() {
            let contents = input.contents.clone().unwrap_or_default();
            Data::from_contents(dtype, count, &contents, &what)?
        } else {
            Data::from_raw(dtype, count, &raw[k], &what)?
        };
        let shape = match &spec.reshape {
            Some(rs) if batched => std::iter::once(r as i64)
                .chain(rs.iter().copied())
                .collect(),
            Some(rs) => rs.clone(),
            None => input.shape.clone(),
        };
        out.push(Tensor {
            name: input.name.clone(),
            shape,
            data,
        });
    }
    let missing: Vec<&str> = v
        .inputs
        .iter()
        .filter(|s| !s.optional && !out.iter().any(|t| t.name == s.name))
        .map(|s| s.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(InferError::invalid(format!(
            "model {model:?} needs input(s) {missing:?}; its inputs are: {}",
            names()
        )));
    }
    // Signature order, whatever order the request listed them in: the
    // scheduler joins requests input by input, so every request of a batch
    // must hold its tensors in the same order.
    out.sort_by_key(|t| v.inputs.iter().position(|s| s.name == t.name));
    Ok((out, rows.unwrap_or(1)))
}

pub(crate) fn tensor_meta(io: &Io) -> pb::model_metadata_response::TensorMetadata {
    pb::model_metadata_response::TensorMetadata {
        name: io.name.clone(),
        datatype: io.dtype.name().to_owned(),
        shape: io.shape.clone(),
    }
}

pub(crate) fn duration(count: u64, ns: u64) -> Option<pb::StatisticDuration> {
    Some(pb::StatisticDuration { count, ns })
}
