//! The attack suite against the real gateway, embedding and vector-search
//! binaries on loopback: each hostile or careless request gets the clear
//! error expected (status naming the field or setting), while a
//! well-behaved client calling beside the attacks sees no failure, the
//! services stay healthy, and the gateway's peak RSS stays bounded.
//! Bounded in count and time.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use mlmesh_tests::{HttpClient, MeshProcesses, TempDir};
use serde_json::{Value, json};

const PIPELINES: &str = r#"
[pipelines.embed-only]
inputs = ["text"]
outputs = { embedding = "embed.embedding" }

[[pipelines.embed-only.steps]]
kind = "embed"
name = "embed"
input = "request.text"
"#;

/// Peak resident memory of a process, in KiB (`VmHWM`).
pub(crate) fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A client embedding one text over and over until told to stop; counts
/// its successes and failures.
struct Bystander {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl Bystander {
    fn start(http: std::net::SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (s, o, f) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        let thread = std::thread::spawn(move || {
            let mut h = HttpClient::new(http);
            let mut errors = Vec::new();
            while !s.load(Ordering::Relaxed) {
                let (status, v) =
                    h.post_json("/v1/embeddings", &json!({"input": "a quiet, honest call"}));
                if status == 200 && v["data"][0]["embedding"].as_array().map(Vec::len) == Some(384)
                {
                    o.fetch_add(1, Ordering::Relaxed);
                } else {
                    f.fetch_add(1, Ordering::Relaxed);
                    if errors.len() < 5 {
                        errors.push(format!("{status} {v}"));
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            errors
        });
        Self {
            stop,
            ok,
            failed,
            thread,
        }
    }

    /// Stops it; its successes (it must have no failure).
    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let errors = self.thread.join().expect("bystander");
        assert_eq!(
            self.failed.load(Ordering::Relaxed),
            0,
            "a well-behaved client failed beside the attacks: {errors:?}"
        );
        self.ok.load(Ordering::Relaxed)
    }
}

fn expect_error(h: &mut HttpClient, path: &str, body: &Value, status: u16, words: &[&str]) {
    let (got, v) = h.post_json(path, body);
    let text = v.to_string();
    assert_eq!(got, status, "{path} {body}: {text}");
    for w in words {
        assert!(text.contains(w), "{path}: {w:?} not in {text}");
    }
}

#[test]
fn hostile_http_requests_get_clear_errors_and_harm_nobody() {
    let _serial = mlmesh_tests::serial();
    let dir = TempDir::new("attacks");
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, PIPELINES).expect("settings");
    let mesh = MeshProcesses::start_with(
        &[],
        &[
            ("MLMESH_CONFIG", config.display().to_string()),
            ("MLMESH_SERVER__HEADER_READ_TIMEOUT_SECS", "2".into()),
            ("MLMESH_SERVER__BODY_TIMEOUT_SECS", "2".into()),
            ("MLMESH_SERVER__MAX_CONNECTIONS", "24".into()),
        ],
    );
    let http = mesh.gateway.http_addr.expect("http");
    let bystander = Bystander::start(http);
    let mut h = HttpClient::new(http);

    // Shapes whose element count is zero but whose dimensions are huge:
    // refused before any per-row work, on every face that takes tensors.
    let empty_huge = json!({"datatype": "BYTES", "shape": [1_000_000_000_000i64, 0], "data": []});
    expect_error(
        &mut h,
        "/v1/pipelines/embed-only",
        &json!({"inputs": {"text": empty_huge}, "stream": true}),
        400,
        &["inputs.text", "limits.max_tensor_rows"],
    );
    expect_error(
        &mut h,
        "/v1/pipelines/embed-only",
        &json!({"inputs": {"text": empty_huge}}),
        400,
        &["inputs.text", "limits.max_tensor_rows"],
    );
    expect_error(
        &mut h,
        "/v1/pipelines/embed-only",
        &json!({"inputs": {"text": {"datatype": "BYTES", "shape": [1, 0, 4_000_000_000i64], "data": []}}}),
        400,
        &["inputs.text", "limits.max_tensor_elements"],
    );
    expect_error(
        &mut h,
        "/v2/models/m/infer",
        &json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1_000_000_000_000i64, 0], "data": []}]}),
        400,
        &["inputs[0].shape", "limits.max_tensor_rows"],
    );
    expect_error(
        &mut h,
        "/v2/models/m/infer",
        &json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4], "data": []}]}),
        400,
        &["inputs[0].shape", "negative"],
    );

    // A streamed ingest is held to the request's limits as a whole: a
    // duplicate id is refused before anything is stored.
    let (status, v) = h.post_json(
        "/v1/collections",
        &json!({"name": "attacked", "chunking": {"unit": "characters", "size": 200, "overlap": 0}}),
    );
    assert_eq!(status, 201, "{v}");
    expect_error(
        &mut h,
        "/v1/collections/attacked/documents",
        &json!({"stream": true, "documents": [
            {"id": "same", "text": "first text"}, {"id": "same", "text": "second text"}]}),
        400,
        &["documents[1].id", "twice"],
    );
    let (status, v) = h.json("GET", "/v1/collections/attacked", None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["chunks_count"], 0, "nothing stored: {v}");

    // State-changing routes take JSON only: a browser's cross-site form
    // or text/plain POST cannot create, ingest or delete.
    for (path, ctype) in [
        ("/v1/collections", "text/plain"),
        (
            "/v1/collections/attacked/documents",
            "application/x-www-form-urlencoded",
        ),
        ("/v1/embeddings", "multipart/form-data; boundary=x"),
        ("/mcp", "text/plain"),
    ] {
        let head = mlmesh_tests::raw_http(
            http,
            "POST",
            path,
            &[("content-type", ctype)],
            br#"{"name": "forged", "input": "x"}"#,
        );
        assert!(
            head.starts_with("HTTP/1.1 415"),
            "{path} with {ctype}: {head}"
        );
    }
    let (status, _) = h.json("GET", "/v1/collections/forged", None);
    assert_eq!(status, 404, "no collection was forged");

    // Readiness is open to probes but names no replica address.
    let (status, ready) = h.json("GET", "/readyz", None);
    assert_eq!(status, 200, "{ready}");
    let text = ready.to_string();
    for addr in [mesh.embedding.addr, mesh.vector.addr] {
        assert!(
            !text.contains(&addr.to_string()),
            "/readyz lists {addr}: {text}"
        );
    }
    assert_eq!(ready["services"]["embedding"]["serving"], 1, "{ready}");

    // Slow clients hold nothing for long: headers that never end are cut
    // off, a body that never arrives is answered 408, both within the
    // settings' deadlines.
    use std::io::{Read as _, Write as _};
    let t0 = std::time::Instant::now();
    let mut slow = std::net::TcpStream::connect(http).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .expect("partial headers");
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let cut = t0.elapsed();
    assert!(
        cut < Duration::from_secs(10),
        "a header that never ended held the connection for {cut:?}"
    );
    let t0 = std::time::Instant::now();
    let mut slow = std::net::TcpStream::connect(http).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    slow.write_all(
        b"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"input\":",
    )
    .expect("partial body");
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 408") && answer.contains("server.body_timeout_secs"),
        "a body that never arrived: {answer:?} after {:?}",
        t0.elapsed()
    );
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());

    // Connections beyond server.max_connections (24 here) are closed at
    // once; the bystander, connected before, keeps being served.
    let idle: Vec<std::net::TcpStream> = (0..30)
        .filter_map(|_| std::net::TcpStream::connect(http).ok())
        .collect();
    let closed = idle
        .iter()
        .filter(|s| {
            let mut s = (*s).try_clone().expect("clone");
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .expect("timeout");
            matches!(s.read(&mut [0u8; 1]), Ok(0))
        })
        .count();
    assert!(
        closed >= 6,
        "only {closed} of 30 connections over a cap of 24 were closed"
    );
    drop(idle);
    // The slots come back once the server sees those connections close.
    let t0 = std::time::Instant::now();
    let mut h = loop {
        let mut fresh = HttpClient::new(http);
        if fresh
            .request("GET", "/healthz", &[], &[])
            .is_ok_and(|(s, _)| s == 200)
        {
            break fresh;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "connection slots did not come back"
        );
        std::thread::sleep(Duration::from_millis(100));
    };

    // Still healthy, nobody harmed, memory bounded.
    let (status, _) = h.json("GET", "/healthz", None);
    assert_eq!(status, 200);
    let calls = bystander.finish();
    assert!(calls > 0, "the bystander made no call");
    let rss = peak_rss_kib(mesh.gateway.child.id());
    assert!(rss < 512 * 1024, "gateway peak RSS {rss} KiB under attack");
    mesh.stop();
}

