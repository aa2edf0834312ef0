//! One model folder in the sentence-transformers layout, loaded: its
//! tokenizer, pooling and limits. The ONNX Runtime session that runs it is
//! `super::runner::Runner`.
//!
//! Everything here blocks; callers run it on dedicated threads.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokenizers::{PostProcessor as _, Tokenizer, TruncationDirection};

use super::memory::Shape;
use crate::error::{EmbedError, LoadError};

/// How token vectors become one sentence vector (`1_Pooling/config.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Average of token vectors, padding excluded.
    Mean,
    /// The first token's (`[CLS]`) vector.
    Cls,
    /// Element-wise maximum over tokens, padding excluded.
    Max,
}

impl Pooling {
    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Max => "max",
        }
    }
}

#[derive(Deserialize)]
struct PoolingConfig {
    word_embedding_dimension: Option<usize>,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct HfConfig {
    max_position_embeddings: Option<usize>,
    hidden_size: Option<usize>,
    num_attention_heads: Option<usize>,
    intermediate_size: Option<usize>,
}

#[derive(Deserialize, Default)]
struct MlmeshNote {
    dtype: Option<String>,
}

/// What to do with an input longer than the model's limit.
#[derive(Clone, Copy, Debug)]
pub enum Overflow {
    /// Cut tokens from this end.
    Truncate(TruncationDirection),
    /// Fail with [`EmbedError::InputTooLong`].
    Refuse,
    /// Return it whole (for inspection only: the model cannot run it).
    Keep,
}

/// A tokenized input, ready for the model.
#[derive(Clone, Debug)]
pub struct Tokenized {
    /// Token ids, special tokens included, after truncation.
    pub ids: Vec<i64>,
    /// Length in tokens before truncation, special tokens included.
    pub original_len: usize,
}

/// A loaded model folder: everything but the ONNX Runtime session.
pub struct ModelFolder {
    pub name: String,
    pub dir: PathBuf,
    pub onnx_path: PathBuf,
    tokenizer: Tokenizer,
    /// Tokens the post-processor adds around one input ([CLS] … [SEP]).
    added_tokens: usize,
    pub pooling: Pooling,
    /// Longest input in tokens, special tokens included.
    pub max_tokens: usize,
    pub dimension: usize,
    pub dtype: String,
    /// What decides a run's memory (config.json; BERT's ratios when absent).
    pub shape: Shape,
}

fn read_json<T: for<'de> Deserialize<'de>>(model: &str, path: &Path) -> Result<T, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::File {
        model: model.into(),
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| LoadError::File {
        model: model.into(),
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

impl ModelFolder {
    /// Reads the folder's configuration and tokenizer.
    pub fn load(name: &str, dir: &Path) -> Result<Self, LoadError> {
        let invalid = |reason: String| LoadError::Invalid {
            model: name.into(),
            reason,
        };
        let onnx_path = ["model.onnx", "onnx/model.onnx"]
            .iter()
            .map(|p| dir.join(p))
            .find(|p| p.is_file())
            .ok_or_else(|| LoadError::File {
                model: name.into(),
                path: dir.join("model.onnx").display().to_string(),
                reason: "no model.onnx (nor onnx/model.onnx) in the folder; run `make models`"
                    .into(),
            })?;

        let pooling_cfg: PoolingConfig = read_json(name, &dir.join("1_Pooling/config.json"))?;
        let pooling = match (
            pooling_cfg.pooling_mode_mean_tokens,
            pooling_cfg.pooling_mode_cls_token,
            pooling_cfg.pooling_mode_max_tokens,
            pooling_cfg.pooling_mode_mean_sqrt_len_tokens,
        ) {
            (true, false, false, false) => Pooling::Mean,
            (false, true, false, false) => Pooling::Cls,
            (false, false, true, false) => Pooling::Max,
            _ => {
                return Err(invalid(
                    "1_Pooling/config.json: exactly one of mean, cls or max pooling is supported"
                        .into(),
                ));
            }
        };

        let hf: Option<HfConfig> = dir
            .join("config.json")
            .is_file()
            .then(|| read_json(name, &dir.join("config.json")))
            .transpose()?;
        let st: Option<SentenceBertConfig> = dir
            .join("sentence_bert_config.json")
            .is_file()
            .then(|| read_json(name, &dir.join("sentence_bert_config.json")))
            .transpose()?;
        // sentence-transformers' own limit wins; the position table caps it.
        let positions = hf.as_ref().and_then(|c| c.max_position_embeddings);
        let max_tokens = match (st.and_then(|c| c.max_seq_length), positions) {
            (Some(s), Some(p)) => s.min(p),
            (Some(s), None) => s,
            (None, Some(p)) => p,
            (None, None) => 512,
        };
        let dimension = pooling_cfg
            .word_embedding_dimension
            .or_else(|| hf.as_ref().and_then(|c| c.hidden_size))
            .ok_or_else(|| {
                invalid("neither 1_Pooling/config.json nor config.json gives the dimension".into())
            })?;

        let hidden = hf.as_ref().and_then(|c| c.hidden_size).unwrap_or(dimension);
        let shape = Shape {
            hidden,
            heads: hf
                .as_ref()
                .and_then(|c| c.num_attention_heads)
                .unwrap_or(hidden.div_ceil(64).max(1)),
            intermediate: hf
                .as_ref()
                .and_then(|c| c.intermediate_size)
                .unwrap_or(4 * hidden),
        };

        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| LoadError::File {
            model: name.into(),
            path: tok_path.display().to_string(),
            reason: e.to_string(),
        })?;
        // The file may fix padding/truncation (MiniLM's pads to 128): we pad
        // per batch and truncate per request instead, as sentence-transformers does.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| invalid(format!("tokenizer.json: {e}")))?;
        let added_tokens = tokenizer
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(false));
        if max_tokens <= added_tokens {
            return Err(invalid(format!(
                "max input length {max_tokens} leaves no room beside {added_tokens} special tokens"
            )));
        }

        let note: MlmeshNote = if dir.join("mlmesh.json").is_file() {
            read_json(name, &dir.join("mlmesh.json"))?
        } else {
            MlmeshNote::default()
        };

        Ok(Self {
            name: name.into(),
            dir: dir.into(),
            onnx_path,
            tokenizer,
            added_tokens,
            pooling,
            max_tokens,
            dimension,
            dtype: note.dtype.unwrap_or_else(|| "float32".into()),
            shape,
        })
    }

    /// Tokenizes one input. `truncate` = `Some(direction)` cuts over-long
    /// inputs; `None` refuses them with [`EmbedError::InputTooLong`].
    pub fn tokenize(
        &self,
        text: &str,
        index: usize,
        truncate: Option<TruncationDirection>,
    ) -> Result<Tokenized, EmbedError> {
        let overflow = truncate.map_or(Overflow::Refuse, Overflow::Truncate);
        let enc = self.encode(text, index, overflow)?;
        Ok(Tokenized {
            ids: enc.0.get_ids().iter().map(|&i| i64::from(i)).collect(),
            original_len: enc.1,
        })
    }

    /// The full encoding (tokens, offsets) and the length before truncation.
    pub fn encode(
        &self,
        text: &str,
        index: usize,
        overflow: Overflow,
    ) -> Result<(tokenizers::Encoding, usize), EmbedError> {
        let mut enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        let original_len = enc.len() + self.added_tokens;
        if original_len > self.max_tokens {
            match overflow {
                Overflow::Truncate(direction) => {
                    enc.truncate(self.max_tokens - self.added_tokens, 0, direction);
                    // Truncation keeps the cut-off parts; we never use them.
                    drop(enc.take_overflowing());
                }
                Overflow::Keep => {}
                Overflow::Refuse => {
                    return Err(EmbedError::InputTooLong {
                        field: "inputs",
                        index: Some(index),
                        tokens: original_len,
                        max: self.max_tokens,
                        model: self.name.clone(),
                    });
                }
            }
        }
        let enc = self
            .tokenizer
            .post_process(enc, None, true)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        Ok((enc, original_len))
    }
}

/// Keeps the first `dims` components (Matryoshka) and scales to unit length
/// when `normalize`.
pub fn finish(mut v: Vec<f32>, dims: Option<usize>, normalize: bool) -> Vec<f32> {
    if let Some(d) = dims {
        v.truncate(d);
    }
    if normalize {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        // sentence-transformers clamps the norm the same way.
        let norm = norm.max(1e-12);
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_truncates_then_normalizes() {
        let v = finish(vec![3.0, 4.0, 12.0], Some(2), true);
        assert_eq!(v.len(), 2);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        let raw = finish(vec![3.0, 4.0, 12.0], None, false);
        assert_eq!(raw, vec![3.0, 4.0, 12.0]);
        // A zero vector stays finite.
        assert!(
            finish(vec![0.0; 4], None, true)
                .iter()
                .all(|x| x.is_finite())
        );
    }
}
