//! The gateway relaying plain unary inference calls as HTTP/2 (no codec on
//! either side), with real processes: the inference service, and a gateway
//! whose replica list also names a dead address.
//!
//! Checked: four callers at once get, for every call, exactly the bytes
//! the replica answers directly (the dead replica costs a retry, never an
//! error); a replica's error answer (unknown model) reaches the caller with
//! the replica's code and words; a request over `server.max_request_bytes`
//! is refused RESOURCE_EXHAUSTED naming the setting, and the next call is
//! served; a gzip-compressed call (the codec path) answers the same bytes.

use mlmesh_proto::inference::{
    self as pb, grpc_inference_service_client::GrpcInferenceServiceClient,
};
use mlmesh_tests::Service;
use prost::Message as _;
use tonic::{Code, codec::CompressionEncoding, transport::Channel};

fn iris(row: [f32; 4], model: &str) -> pb::ModelInferRequest {
    mlmesh_tests::iris_request(model, row)
}

fn rows() -> Vec<[f32; 4]> {
    (0..24)
        .map(|i| {
            let f = i as f32;
            [
                4.3 + f * 0.15,
                2.0 + (f * 0.07) % 2.4,
                1.0 + f * 0.24,
                0.1 + f * 0.1,
            ]
        })
        .collect()
}

/// The answer as comparable bytes (the id is the caller's to set).
fn bytes_of(r: pb::ModelInferResponse) -> Vec<u8> {
    pb::ModelInferResponse {
        id: String::new(),
        ..r
    }
    .encode_to_vec()
}

/// Same answer: everything but the FP32 outputs byte for byte; those to
/// 1e-6 (rows batched with other callers' may differ in the last bit,
/// see shadow.rs).
fn same_answer(got: &[u8], want: &[u8]) -> bool {
    let (Ok(g), Ok(w)) = (
        pb::ModelInferResponse::decode(got),
        pb::ModelInferResponse::decode(want),
    ) else {
        return false;
    };
    if g.outputs != w.outputs
        || g.model_name != w.model_name
        || g.raw_output_contents.len() != w.raw_output_contents.len()
    {
        return false;
    }
    g.outputs
        .iter()
        .zip(g.raw_output_contents.iter().zip(&w.raw_output_contents))
        .all(|(o, (a, b))| {
            if o.datatype != "FP32" {
                return a == b;
            }
            let f = |x: &[u8]| -> Vec<f32> {
                x.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            };
            let (a, b) = (f(a), f(b));
            a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-6)
        })
}

async fn client(addr: std::net::SocketAddr) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
        .max_encoding_message_size(64 * 1024 * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_calls_answer_what_the_replica_answers() {
    let _serial = mlmesh_tests::serial_async().await;
    let (inference, gateway) = tokio::task::spawn_blocking(|| {
        let inference = Service::start("mlmesh-inference", &[]);
        // A closed port first: p2c picks it for some calls, which must be
        // retried on the live replica.
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port");
        let gateway = Service::start(
            "mlmesh-gateway",
            &[
                (
                    "MLMESH_DOWNSTREAM__INFERENCE",
                    format!("{dead},{}", inference.addr),
                ),
                ("MLMESH_DOWNSTREAM__EMBEDDING", "127.0.0.1:9".into()),
                ("MLMESH_DOWNSTREAM__VECTOR_SEARCH", "127.0.0.1:9".into()),
                ("MLMESH_HTTP__LISTEN", "off".into()),
                ("MLMESH_SERVER__MAX_REQUEST_BYTES", "65536".into()),
            ],
        );
        (inference, gateway)
    })
    .await
    .expect("start");

    let mut direct = client(inference.addr).await;
    let mut want = Vec::new();
    for row in rows() {
        let r = direct
            .model_infer(iris(row, "iris-logreg"))
            .await
            .expect("direct")
            .into_inner();
        want.push(bytes_of(r));
    }

    // Four callers at once, each every row three times.
    let tasks: Vec<_> = (0..4)
        .map(|k| {
            let addr = gateway.addr;
            let want = want.clone();
            tokio::spawn(async move {
                let mut c = client(addr).await;
                for round in 0..3 {
                    for (i, row) in rows().into_iter().enumerate() {
                        let got = c
                            .model_infer(iris(row, "iris-logreg"))
                            .await
                            .unwrap_or_else(|e| panic!("caller {k} round {round} row {i}: {e:?}"))
                            .into_inner();
                        assert!(
                            same_answer(&bytes_of(got), &want[i]),
                            "caller {k} row {i}: not the replica's answer"
                        );
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("caller");
    }

    let mut gw = client(gateway.addr).await;
    // The replica's error, as the replica said it.
    let e = gw
        .model_infer(iris(rows()[0], "no-such-model"))
        .await
        .expect_err("unknown model");
    let direct_err = direct
        .model_infer(iris(rows()[0], "no-such-model"))
        .await
        .expect_err("unknown model, directly");
    assert_eq!(e.code(), direct_err.code(), "{e:?} vs {direct_err:?}");
    assert!(
        e.message().contains("no-such-model"),
        "the replica's words are lost: {e:?}"
    );

    // Over the gateway's request limit: refused before it is kept.
    let mut big = iris(rows()[0], "iris-logreg");
    big.raw_input_contents = vec![vec![0u8; 200_000].into()];
    let e = gw.model_infer(big).await.expect_err("too large");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().contains("server.max_request_bytes"),
        "the limit is not named: {e:?}"
    );
    let after = gw
        .model_infer(iris(rows()[1], "iris-logreg"))
        .await
        .expect("the next call is served")
        .into_inner();
    assert!(same_answer(&bytes_of(after), &want[1]));

    // Compressed: the codec path, same answer.
    let mut gz = client(gateway.addr)
        .await
        .send_compressed(CompressionEncoding::Gzip);
    let got = gz
        .model_infer(iris(rows()[2], "iris-logreg"))
        .await
        .expect("gzip call")
        .into_inner();
    assert!(same_answer(&bytes_of(got), &want[2]));
    drop(gateway);
    drop(inference);
}
