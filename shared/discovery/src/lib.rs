//! Where the replicas of a service are, inside Kubernetes: the
//! EndpointSlices of a Service (label `kubernetes.io/service-name`),
//! watched through the API server with kube-rs, turned into the list of
//! addresses that may get new calls: endpoints that are ready and not
//! terminating, on the port named in the target.
//!
//! [`slices`] is the state machine (events in, address lists out; no I/O,
//! unit-tested on event streams); [`source`] runs the kube-rs watcher
//! (list, then watch from the list's resourceVersion with bookmarks; an
//! expired resourceVersion starts a new list) and publishes each new list
//! on a `tokio::sync::watch` channel. Callers keep a static list outside
//! Kubernetes.
#![forbid(unsafe_code)]

pub mod slices;
pub mod source;

pub use slices::{SliceSet, Target};
pub use source::{DiscoveryError, client, watch_endpoints};
