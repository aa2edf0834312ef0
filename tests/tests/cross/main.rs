//! Cross-process tests: real mlmesh binaries (built by `cargo build
//! --workspace --bins` first, as `make test` does) started as processes and
//! driven over loopback, plus the official clients of other ecosystems.
//!
//! One test binary (linking one per file cost minutes of CI); each test
//! holds [`mlmesh_tests::serial`] so that, as before, they do not compete
//! for this machine's two cores.

mod admin_token;
mod attacks;
mod auth;
mod bench_model;
mod caller_limits;
mod console;
mod console_actions;
mod convert;
mod embedding_process;
mod golden;
mod hostile_artifacts;
mod image;
mod inference_rest;
mod launcher;
mod mcp;
mod mesh_e2e;
mod mesh_tracing;
mod mtls;
mod openai_client;
mod otlp_export;
mod pipelines;
mod qdrant_cluster;
mod quantize;
mod registry_backup;
mod registry_cli;
mod registry_crash;
mod registry_follow;
mod registry_support;
mod relay;
mod shadow;
mod tritonclient;
mod validate;
mod validate_embedding;
mod validate_grpc;
mod vector_durability;
