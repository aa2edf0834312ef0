//! Kubernetes discovery against a wire-level fake API server
//! (`mlmesh_tests::fake_kube`, not a cluster) in front of three real
//! embedding servers: the gateway's kube-rs watcher follows the
//! EndpointSlices of Service `emb`, one slice per replica (each listens on
//! its own loopback port). While clients call Embed through the gateway
//! without pause: a new replica starts getting calls, a terminating one
//! stops getting new ones and is then shut down, an expired watch
//! (410) is followed by a re-list that finds a replica added meanwhile —
//! and not one call fails.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use mlmesh_gateway::settings::Discovery;
use mlmesh_proto::embedding::v1 as emb;
use mlmesh_tests::fake_kube::{FakeEndpoint, FakeKube};

use crate::helpers::{Running, spawn_embedding, spawn_gateway};

const NS: &str = "mesh";

/// Embed calls a replica has served (its own metrics).
async fn served(r: &Running) -> f64 {
    r.metric("mlmesh_embedding_requests_total{code=\"OK\",method=\"Embed\"}")
        .await
}

fn slice(kube: &FakeKube, name: &str, addr: SocketAddr, e: fn(&str) -> FakeEndpoint) {
    kube.put_slice(
        name,
        "emb",
        "grpc",
        addr.port(),
        &[e(&addr.ip().to_string())],
    );
}

/// Waits until `cond` holds, checking every 50 ms, for at most 20 s.
async fn until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_follow_endpoint_slices_with_zero_failures() {
    let kube = FakeKube::start(NS).await;
    let (a, b, c) = (
        spawn_embedding().await,
        spawn_embedding().await,
        spawn_embedding().await,
    );
    slice(&kube, "emb-a", a.addr, FakeEndpoint::ready);

    let mut s =
        mlmesh_gateway::Settings::for_tests(vec!["emb:grpc".into()], vec!["vec:grpc".into()]);
    s.downstream.discovery = Discovery::Kubernetes;
    s.downstream.kubernetes_api = kube.url.clone();
    s.downstream.namespace = NS.into();
    let gateway = spawn_gateway(s).await;

    // Clients call without pause from the first answer on.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let first = gateway.grpc.clone();
    until("the first replica is discovered", || {
        let mut g = first.clone();
        async move {
            g.embed(emb::EmbedRequest {
                inputs: vec!["warm".into()],
                ..Default::default()
            })
            .await
            .is_ok()
        }
    })
    .await;
    let clients: Vec<_> = (0..3)
        .map(|i| {
            let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
            let mut g = gateway.grpc.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let r = g
                        .embed(emb::EmbedRequest {
                            inputs: vec![format!("client {i} says hello")],
                            ..Default::default()
                        })
                        .await;
                    match r {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("failed call: {e:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();

    // Scale up: b appears and gets calls.
    until("a serves", || async { served(&a).await > 5.0 }).await;
    assert_eq!(served(&b).await, 0.0, "b is not an endpoint yet");
    slice(&kube, "emb-b", b.addr, FakeEndpoint::ready);
    until("b gets calls", || async { served(&b).await > 5.0 }).await;

    // Scale down: a turns terminating (ready false); it gets no new calls,
    // then its server stops (the pod goes away) and its slice is deleted.
    slice(&kube, "emb-a", a.addr, FakeEndpoint::terminating);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a_after = served(&a).await;
    let b_mark = served(&b).await;
    until("b keeps serving", || async {
        served(&b).await > b_mark + 20.0
    })
    .await;
    assert_eq!(
        served(&a).await,
        a_after,
        "a terminating replica got new calls"
    );
    a.stop().await;
    kube.delete_slice("emb-a");

    // The watch expires (410): c, added meanwhile, is found by the re-list.
    let (lists_before, _) = kube.requests();
    kube.expire();
    slice(&kube, "emb-c", c.addr, FakeEndpoint::ready);
    until("c gets calls after the re-list", || async {
        served(&c).await > 5.0
    })
    .await;
    // The expired watch may deliver c's slice before it ends; the re-list
    // follows it either way.
    until("the watcher listed again", || async {
        kube.requests().0 > lists_before
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.await.expect("client");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 100, "{ok} calls");
    assert_eq!(failed, 0, "{failed} of {} calls failed", ok + failed);
    assert_eq!(
        gateway
            .metric("mlmesh_gateway_downstream_replicas{service=\"embedding\"}")
            .await,
        2.0
    );
    gateway.stop().await;
    b.stop().await;
    c.stop().await;
}
