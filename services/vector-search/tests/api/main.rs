//! Integration tests of the vector-search service: the real server on an
//! ephemeral port, called through the generated client.

mod conformance;
mod errors;
mod helpers;
mod service;
mod text_index_restart;
