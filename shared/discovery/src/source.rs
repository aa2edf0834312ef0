//! The kube-rs watcher over one Service's EndpointSlices, publishing the
//! usable addresses on a `tokio::sync::watch` channel.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{
    Api, Client, Config,
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::watch;

use crate::slices::{SliceSet, Target};

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("Kubernetes API {url:?}: {reason}")]
    Client { url: String, reason: String },
}

/// A client of the API server at `url` (plain `http://` for a local proxy
/// or a test server), or, when `url` is empty, the pod's in-cluster
/// configuration (service account token and CA), else `KUBECONFIG`.
pub async fn client(url: &str) -> Result<Client, DiscoveryError> {
    let fail = |reason: String| DiscoveryError::Client {
        url: if url.is_empty() {
            "in-cluster".into()
        } else {
            url.into()
        },
        reason,
    };
    let config = if url.is_empty() {
        Config::infer().await.map_err(|e| fail(e.to_string()))?
    } else {
        let uri = url.parse().map_err(|e| fail(format!("{e}")))?;
        let mut c = Config::new(uri);
        c.connect_timeout = Some(Duration::from_secs(5));
        c
    };
    Client::try_from(config).map_err(|e| fail(e.to_string()))
}

/// The namespace this pod runs in (its service account's), if any.
pub fn own_namespace() -> Option<String> {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Watches `target`'s EndpointSlices in `namespace` until `tx` has no
/// receivers, sending every changed address list. Errors (API server
/// unreachable, watch broken) are logged and retried with backoff; the last
/// list stays in force meanwhile. An expired resourceVersion makes the
/// watcher list again; the new list replaces the old one when complete.
pub async fn watch_endpoints(
    client: Client,
    namespace: String,
    target: Target,
    tx: watch::Sender<Vec<String>>,
) {
    let api: Api<EndpointSlice> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().labels(&target.selector());
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    let mut set = SliceSet::new(target.clone());
    loop {
        let next = tokio::select! {
            e = events.next() => e,
            () = tx.closed() => return,
        };
        match next {
            Some(Ok(event)) => {
                if let Some(addrs) = set.apply(event) {
                    tracing::info!(service = %target.service, namespace = %namespace, replicas = ?addrs, "endpoints changed");
                    if tx.send(addrs).is_err() {
                        return;
                    }
                }
            }
            Some(Err(e)) => {
                tracing::warn!(service = %target.service, namespace = %namespace, error = %e, "EndpointSlice watch failed; retrying");
            }
            None => return,
        }
    }
}
