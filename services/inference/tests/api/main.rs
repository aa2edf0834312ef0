//! Integration tests: the inference service in-process on 127.0.0.1:0 with
//! the generated client, real models, references from onnxruntime and
//! scikit-learn (`tests/data/references.json`).

mod helpers;
mod infer;
mod lifecycle;
