//! A wire-level fake of the Kubernetes API server, only as much as
//! EndpointSlice discovery uses: list and watch of
//! `discovery.k8s.io/v1` EndpointSlices in a namespace, filtered by the
//! `kubernetes.io/service-name` label — JSON over HTTP/1.1 as the real
//! server speaks it: a list carries the collection's resourceVersion; a
//! watch from a resourceVersion streams ADDED / MODIFIED / DELETED events
//! after it, one JSON object per line, with BOOKMARK events when asked
//! (`allowWatchBookmarks`); a resourceVersion older than what is kept gets
//! an ERROR event with code 410 (Expired), after which a client must list
//! again.
//!
//! It is a fake, not a cluster: no authentication, no other resources, no
//! field selectors. Tests use it to drive a real kube-rs watcher in front of
//! real servers.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    http::{StatusCode, Uri, header},
    response::Response,
};
use serde_json::{Value, json};
use tokio::sync::watch;

/// One endpoint of a slice: its address and conditions.
#[derive(Clone, Debug)]
pub struct FakeEndpoint {
    pub ip: String,
    pub ready: bool,
    pub terminating: bool,
}

impl FakeEndpoint {
    pub fn ready(ip: &str) -> Self {
        Self {
            ip: ip.into(),
            ready: true,
            terminating: false,
        }
    }

    /// A pod being deleted: not ready, terminating (still serving).
    pub fn terminating(ip: &str) -> Self {
        Self {
            ip: ip.into(),
            ready: false,
            terminating: true,
        }
    }
}

#[derive(Default)]
struct State {
    rv: u64,
    slices: BTreeMap<String, Value>,
    /// Every change: (resourceVersion, type, object).
    log: Vec<(u64, &'static str, Value)>,
    /// Watches must start at or after this resourceVersion - 1.
    oldest: u64,
    /// Bumped to end every open watch (as an API server restart does).
    generation: u64,
    lists: u64,
    watches: u64,
}

/// The running fake; stops when dropped.
pub struct FakeKube {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    namespace: String,
    state: Arc<Mutex<State>>,
    changed: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeKube {
    /// Serves `namespace` on 127.0.0.1 with a port the kernel picks.
    pub async fn start(namespace: &str) -> Self {
        let state = Arc::new(Mutex::new(State {
            rv: 100,
            oldest: 1,
            ..State::default()
        }));
        let (changed, _) = watch::channel(0);
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind the fake API server");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let app = {
            let (state, changed, ns) = (Arc::clone(&state), changed.clone(), namespace.to_owned());
            Router::new().fallback(move |uri: Uri| {
                let (state, changed, ns) = (Arc::clone(&state), changed.clone(), ns.clone());
                async move { serve(uri, &ns, state, changed) }
            })
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            namespace: namespace.into(),
            state,
            changed,
            task,
        }
    }

    /// Creates or replaces the slice `name` of `service`: its endpoints on
    /// one port (`port_name` → `port`).
    pub fn put_slice(
        &self,
        name: &str,
        service: &str,
        port_name: &str,
        port: u16,
        endpoints: &[FakeEndpoint],
    ) {
        let mut s = lock(&self.state);
        s.rv += 1;
        let obj = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "resourceVersion": s.rv.to_string(),
                "labels": {"kubernetes.io/service-name": service},
            },
            "addressType": "IPv4",
            "endpoints": endpoints.iter().map(|e| json!({
                "addresses": [e.ip],
                "conditions": {"ready": e.ready, "serving": true, "terminating": e.terminating},
            })).collect::<Vec<_>>(),
            "ports": [{"name": port_name, "port": port, "protocol": "TCP", "appProtocol": "grpc"}],
        });
        let kind = if s.slices.contains_key(name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        s.slices.insert(name.into(), obj.clone());
        let rv = s.rv;
        s.log.push((rv, kind, obj));
        drop(s);
        self.changed.send_replace(rv);
    }

    pub fn delete_slice(&self, name: &str) {
        let mut s = lock(&self.state);
        let Some(mut obj) = s.slices.remove(name) else {
            return;
        };
        s.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
        let rv = s.rv;
        s.log.push((rv, "DELETED", obj));
        drop(s);
        self.changed.send_replace(rv);
    }

    /// Forgets the change log and ends every open watch: a client resuming
    /// from its last resourceVersion gets 410 Expired and must list again.
    pub fn expire(&self) {
        let mut s = lock(&self.state);
        s.oldest = s.rv + 1;
        s.log.clear();
        s.generation += 1;
        let rv = s.rv;
        drop(s);
        self.changed.send_replace(rv);
    }

    /// How many list and watch requests were served.
    pub fn requests(&self) -> (u64, u64) {
        let s = lock(&self.state);
        (s.lists, s.watches)
    }
}

