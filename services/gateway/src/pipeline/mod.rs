//! Pipelines: small graphs of embedding, inference and search calls
//! declared in the gateway's settings ([`spec`]), combined by
//! [`aggregate`] in parallel steps, and run by `core::pipelines`.

pub mod aggregate;
pub mod spec;

pub use spec::PipelineSpec;
