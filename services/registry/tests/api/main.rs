//! Integration tests: the registry in-process on 127.0.0.1:0 over its
//! embedded storage in a temp folder, called with the generated client.
//! Digests are computed by the `sha2` crate, not by the registry.

mod aliases;
mod gate;
mod helpers;
mod limits;
mod models;
mod storage;
mod versions;
mod watch;
