//! Pipelines: small graphs of embedding, inference and search calls
//! declared in the gateway's settings ([`spec`], parsed and checked when
//! the settings load), run by `core::pipelines` (parallel steps combined
//! by `core::aggregate`).

pub mod spec;

pub use spec::PipelineSpec;
