//! What one model run costs in memory, estimated from the model's shape,
//! so the batcher can keep every run under `embedding.max_run_memory_mb`
//! and a pod can be sized by that setting.
//!
//! A transformer run on `n` inputs padded to `L` tokens holds, per layer,
//! activations that grow with `n·L` (hidden states, projections, the
//! feed-forward block) and attention scores that grow with `n·heads·L²`.
//! ONNX Runtime frees a layer's buffers before the next, so the peak is
//! about one layer's worth whatever the depth. The two coefficients below
//! were fitted to the resident memory the service actually added per run
//! (`mlmesh-bench embed-memory`, docs/benchmarks.md#embedding-memory) and
//! rounded up, so the estimate errs on the high side.

/// The shape that decides a run's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
}

/// Bytes one run costs, by inputs and padded length.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunCost {
    /// Bytes per token (grows with n·L).
    per_token: f64,
    /// Bytes per pair of tokens of one input (grows with n·L²).
    per_token_pair: f64,
}

/// float32 values alive per token and per unit of (hidden + intermediate)
/// width at a layer's peak (fitted; see the module docs). For MiniLM-L6
/// (hidden 384, intermediate 1536, 12 heads) the measured cost per input was
/// 1.1 / 7.4 / 21 MiB at 32 / 128 / 256 tokens; these give 1.6 / 9.4 / 26.
const TOKEN_FLOATS_PER_WIDTH: f64 = 6.0;
/// float32 values alive per attention score at a layer's peak (fitted).
const SCORE_FLOATS: f64 = 4.5;

impl RunCost {
    pub fn of(shape: Shape) -> Self {
        Self {
            per_token: 4.0 * TOKEN_FLOATS_PER_WIDTH * (shape.hidden + shape.intermediate) as f64,
            per_token_pair: 4.0 * SCORE_FLOATS * shape.heads as f64,
        }
    }

    /// Estimated bytes of a run on `inputs` inputs padded to `tokens`.
    /// A cost of nothing (tests).
    pub const ZERO: Self = Self {
        per_token: 0.0,
        per_token_pair: 0.0,
    };

    pub fn bytes(&self, inputs: usize, tokens: usize) -> u64 {
        let l = tokens as f64;
        (inputs as f64 * (self.per_token * l + self.per_token_pair * l * l)).ceil() as u64
    }

    /// Most inputs of `tokens` tokens one run may hold within `budget` bytes.
    pub fn inputs_within(&self, budget: u64, tokens: usize) -> usize {
        let one = self.bytes(1, tokens).max(1);
        (budget / one) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINILM: Shape = Shape {
        hidden: 384,
        heads: 12,
        intermediate: 1536,
    };

    #[test]
    fn cost_grows_with_inputs_and_with_the_square_of_length() {
        let c = RunCost::of(MINILM);
        assert_eq!(c.bytes(2, 128), 2 * c.bytes(1, 128));
        let (short, long) = (c.bytes(1, 64), c.bytes(1, 256));
        assert!(long > 4 * short, "{long} vs {short}: the L² term shows");
        assert!(
            long < 16 * short,
            "{long} vs {short}: the L term is there too"
        );
        assert_eq!(c.bytes(0, 256), 0);
    }

    #[test]
    fn inputs_within_a_budget_fit_it() {
        let c = RunCost::of(MINILM);
        for tokens in [16, 128, 256, 512] {
            for budget in [1 << 20, 64 << 20, 512 << 20] {
                let n = c.inputs_within(budget, tokens);
                assert!(c.bytes(n, tokens) <= budget);
                assert!(c.bytes(n + 1, tokens) > budget);
            }
        }
    }
}
