//! Integration tests: the real service on 127.0.0.1:0 with the real model,
//! driven through the generated gRPC client.

mod behaviour;
mod errors;
mod golden;
mod helpers;
