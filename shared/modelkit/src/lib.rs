//! Bring a model, get it served well: [`convert`] turns a sentence-transformers
//! BERT-family checkpoint into an fp32 ONNX graph the embedding service
//! serves; [`quantize`] rewrites an fp32 ONNX graph to int8 in a closed loop
//! against a quality gate. Both write the ONNX protobuf themselves
//! ([`onnx`]); neither needs Python or PyTorch.
#![forbid(unsafe_code)]

pub mod convert;
mod files;
pub mod onnx;
pub mod quantize;
