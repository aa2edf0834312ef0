//! The lean HTTP/2 client channel against real servers on loopback: a tonic
//! server (health), a dead address, a restarted server, and a raw `h2`
//! server sending more than the flow-control windows.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use mlmesh_runtime::client::{H2Channel, H2Settings};
use tokio::{net::TcpListener, sync::oneshot};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Code;
use tonic_health::{
    ServingStatus,
    pb::{HealthCheckRequest, health_client::HealthClient},
};
use tower_service::Service as _;

fn channel(addr: SocketAddr) -> H2Channel {
    H2Channel::lazy(
        format!("http://{addr}").parse().expect("uri"),
        H2Settings {
            connect_timeout: Duration::from_secs(2),
            keep_alive: Duration::from_secs(30),
        },
        None,
    )
    .expect("valid uri")
}

/// A tonic health server on `listener`; stops when the sender is dropped
/// or fired.
async fn health_server(listener: TcpListener) -> oneshot::Sender<()> {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("mlmesh.test", ServingStatus::Serving)
        .await;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _keep = reporter;
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await
            .expect("server");
    });
    stop
}

async fn check(ch: &H2Channel) -> Result<i32, tonic::Status> {
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        HealthClient::new(ch.clone()).check(HealthCheckRequest {
            service: "mlmesh.test".into(),
        }),
    )
    .await
    .expect("a call never hangs")?;
    Ok(r.into_inner().status)
}

#[tokio::test]
async fn unary_calls_work_and_the_channel_reconnects_after_a_restart() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = health_server(listener).await;
    let ch = channel(addr);

    // Many calls, concurrently, over the one connection.
    let calls: Vec<_> = (0..50).map(|_| check(&ch)).collect();
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.expect("check"), ServingStatus::Serving as i32);
    }

    // Server gone: the call fails UNAVAILABLE, naming the address.
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = check(&ch).await.expect_err("server is down");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains(&addr.to_string()), "{err:?}");

    // Back on the same address: the next call reconnects by itself.
    let listener = TcpListener::bind(addr).await.expect("rebind");
    let _stop = health_server(listener).await;
    assert_eq!(
        check(&ch).await.expect("reconnected"),
        ServingStatus::Serving as i32
    );
}

#[tokio::test]
async fn a_dead_address_is_unavailable_naming_it() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr")
    };
    let err = check(&channel(addr)).await.expect_err("nothing listens");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("tcp connect error"), "{err:?}");
    assert!(err.message().contains(&addr.to_string()), "{err:?}");
}

#[tokio::test]
async fn responses_larger_than_the_flow_control_windows_arrive_whole() {
    // A raw HTTP/2 server: answers every request with `SIZE` bytes of DATA
    // (more than the 2 MiB stream and 5 MiB connection windows, so the
    // client must hand capacity back as it reads) and gRPC trailers.
    const SIZE: usize = 7 * 1024 * 1024;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut conn = h2::server::handshake(tcp).await.expect("handshake");
        while let Some(Ok((request, mut respond))) = conn.accept().await {
            tokio::spawn(async move {
                let mut body = request.into_body();
                while let Some(Ok(chunk)) = body.data().await {
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                let response = http::Response::builder()
                    .header("content-type", "application/grpc")
                    .body(())
                    .expect("response");
                let mut send = respond.send_response(response, false).expect("send");
                let payload = Bytes::from(vec![7u8; SIZE]);
                send.send_data(payload, false).expect("data");
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                send.send_trailers(trailers).expect("trailers");
            });
        }
    });

    let mut ch = channel(addr);
    let request = http::Request::builder()
        .method("POST")
        .uri("/test.Large/Get")
        .header("content-type", "application/grpc")
        .body(tonic::body::Body::new(http_body_util::Full::new(
            Bytes::from_static(b"\0\0\0\0\0"),
        )))
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(20), async {
        let response = ch.call(request).await.expect("call");
        response.into_body().collect().await.expect("body")
    })
    .await
    .expect("a large response never stalls");
    let trailers = response.trailers().cloned().expect("trailers");
    assert_eq!(response.to_bytes().len(), SIZE);
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
}
