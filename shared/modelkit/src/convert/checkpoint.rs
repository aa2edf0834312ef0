//! A `model.safetensors` checkpoint read without PyTorch: each tensor the
//! graph needs, by name, as float32, with its shape checked against the
//! config; a truncated or corrupt file names the tensor it breaks.

use safetensors::{Dtype, SafeTensorError, SafeTensors};
use serde_json::Value;

use super::ConvertError;

/// The prefixes a BERT encoder's tensors may carry (`BertModel` saved
/// alone, or inside a task model).
const PREFIXES: [&str; 2] = ["", "bert."];

/// A checkpoint's tensors.
pub struct Checkpoint<'a> {
    st: SafeTensors<'a>,
    prefix: &'static str,
}

impl<'a> Checkpoint<'a> {
    /// Reads the file's header; a file whose tensors run past its end names
    /// the first such tensor.
    pub fn read(bytes: &'a [u8]) -> Result<Self, ConvertError> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| explain(bytes, e))?;
        let prefix = PREFIXES
            .into_iter()
            .find(|p| {
                st.names()
                    .iter()
                    .any(|n| *n == format!("{p}embeddings.word_embeddings.weight"))
            })
            .ok_or_else(|| {
                ConvertError::Tensor(
                    "embeddings.word_embeddings.weight".into(),
                    "is missing: not a BERT checkpoint".into(),
                )
            })?;
        Ok(Self { st, prefix })
    }

    /// The tensor `name` (without prefix) of exactly `shape`, as float32;
    /// non-finite values are refused.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ConvertError> {
        let full = format!("{}{name}", self.prefix);
        let t = self
            .st
            .tensor(&full)
            .map_err(|_| ConvertError::Tensor(full.clone(), "is missing".into()))?;
        if t.shape() != shape {
            return Err(ConvertError::Tensor(
                full,
                format!("has shape {:?}, the config implies {shape:?}", t.shape()),
            ));
        }
        let data = t.data();
        let v: Vec<f32> = match t.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(ConvertError::Tensor(
                    full,
                    format!("has dtype {other:?} (F32, F16 or BF16 expected)"),
                ));
            }
        };
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(ConvertError::Tensor(
                full,
                format!("holds a non-finite value at element {i}: corrupt checkpoint"),
            ));
        }
        Ok(v)
    }

    /// Encoder layers present in the file beyond `layers` (a config that
    /// does not describe this checkpoint).
    pub fn extra_layer(&self, layers: usize) -> Option<String> {
        let head = format!("{}encoder.layer.", self.prefix);
        self.st.names().into_iter().find_map(|n| {
            let rest = n.strip_prefix(&head)?;
            let i: usize = rest.split('.').next()?.parse().ok()?;
            (i >= layers).then(|| n.to_owned())
        })
    }
}

/// A better reason than the library's for a file that does not parse: the
/// tensor whose bytes lie past the end of a truncated file, read from the
/// (intact) header.
fn explain(bytes: &[u8], e: SafeTensorError) -> ConvertError {
    let whole = || ConvertError::Checkpoint(e.to_string());
    let Some(n) = bytes
        .get(..8)
        .and_then(|h| h.try_into().ok())
        .map(u64::from_le_bytes)
    else {
        return whole();
    };
    let Some(header) = usize::try_from(n)
        .ok()
        .and_then(|n| bytes.get(8..8usize.checked_add(n)?))
    else {
        return ConvertError::Checkpoint(format!(
            "{e}: the header claims {n} bytes, the file has {}",
            bytes.len()
        ));
    };
    let data_len = bytes.len() - 8 - header.len();
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(header) else {
        return whole();
    };
    let mut past: Vec<(u64, &str)> = map
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .filter_map(|(k, v)| {
            let off = v.get("data_offsets")?.as_array()?;
            let end = off.get(1)?.as_u64()?;
            (end > data_len as u64).then_some((off.first()?.as_u64()?, k.as_str()))
        })
        .collect();
    past.sort_unstable();
    match past.first() {
        Some((start, name)) => ConvertError::Tensor(
            (*name).to_owned(),
            format!(
                "lies past the end of the file (its data starts at byte {start} of {data_len}): truncated or corrupt checkpoint"
            ),
        ),
        None => whole(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    fn file(tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .map(|(n, s, v)| {
                (
                    (*n).to_owned(),
                    s.clone(),
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = bytes
            .iter()
            .map(|(n, s, b)| {
                (
                    n.clone(),
                    TensorView::new(Dtype::F32, s.clone(), b).expect("view"),
                )
            })
            .collect();
        safetensors::serialize(views, None).expect("serialize")
    }

    #[test]
    fn tensors_are_read_checked_and_named() {
        let f = file(&[
            (
                "bert.embeddings.word_embeddings.weight",
                vec![2, 2],
                vec![1.0, 2.0, 3.0, 4.0],
            ),
            (
                "bert.encoder.layer.3.output.dense.bias",
                vec![2],
                vec![0.0, f32::NAN],
            ),
        ]);
        let c = Checkpoint::read(&f).expect("reads");
        assert_eq!(
            c.f32("embeddings.word_embeddings.weight", &[2, 2])
                .expect("f32"),
            vec![1.0, 2.0, 3.0, 4.0]
        );
        let e = c
            .f32("embeddings.word_embeddings.weight", &[4])
            .expect_err("shape");
        assert!(
            e.to_string()
                .contains("bert.embeddings.word_embeddings.weight"),
            "{e}"
        );
        let e = c
            .f32("encoder.layer.3.output.dense.bias", &[2])
            .expect_err("nan");
        assert!(e.to_string().contains("non-finite"), "{e}");
        let e = c.f32("pooler.dense.bias", &[2]).expect_err("missing");
        assert!(e.to_string().contains("bert.pooler.dense.bias"), "{e}");
        assert_eq!(
            c.extra_layer(2).as_deref(),
            Some("bert.encoder.layer.3.output.dense.bias")
        );
    }

    #[test]
    fn a_truncated_file_names_the_tensor_it_cuts() {
        let f = file(&[
            (
                "embeddings.word_embeddings.weight",
                vec![2, 2],
                vec![1.0; 4],
            ),
            (
                "encoder.layer.0.attention.self.query.weight",
                vec![2, 2],
                vec![1.0; 4],
            ),
        ]);
        let e = Checkpoint::read(&f[..f.len() - 3])
            .err()
            .expect("truncated");
        assert!(
            e.to_string()
                .contains("encoder.layer.0.attention.self.query.weight"),
            "{e}"
        );
        let e = Checkpoint::read(&f[..5]).err().expect("tiny");
        assert!(matches!(e, ConvertError::Checkpoint(_)), "{e}");
    }
}
