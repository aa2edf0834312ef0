//! `downstream.discovery = "kubernetes"`: each downstream pool follows the
//! ready endpoints of a Service, from a kube-rs watcher over its
//! EndpointSlices (`mlmesh-discovery`), instead of a fixed address list.
//! The pools start empty; a call before the first list completes fails
//! UNAVAILABLE naming the service (retried while its deadline allows).

use std::sync::Arc;

use mlmesh_discovery::{Target, source::own_namespace};
use tokio::{sync::watch, task::JoinHandle};

use crate::{downstream::Pool, settings::DownstreamSettings};

/// The watcher tasks; stopped when dropped (the gateway stops).
#[derive(Debug, Default)]
pub struct Watchers(Vec<JoinHandle<()>>);

impl Drop for Watchers {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Starts one watcher per `(pool, entry)`; `entries` were checked by the
/// settings (`service:port`).
pub async fn start(
    settings: &DownstreamSettings,
    pools: Vec<(&Arc<Pool>, &[crate::settings::Endpoint])>,
) -> Result<Watchers, String> {
    let client = mlmesh_discovery::client(&settings.kubernetes_api)
        .await
        .map_err(|e| format!("downstream.kubernetes_api: {e}"))?;
    let namespace = if settings.namespace.is_empty() {
        own_namespace().unwrap_or_else(|| "default".into())
    } else {
        settings.namespace.clone()
    };
    let mut tasks = Vec::new();
    for (pool, entries) in pools {
        // One Service per pool: several entries would each replace the
        // others' list, so only the first counts (the settings allow one).
        let Some(entry) = entries.first() else {
            continue;
        };
        let target = Target::parse(entry.as_str())?;
        // Replicas are dialled by pod IP; their certificates name the
        // Service (its cluster DNS name).
        pool.verify_as(&format!("{}.{namespace}.svc", target.service))?;
        let (tx, mut rx) = watch::channel(Vec::new());
        tasks.push(tokio::spawn(mlmesh_discovery::watch_endpoints(
            client.clone(),
            namespace.clone(),
            target,
            tx,
        )));
        let pool = Arc::clone(pool);
        tasks.push(tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let addrs = rx.borrow_and_update().clone();
                if let Err(e) = pool.set_replicas(&addrs) {
                    tracing::warn!(service = pool.service(), error = %e, "discovered endpoints refused");
                }
            }
        }));
    }
    Ok(Watchers(tasks))
}
