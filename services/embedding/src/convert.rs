//! Protocol messages to the engine's types and back: a request's
//! truncation option, and an embedding's answer with its usage and
//! timings.

use std::time::Instant;

use mlmesh_proto::embedding::v1 as pb;
use tokenizers::TruncationDirection;
use tonic::Status;

use crate::engine::Embedded;

/// `truncate` (default true) and its direction → the engine's option.
pub(crate) fn truncation(
    truncate: Option<bool>,
    direction: i32,
) -> Result<Option<TruncationDirection>, Status> {
    let direction = match pb::TruncationDirection::try_from(direction) {
        Ok(pb::TruncationDirection::Unspecified | pb::TruncationDirection::Right) => {
            TruncationDirection::Right
        }
        Ok(pb::TruncationDirection::Left) => TruncationDirection::Left,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "`truncation_direction` {direction} is not a TruncationDirection (0, 1 or 2)"
            )));
        }
    };
    Ok(truncate.unwrap_or(true).then_some(direction))
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub(crate) fn usage(out: &Embedded) -> pb::Usage {
    pb::Usage {
        prompt_tokens: out.prompt_tokens,
        total_input_tokens: out.total_input_tokens,
    }
}

pub(crate) fn timings(out: &Embedded, start: Instant) -> pb::Timings {
    pb::Timings {
        tokenize_us: micros(out.tokenize),
        queue_us: micros(out.queue),
        inference_us: micros(out.inference),
        total_us: micros(start.elapsed()),
    }
}

pub(crate) fn embed_response(out: Embedded, start: Instant) -> pb::EmbedResponse {
    pb::EmbedResponse {
        usage: Some(usage(&out)),
        timings: Some(timings(&out, start)),
        model: out.model,
        dimensions: u32::try_from(out.dimensions).unwrap_or(u32::MAX),
        embeddings: out
            .vectors
            .into_iter()
            .map(|values| pb::Embedding { values })
            .collect(),
    }
}
