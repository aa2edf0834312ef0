//! `mlmesh model convert`: a sentence-transformers (or Hugging Face) BERT
//! encoder folder — `config.json`, `model.safetensors`, `tokenizer.json`,
//! the pooling config — to a folder the embedding service serves: an fp32
//! `model.onnx` written by us ([`bert`]), the tokenizer and pooling copied,
//! and `mlmesh.json` naming the source's digest and the converter.
//!
//! The output is written into a staging folder beside the target and
//! renamed into place at the end, so a failed conversion leaves nothing
//! that looks like a model.

pub mod bert;
pub mod checkpoint;
pub mod config;

use std::{
    fs,
    path::{Path, PathBuf},
};

use prost::Message as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use self::{checkpoint::Checkpoint, config::BertConfig};
use crate::files::{staging, write};

/// The largest checkpoint read: an ONNX file without external data is one
/// protobuf message, which cannot exceed 2 GiB.
pub const MAX_CHECKPOINT_BYTES: u64 = 2 << 30;
/// The largest JSON file read (config, tokenizer, pooling).
const MAX_JSON_BYTES: u64 = 64 << 20;

/// Files copied beside `model.onnx` when the source has them.
const COPIED: [&str; 5] = [
    "config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentence_bert_config.json",
    "modules.json",
];

/// Why a conversion was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// A config key (or file) and why it cannot be converted.
    #[error("config: {0} {1}")]
    Config(String, String),
    /// A checkpoint tensor and what is wrong with it.
    #[error("checkpoint: tensor {0} {1}")]
    Tensor(String, String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("{0}")]
    Output(String),
}

/// What a conversion produced.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Converted {
    pub out: PathBuf,
    /// sha256 over the source files read, in the registry's manifest form.
    pub source_digest: String,
    pub converter: String,
    pub parameters: usize,
    pub model_bytes: usize,
    pub hidden_size: usize,
    pub layers: usize,
}

/// Converts the encoder folder `src` into `out` (which must not exist).
pub fn convert(src: &Path, out: &Path) -> Result<Converted, ConvertError> {
    if out.exists() {
        return Err(ConvertError::Output(format!(
            "{} exists: choose a new folder",
            out.display()
        )));
    }
    let config = BertConfig::parse(&read_text(src, "config.json")?)?;
    let pooling_dir = pooling_dir(src)?;
    let pooling = read_text(src, &format!("{pooling_dir}/config.json"))?;
    check_pooling(&pooling, config.hidden)?;
    if !src.join("tokenizer.json").is_file() {
        return Err(ConvertError::Config(
            "tokenizer.json".into(),
            "is missing (a fast tokenizer file is required)".into(),
        ));
    }
    let weights = read_bounded(&src.join("model.safetensors"), MAX_CHECKPOINT_BYTES)?;
    let ck = Checkpoint::read(&weights)?;
    let model = bert::build(&config, &ck)?;
    drop(ck);
    let parameters: usize = model
        .graph
        .as_ref()
        .map(|g| g.initializer.iter().map(|t| t.raw_data.len() / 4).sum())
        .unwrap_or_default();
    let bytes = model.encode_to_vec();
    drop(model);

    let mut read: Vec<String> = COPIED
        .iter()
        .filter(|f| src.join(f).is_file())
        .map(|f| (*f).to_owned())
        .collect();
    read.extend([
        "model.safetensors".to_owned(),
        "tokenizer.json".to_owned(),
        format!("{pooling_dir}/config.json"),
    ]);
    read.sort();
    let source_digest = manifest_digest(src, &read, Some(("model.safetensors", &weights)))?;
    drop(weights);

    let converter = format!("mlmesh-convert {}", env!("CARGO_PKG_VERSION"));
    let stage = staging(out).map_err(ConvertError::Output)?;
    let written = (|| {
        let write = |p: &Path, b: &[u8]| write(p, b).map_err(ConvertError::Output);
        write(&stage.join("model.onnx"), &bytes)?;
        for f in COPIED.iter().chain(["tokenizer.json"].iter()) {
            if src.join(f).is_file() {
                fs::copy(src.join(f), stage.join(f))
                    .map_err(|e| ConvertError::Io(src.join(f).display().to_string(), e))?;
            }
        }
        fs::create_dir_all(stage.join("1_Pooling"))
            .map_err(|e| ConvertError::Io(stage.display().to_string(), e))?;
        write(&stage.join("1_Pooling/config.json"), pooling.as_bytes())?;
        let note = json!({
            "dtype": "float32",
            "converter": converter,
            "source": src.file_name().map(|n| n.to_string_lossy().into_owned()),
            "source_digest": source_digest,
        });
        write(&stage.join("mlmesh.json"), note.to_string().as_bytes())?;
        crate::files::publish(&stage, out).map_err(ConvertError::Output)
    })();
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&stage);
        return Err(e);
    }
    Ok(Converted {
        out: out.to_path_buf(),
        source_digest,
        converter,
        parameters,
        model_bytes: bytes.len(),
        hidden_size: config.hidden,
        layers: config.layers,
    })
}