/// The query parameters of a request, undecoded except `%2F` / `%3D`
/// (enough for the values kube-rs sends).
fn query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let v = v
                .replace("%2F", "/")
                .replace("%2f", "/")
                .replace("%3D", "=")
                .replace("%3d", "=");
            (k.to_owned(), v)
        })
        .collect()
}

fn matches(obj: &Value, service: Option<&str>) -> bool {
    service.is_none_or(|svc| obj["metadata"]["labels"]["kubernetes.io/service-name"] == svc)
}

fn json_response(status: StatusCode, body: Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

fn serve(uri: Uri, ns: &str, state: Arc<Mutex<State>>, changed: watch::Sender<u64>) -> Response {
    let want = format!("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices");
    if uri.path() != want {
        return json_response(
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                   "message": format!("the fake API server serves only {want}")}),
        );
    }
    let q = query(&uri);
    let service = q
        .get("labelSelector")
        .and_then(|s| s.strip_prefix("kubernetes.io/service-name="))
        .map(str::to_owned);
    let watching = q.get("watch").is_some_and(|v| v == "true" || v == "1");
    if !watching {
        let mut s = lock(&state);
        s.lists += 1;
        let items: Vec<Value> = s
            .slices
            .values()
            .filter(|o| matches(o, service.as_deref()))
            .cloned()
            .collect();
        return json_response(
            StatusCode::OK,
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
                   "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}),
        );
    }
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let timeout = Duration::from_secs(
        q.get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(290),
    );
    let (generation, expired) = {
        let mut s = lock(&state);
        s.watches += 1;
        (s.generation, from + 1 < s.oldest)
    };
    let mut rx = changed.subscribe();
    let stream = async_stream(move |tx| async move {
        if expired {
            let _ = tx
                .send(json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "message": format!("too old resource version: {from}"),
                    "reason": "Expired", "code": 410}}))
                .await;
            return;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut sent = from;
        loop {
            let (events, rv, gen_now) = {
                let s = lock(&state);
                let events: Vec<Value> = s
                    .log
                    .iter()
                    .filter(|(rv, _, o)| *rv > sent && matches(o, service.as_deref()))
                    .map(|(_, kind, o)| json!({"type": kind, "object": o}))
                    .collect();
                (events, s.rv, s.generation)
            };
            if gen_now != generation {
                return;
            }
            for e in events {
                if tx.send(e).await.is_err() {
                    return;
                }
            }
            sent = rv;
            if bookmarks {
                let mark = json!({"type": "BOOKMARK", "object": {"apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice", "metadata": {"resourceVersion": rv.to_string()}}});
                if tx.send(mark).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                _ = rx.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_default()
}

/// A body stream of JSON lines fed by `produce` through a small channel.
fn async_stream<F, Fut>(
    produce: F,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::convert::Infallible>> + Send
where
    F: FnOnce(tokio::sync::mpsc::Sender<Value>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Value>(16);
    tokio::spawn(produce(tx));
    futures::stream::unfold(rx, |mut rx| async move {
        let v = rx.recv().await?;
        Some((Ok(bytes::Bytes::from(format!("{v}\n"))), rx))
    })
}