/// A compression bomb: 256 MiB of zeros, gzip-compressed to about 256 KiB,
/// sent as a ModelInfer to the inference service and through the gateway
/// (both accept gzip). tonic inflates into a buffer limited by
/// `server.max_request_bytes` (64 MiB on the inference service, 16 MiB on
/// the gateway), so the bomb is refused having inflated at most that much;
/// this pins it: RESOURCE_EXHAUSTED, the next call is served, and peak RSS
/// grows by less than the limit plus slack, far below the bomb's 256 MiB.
#[test]
fn a_compressed_bomb_is_refused_without_inflating() {
    use mlmesh_proto::inference::{
        self as ipb, grpc_inference_service_client::GrpcInferenceServiceClient,
        model_infer_request::InferInputTensor,
    };
    let _serial = mlmesh_tests::serial();
    let (svc, gateway) = inference_behind_gateway(&[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rows = 16 << 20; // 16 Mi rows × 4 floats × 4 bytes = 256 MiB
    let bomb = ipb::ModelInferRequest {
        model_name: "iris-logreg".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![rows, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![vec![0u8; (rows * 16) as usize].into()],
        ..Default::default()
    };
    let fine = iris_row();
    for target in [&svc, &gateway] {
        let before = (
            peak_rss_kib(svc.child.id()),
            peak_rss_kib(gateway.child.id()),
        );
        rt.block_on(async {
            let mut c = GrpcInferenceServiceClient::connect(format!("http://{}", target.addr))
                .await
                .expect("connect")
                .send_compressed(tonic::codec::CompressionEncoding::Gzip)
                .max_encoding_message_size(usize::MAX);
            let e = c
                .model_infer(bomb.clone())
                .await
                .expect_err("a 256 MiB message");
            assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
            let ok = c
                .model_infer(fine.clone())
                .await
                .expect("the next call is served");
            assert_eq!(ok.into_inner().model_name, "iris-logreg");
        });
        let after = (
            peak_rss_kib(svc.child.id()),
            peak_rss_kib(gateway.child.id()),
        );
        // The services' limits (64 and 16 MiB) plus 32 MiB of slack.
        for (name, b, a, limit) in [
            ("inference", before.0, after.0, 64 * 1024),
            ("gateway", before.1, after.1, 16 * 1024),
        ] {
            assert!(
                a.saturating_sub(b) < limit + 32 * 1024,
                "{name}: peak RSS grew from {b} to {a} KiB on a refused bomb"
            );
        }
    }
}

/// The inference service (its default repository) and a gateway in front
/// of it with `gateway_env` (embedding and vector-search unreachable).
pub(crate) fn inference_behind_gateway(
    gateway_env: &[(&str, String)],
) -> (mlmesh_tests::Service, mlmesh_tests::Service) {
    let svc = mlmesh_tests::Service::start("mlmesh-inference", &[]);
    let mut env = vec![
        ("MLMESH_DOWNSTREAM__INFERENCE", svc.addr.to_string()),
        ("MLMESH_DOWNSTREAM__EMBEDDING", "127.0.0.1:9".into()),
        ("MLMESH_DOWNSTREAM__VECTOR_SEARCH", "127.0.0.1:9".into()),
        ("MLMESH_HTTP__LISTEN", "off".into()),
    ];
    env.extend(gateway_env.iter().cloned());
    let gateway = mlmesh_tests::Service::start("mlmesh-gateway", &env);
    (svc, gateway)
}

/// One iris row as a ModelInfer request: the well-behaved call.
pub(crate) fn iris_row() -> mlmesh_proto::inference::ModelInferRequest {
    use mlmesh_proto::inference::{self as ipb, model_infer_request::InferInputTensor};
    let row = [5.1f32, 3.5, 1.4, 0.2];
    ipb::ModelInferRequest {
        model_name: "iris-logreg".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![row.iter().flat_map(|x| x.to_le_bytes()).collect()],
        ..Default::default()
    }
}

/// Sends pre-encoded protobuf bytes as a gRPC request, decodes the answer
/// as `Vec<u8>`: a client that can say what a generated one would not.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf as _;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Twelve megabytes of empty repeated messages (`inputs`, two bytes each)
/// would decode into six million structs, gigabytes: the element walk
/// refuses them before decoding (RESOURCE_EXHAUSTED naming the field and
/// server.max_request_elements), on the inference service and through the
/// gateway, with peak RSS growing by little more than the message, and
/// the next call is served.
#[test]
fn empty_repeated_messages_are_refused_before_inflating() {
    use mlmesh_proto::inference::{
        self as ipb, grpc_inference_service_client::GrpcInferenceServiceClient,
    };
    let _serial = mlmesh_tests::serial();
    let (svc, gateway) = inference_behind_gateway(&[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // model_name, then six million empty `inputs` (field 5).
    let mut wire = prost::Message::encode_to_vec(&ipb::ModelInferRequest {
        model_name: "iris-logreg".into(),
        ..Default::default()
    });
    for _ in 0..6_000_000 {
        wire.extend_from_slice(&[5 << 3 | 2, 0]);
    }
    let fine = iris_row();
    for target in [&svc, &gateway] {
        let before = (
            peak_rss_kib(svc.child.id()),
            peak_rss_kib(gateway.child.id()),
        );
        rt.block_on(async {
            let channel =
                tonic::transport::Endpoint::from_shared(format!("http://{}", target.addr))
                    .expect("uri")
                    .connect()
                    .await
                    .expect("connect");
            let mut raw = tonic::client::Grpc::new(channel.clone());
            raw.ready().await.expect("ready");
            let e = raw
                .unary(
                    tonic::Request::new(wire.clone()),
                    tonic::codegen::http::uri::PathAndQuery::from_static(
                        "/inference.GRPCInferenceService/ModelInfer",
                    ),
                    RawCodec,
                )
                .await
                .expect_err("six million empty inputs");
            assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
            assert!(
                e.message().contains("ModelInferRequest.inputs")
                    && e.message().contains("server.max_request_elements"),
                "{}",
                e.message()
            );
            let ok = GrpcInferenceServiceClient::new(channel)
                .model_infer(fine.clone())
                .await
                .expect("the next call is served");
            assert_eq!(ok.into_inner().model_name, "iris-logreg");
        });
        let after = (
            peak_rss_kib(svc.child.id()),
            peak_rss_kib(gateway.child.id()),
        );
        // Decoded, the inputs alone would be about 1.5 GB; the message is
        // 12 MB (held a few times over by the transport).
        for (name, b, a) in [
            ("inference", before.0, after.0),
            ("gateway", before.1, after.1),
        ] {
            assert!(
                a.saturating_sub(b) < 96 * 1024,
                "{name}: peak RSS grew from {b} to {a} KiB on refused empty elements"
            );
        }
    }
}