/// Where the pooling module's config lives: `modules.json`'s Pooling
/// module, else `1_Pooling`.
fn pooling_dir(src: &Path) -> Result<String, ConvertError> {
    if !src.join("modules.json").is_file() {
        return Ok("1_Pooling".into());
    }
    let v: Value = serde_json::from_str(&read_text(src, "modules.json")?)
        .map_err(|e| ConvertError::Config("modules.json".into(), e.to_string()))?;
    let modules = v
        .as_array()
        .ok_or_else(|| ConvertError::Config("modules.json".into(), "is not a list".into()))?;
    for m in modules {
        let ty = m.get("type").and_then(Value::as_str).unwrap_or_default();
        match ty.rsplit('.').next().unwrap_or_default() {
            "Transformer" | "Normalize" => {}
            "Pooling" => {
                let path = m.get("path").and_then(Value::as_str).unwrap_or("1_Pooling");
                if path.is_empty() || path.contains("..") || path.starts_with('/') {
                    return Err(ConvertError::Config(
                        "modules.json".into(),
                        format!("pooling path {path:?} is not a folder of the model"),
                    ));
                }
                return Ok(path.to_owned());
            }
            _ => {
                return Err(ConvertError::Config(
                    "modules.json".into(),
                    format!("module {ty:?} is not supported (Transformer, Pooling, Normalize)"),
                ));
            }
        }
    }
    Err(ConvertError::Config(
        "modules.json".into(),
        "has no Pooling module".into(),
    ))
}

/// The embedding service pools by exactly one of mean, CLS or max.
fn check_pooling(text: &str, hidden: usize) -> Result<(), ConvertError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| ConvertError::Config("1_Pooling/config.json".into(), e.to_string()))?;
    let on = |k: &str| v.get(k).and_then(Value::as_bool) == Some(true);
    for k in [
        "pooling_mode_mean_sqrt_len_tokens",
        "pooling_mode_weightedmean_tokens",
        "pooling_mode_lasttoken",
    ] {
        if on(k) {
            return Err(ConvertError::Config(
                k.into(),
                "is not supported (mean, cls or max pooling)".into(),
            ));
        }
    }
    let modes = [
        "pooling_mode_mean_tokens",
        "pooling_mode_cls_token",
        "pooling_mode_max_tokens",
    ];
    if modes.iter().filter(|k| on(k)).count() != 1 {
        return Err(ConvertError::Config(
            "pooling_mode_mean_tokens".into(),
            "exactly one of mean, cls or max pooling must be true".into(),
        ));
    }
    match v.get("word_embedding_dimension").and_then(Value::as_u64) {
        Some(d) if d as usize != hidden => Err(ConvertError::Config(
            "word_embedding_dimension".into(),
            format!("{d} differs from hidden_size {hidden}"),
        )),
        _ => Ok(()),
    }
}

fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, ConvertError> {
    let io = |e| ConvertError::Io(path.display().to_string(), e);
    let len = fs::metadata(path).map_err(io)?.len();
    if len > max {
        return Err(ConvertError::Checkpoint(format!(
            "{} is {len} bytes, over the limit of {max}",
            path.display()
        )));
    }
    fs::read(path).map_err(io)
}

fn read_text(src: &Path, rel: &str) -> Result<String, ConvertError> {
    let bytes = read_bounded(&src.join(rel), MAX_JSON_BYTES).map_err(|e| match e {
        ConvertError::Io(_, io) if io.kind() == std::io::ErrorKind::NotFound => {
            ConvertError::Config(rel.to_owned(), "is missing".into())
        }
        other => other,
    })?;
    String::from_utf8(bytes)
        .map_err(|_| ConvertError::Config(rel.to_owned(), "is not UTF-8".into()))
}

/// The registry's manifest digest of `files` under `src`: sha256 over
/// "<sha256>  <size>  <path>\n" per file in path order.
fn manifest_digest(
    src: &Path,
    files: &[String],
    held: Option<(&str, &[u8])>,
) -> Result<String, ConvertError> {
    let mut manifest = Sha256::new();
    for f in files {
        let bytes;
        let data: &[u8] = match held {
            Some((name, data)) if name == f => data,
            _ => {
                bytes = fs::read(src.join(f))
                    .map_err(|e| ConvertError::Io(src.join(f).display().to_string(), e))?;
                &bytes
            }
        };
        let line = format!(
            "{}  {}  {f}\n",
            hex::encode(Sha256::digest(data)),
            data.len()
        );
        manifest.update(line.as_bytes());
    }
    Ok(hex::encode(manifest.finalize()))
}
