//! A Hugging Face `config.json` of a BERT-family encoder, checked: every
//! option the converter cannot reproduce exactly is refused naming its key,
//! and every size is bounded before anything is allocated from it.

use serde_json::{Map, Value};

use super::ConvertError;

/// Sizes bounded before allocation (MiniLM-L6: 384 / 6 / 12 / 1536 / 30522 / 512).
const MAX_HIDDEN: i64 = 8192;
const MAX_LAYERS: i64 = 128;
const MAX_INTERMEDIATE: i64 = 65_536;
const MAX_VOCAB: i64 = 1_000_000;
const MAX_POSITIONS: i64 = 65_536;
const MAX_TYPES: i64 = 64;

/// The activation of the feed-forward block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x · Φ(x)` with the exact error function (`"gelu"`).
    Gelu,
    /// The tanh approximation (`"gelu_new"`, `"gelu_pytorch_tanh"`).
    GeluTanh,
    Relu,
}

/// What the graph is built from.
#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub positions: usize,
    pub type_vocab: usize,
    pub eps: f32,
    pub activation: Activation,
}

impl BertConfig {
    /// Reads and checks `config.json`'s text.
    pub fn parse(text: &str) -> Result<Self, ConvertError> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| ConvertError::Config("config.json".into(), e.to_string()))?;
        let o = v
            .as_object()
            .ok_or_else(|| bad("config.json", "is not a JSON object"))?;
        match o.get("model_type").and_then(Value::as_str) {
            Some("bert") => {}
            Some(other) => {
                return Err(bad(
                    "model_type",
                    &format!("{other:?} is not supported (only \"bert\" encoders)"),
                ));
            }
            None => return Err(bad("model_type", "is missing")),
        }
        if let Some(archs) = o.get("architectures").and_then(Value::as_array) {
            for a in archs {
                let a = a.as_str().unwrap_or_default();
                if !a.starts_with("Bert") {
                    return Err(bad(
                        "architectures",
                        &format!("{a:?} is not a BERT encoder"),
                    ));
                }
            }
        }
        for key in ["is_decoder", "add_cross_attention"] {
            if o.get(key).and_then(Value::as_bool) == Some(true) {
                return Err(bad(key, "true is not supported (encoders only)"));
            }
        }
        match o.get("position_embedding_type").and_then(Value::as_str) {
            None | Some("absolute") => {}
            Some(other) => {
                return Err(bad(
                    "position_embedding_type",
                    &format!("{other:?} is not supported (only \"absolute\")"),
                ));
            }
        }
        let activation = match o.get("hidden_act").and_then(Value::as_str) {
            Some("gelu") => Activation::Gelu,
            Some("gelu_new" | "gelu_pytorch_tanh") => Activation::GeluTanh,
            Some("relu") => Activation::Relu,
            Some(other) => {
                return Err(bad(
                    "hidden_act",
                    &format!(
                        "{other:?} is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu)"
                    ),
                ));
            }
            None => return Err(bad("hidden_act", "is missing")),
        };
        let hidden = size(o, "hidden_size", MAX_HIDDEN)?;
        let heads = size(o, "num_attention_heads", MAX_HIDDEN)?;
        if hidden % heads != 0 {
            return Err(bad(
                "num_attention_heads",
                &format!("{heads} does not divide hidden_size {hidden}"),
            ));
        }
        let eps = o
            .get("layer_norm_eps")
            .and_then(Value::as_f64)
            .ok_or_else(|| bad("layer_norm_eps", "is missing or not a number"))?;
        if !(eps > 0.0 && eps < 1.0) {
            return Err(bad("layer_norm_eps", &format!("{eps} is not in (0, 1)")));
        }
        Ok(Self {
            hidden,
            heads,
            layers: size(o, "num_hidden_layers", MAX_LAYERS)?,
            intermediate: size(o, "intermediate_size", MAX_INTERMEDIATE)?,
            vocab: size(o, "vocab_size", MAX_VOCAB)?,
            positions: size(o, "max_position_embeddings", MAX_POSITIONS)?,
            type_vocab: size(o, "type_vocab_size", MAX_TYPES)?,
            eps: eps as f32,
            activation,
        })
    }

    pub fn head_size(&self) -> usize {
        self.hidden / self.heads
    }
}

fn bad(key: &str, why: &str) -> ConvertError {
    ConvertError::Config(key.to_owned(), why.to_owned())
}

/// A positive integer at most `max`.
fn size(o: &Map<String, Value>, key: &str, max: i64) -> Result<usize, ConvertError> {
    let v = o
        .get(key)
        .and_then(Value::as_i64)
        .ok_or_else(|| bad(key, "is missing or not an integer"))?;
    if !(1..=max).contains(&v) {
        return Err(bad(key, &format!("{v} is not in 1..={max}")));
    }
    Ok(v as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const TINY: &str = r#"{"model_type":"bert","architectures":["BertModel"],
        "hidden_act":"gelu","hidden_size":8,"num_attention_heads":2,"num_hidden_layers":1,
        "intermediate_size":16,"vocab_size":10,"max_position_embeddings":6,
        "type_vocab_size":2,"layer_norm_eps":1e-12,"position_embedding_type":"absolute"}"#;

    fn with(key: &str, value: &str) -> String {
        let mut v: Value = serde_json::from_str(TINY).expect("json");
        v[key] = serde_json::from_str(value).expect("json");
        v.to_string()
    }

    #[test]
    fn a_bert_config_is_read() {
        let c = BertConfig::parse(TINY).expect("parses");
        assert_eq!((c.hidden, c.heads, c.head_size()), (8, 2, 4));
        assert_eq!(c.activation, Activation::Gelu);
    }

    #[test]
    fn what_cannot_be_converted_is_refused_naming_the_key() {
        for (key, value) in [
            ("model_type", r#""gpt2""#),
            ("architectures", r#"["RobertaModel"]"#),
            ("hidden_act", r#""swish""#),
            ("position_embedding_type", r#""relative_key""#),
            ("is_decoder", "true"),
            ("num_attention_heads", "3"),
            ("hidden_size", "100000"),
            ("num_hidden_layers", "0"),
            ("layer_norm_eps", "-1"),
            ("vocab_size", r#""many""#),
        ] {
            let err = BertConfig::parse(&with(key, value)).expect_err(key);
            assert!(
                matches!(&err, ConvertError::Config(k, _) if k == key),
                "{key}: {err}"
            );
        }
    }
}
