//! The vector-search binary as a process: acknowledged writes survive
//! `kill -9`, with and without an optimisation (HNSW build) in progress.

use mlmesh_tests::OutputWithin as _;
use std::time::Duration;

use mlmesh_proto::json::{json_to_struct, struct_to_json};
use mlmesh_proto::vector::v1::{self as pb, vector_search_client::VectorSearchClient};
use mlmesh_tests::{Service, TempDir};
use serde_json::{Value, json};
use tonic::transport::Channel;

const DIM: usize = 48;

fn vector(i: u64) -> Vec<f32> {
    // Deterministic, distinct, not normalized (DOT keeps vectors as sent).
    (0..DIM)
        .map(|d| ((i * 31 + d as u64 * 7) % 97) as f32 / 97.0 - 0.5)
        .collect()
}

fn payload(i: u64) -> Value {
    json!({"doc": format!("doc-{i}"), "n": i, "even": i.is_multiple_of(2), "tags": ["t", i.to_string()]})
}

fn id(i: u64) -> pb::PointId {
    if i.is_multiple_of(5) {
        // Some UUID ids too, derived from the number.
        pb::PointId {
            kind: Some(pb::point_id::Kind::Uuid(
                uuid::Uuid::from_u128(0xabcd_0000_0000_0000_0000_0000_0000_0000 | i as u128)
                    .to_string(),
            )),
        }
    } else {
        pb::PointId {
            kind: Some(pb::point_id::Kind::Num(i)),
        }
    }
}

