//! Gateway integration tests: real embedding, vector-search and gateway
//! servers in this process, on port 0, called over gRPC and HTTP.

mod discovery;
mod errors;
mod flows;
mod helpers;
mod text_search;