fn start(data: &TempDir, extra: &[(&str, String)]) -> Service {
    let mut env = vec![
        ("MLMESH_VECTOR__DATA_DIR", data.path().display().to_string()),
        // No checkpoint during the test: acknowledged writes live only in
        // the operation log and the engine's unflushed files.
        (
            "MLMESH_VECTOR__CHECKPOINT_INTERVAL_SECS",
            "3600".to_string(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
    Service::start("mlmesh-vector-search", &env)
}

async fn client(svc: &Service) -> VectorSearchClient<Channel> {
    VectorSearchClient::connect(format!("http://{}", svc.addr))
        .await
        .expect("connect")
}

async fn upsert_range(c: &mut VectorSearchClient<Channel>, name: &str, ids: std::ops::Range<u64>) {
    let ids: Vec<u64> = ids.collect();
    for chunk in ids.chunks(100) {
        let points = chunk
            .iter()
            .map(|i| pb::Point {
                id: Some(id(*i)),
                vector: vector(*i),
                payload: match payload(*i) {
                    Value::Object(m) => Some(json_to_struct(m)),
                    _ => None,
                },
                ..Default::default()
            })
            .collect();
        c.upsert(pb::UpsertRequest {
            collection: name.into(),
            points,
        })
        .await
        .expect("upsert acknowledged");
    }
}

/// Every id in `expected` is present with its vector and payload; no other point exists.
async fn assert_exactly(c: &mut VectorSearchClient<Channel>, name: &str, expected: &[u64]) {
    let count = c
        .count(pb::CountRequest {
            collection: name.into(),
            filter: None,
        })
        .await
        .expect("count")
        .into_inner()
        .count;
    assert_eq!(count, expected.len() as u64, "point count after restart");
    for chunk in expected.chunks(500) {
        let got = c
            .get(pb::GetRequest {
                collection: name.into(),
                ids: chunk.iter().map(|i| id(*i)).collect(),
                with_payload: true,
                with_vectors: true,
            })
            .await
            .expect("get")
            .into_inner()
            .points;
        assert_eq!(got.len(), chunk.len(), "every acknowledged point is back");
        for (i, p) in chunk.iter().zip(got) {
            assert_eq!(p.id, Some(id(*i)));
            assert_eq!(p.vector, vector(*i), "vector of point {i}");
            let back = struct_to_json("payload", p.payload.unwrap_or_default()).expect("payload");
            assert_eq!(Value::Object(back), payload(*i), "payload of point {i}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let _serial = mlmesh_tests::serial_async().await;
    let data = TempDir::new("vector-kill9");
    let name = "durable";

    // 1. Writes with no checkpoint at all, then SIGKILL.
    let mut svc = start(&data, &[]);
    let mut c = client(&svc).await;
    c.create_collection(pb::CreateCollectionRequest {
        name: name.into(),
        dimension: DIM as u32,
        distance: pb::Distance::Dot.into(),
        hnsw: None,
        metadata: Default::default(),
        ..Default::default()
    })
    .await
    .expect("create");
    upsert_range(&mut c, name, 0..1500).await;
    // An overwrite and deletes (by id and by filter) must survive too.
    upsert_range(&mut c, name, 100..200).await;
    c.delete(pb::DeleteRequest {
        collection: name.into(),
        selector: Some(pb::delete_request::Selector::Ids(pb::PointIdList {
            ids: (0..10).map(id).collect(),
        })),
    })
    .await
    .expect("delete ids");
    c.delete(pb::DeleteRequest {
        collection: name.into(),
        selector: Some(pb::delete_request::Selector::Filter(pb::Filter {
            must: vec![pb::Condition {
                condition: Some(pb::condition::Condition::Field(pb::FieldCondition {
                    key: "n".into(),
                    test: Some(pb::field_condition::Test::Range(pb::Range {
                        gte: Some(1400.0),
                        ..Default::default()
                    })),
                })),
            }],
            ..Default::default()
        })),
    })
    .await
    .expect("delete filter");
    svc.kill();
    let mut expected: Vec<u64> = (10..1400).collect();

    let svc = start(&data, &[]);
    let mut c = client(&svc).await;
    assert_exactly(&mut c, name, &expected).await;
    drop(c);
    drop(svc); // SIGKILL again, right after recovery.

    // 2. Writes that cross the indexing threshold, killed while the
    //    optimizer builds the graph (or just after).
    let mut svc = start(
        &data,
        &[
            ("MLMESH_VECTOR__INDEXING_THRESHOLD_KB", "100".to_string()),
            ("MLMESH_VECTOR__CHECKPOINT_INTERVAL_SECS", "1".to_string()),
        ],
    );
    let mut c = client(&svc).await;
    assert_exactly(&mut c, name, &expected).await;
    upsert_range(&mut c, name, 1400..4000).await;
    expected.extend(1400..4000);
    // Give the maintenance loop time to start optimising, then kill it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let optimizing = c
        .get_collection(pb::GetCollectionRequest { name: name.into() })
        .await
        .expect("info")
        .into_inner();
    eprintln!("killed with collection state {optimizing:?}");
    upsert_range(&mut c, name, 4000..4100).await;
    expected.extend(4000..4100);
    svc.kill();

    let svc = start(&data, &[]);
    let mut c = client(&svc).await;
    assert_exactly(&mut c, name, &expected).await;
    let hits = c
        .search(pb::SearchRequest {
            collection: name.into(),
            vector: vector(2500),
            limit: 1,
            ..Default::default()
        })
        .await
        .expect("search after recovery")
        .into_inner()
        .hits;
    assert_eq!(hits.len(), 1);
    drop(svc);
}

#[test]
fn help_documents_every_setting() {
    let _serial = mlmesh_tests::serial();
    let out = std::process::Command::new(mlmesh_tests::binary("mlmesh-vector-search"))
        .arg("--help")
        .output_within(mlmesh_tests::CHILD_LIMIT)
        .expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for key in [
        "--config",
        "--data-dir",
        "MLMESH_VECTOR__BACKEND",
        "MLMESH_VECTOR__DATA_DIR",
        "MLMESH_VECTOR__SYNC_WRITES",
        "MLMESH_VECTOR__INDEXING_THRESHOLD_KB",
        "MLMESH_VECTOR__MAX_SEARCH_LIMIT",
        "MLMESH_VECTOR__MAX_IN_FLIGHT",
        "MLMESH_QDRANT__URL",
        "MLMESH_QDRANT__API_KEY",
        "MLMESH_SERVER__MAX_REQUEST_BYTES",
    ] {
        assert!(help.contains(key), "--help lacks {key}");
    }
}

#[test]
fn bad_configuration_fails_at_start_naming_the_key() {
    let _serial = mlmesh_tests::serial();
    let data = TempDir::new("vector-badconfig");
    for (key, value, expect) in [
        ("MLMESH_VECTOR__BACKEND", "faiss", "backend"),
        (
            "MLMESH_VECTOR__MAX_SEARCH_LIMIT",
            "0",
            "vector.max_search_limit",
        ),
        ("MLMESH_VECTOR__HNSW_M", "1000", "vector.hnsw_m"),
        (
            "MLMESH_VECTOR__DATA_DIR",
            "/proc/forbidden",
            "vector.data_dir",
        ),
    ] {
        let out = std::process::Command::new(mlmesh_tests::binary("mlmesh-vector-search"))
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .env("MLMESH_VECTOR__DATA_DIR", data.path())
            .env(key, value)
            .output_within(mlmesh_tests::CHILD_LIMIT)
            .expect("run");
        assert!(!out.status.success(), "{key}={value} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(expect),
            "{key}={value}: stderr lacks {expect:?}:\n{err}"
        );
    }
}
