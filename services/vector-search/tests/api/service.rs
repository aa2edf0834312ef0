//! Service behaviour on the embedded backend: background indexing, restart,
//! health, reflection and metrics.

use std::time::{Duration, Instant};

use mlmesh_proto::vector::v1 as pb;
use serde_json::json;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::helpers::*;

async fn info(app: &TestApp, name: &str) -> pb::CollectionInfo {
    app.client()
        .get_collection(pb::GetCollectionRequest { name: name.into() })
        .await
        .expect("info")
        .into_inner()
}

#[tokio::test]
async fn indexing_runs_in_the_background_and_hnsw_agrees_with_exact_search() {
    // 64 KB threshold: 500 vectors of dimension 32 need a graph.
    let app = spawn_app_with(|s| s.vector.indexing_threshold_kb = 64).await;
    let name = app.collection("index", 32, pb::Distance::Cosine).await;
    for chunk in (0..3000u64).collect::<Vec<_>>().chunks(500) {
        app.upsert(
            &name,
            chunk
                .iter()
                .map(|i| point(*i, unit_vector(*i, 32), json!({"i": i})))
                .collect(),
        )
        .await;
        // Searches are answered while the optimizer works.
        assert_eq!(app.search(&name, unit_vector(7, 32), 1).await.len(), 1);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let indexed = loop {
        let i = info(&app, &name).await;
        if i.status() == pb::IndexStatus::Ready && i.indexed_vectors_count > 0 {
            break i;
        }
        assert!(Instant::now() < deadline, "not indexed in time: {i:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(indexed.points_count, 3000);
    assert!(
        app.metric("mlmesh_vector_optimizations_total").await >= 1.0,
        "an optimisation pass ran"
    );

    let mut found = 0;
    let queries = 20u64;
    for q in 0..queries {
        let v = unit_vector(10_000 + q, 32);
        let approx = app.search(&name, v.clone(), 10).await;
        let exact = app
            .client()
            .search(pb::SearchRequest {
                collection: name.clone(),
                vector: v,
                limit: 10,
                exact: true,
                ..Default::default()
            })
            .await
            .expect("exact")
            .into_inner()
            .hits;
        let exact_ids: Vec<u64> = exact.iter().map(|h| id_num(&h.id)).collect();
        found += approx
            .iter()
            .filter(|h| exact_ids.contains(&id_num(&h.id)))
            .count();
    }
    let recall = found as f64 / (queries * 10) as f64;
    assert!(recall >= 0.9, "recall@10 {recall}");
    app.stop().await;
}

#[tokio::test]
async fn int8_collections_search_bytes_then_rescore_with_the_originals() {
    // 64 KB threshold: 3000 vectors of dimension 32 get a graph, and with it
    // the byte copies of their vectors.
    let app = spawn_app_with(|s| s.vector.indexing_threshold_kb = 64).await;
    let name = unique_name("int8");
    app.client()
        .create_collection(pb::CreateCollectionRequest {
            name: name.clone(),
            dimension: 32,
            distance: pb::Distance::Cosine.into(),
            quantization: pb::Quantization::Int8.into(),
            ..Default::default()
        })
        .await
        .expect("create");
    let stored: Vec<Vec<f32>> = (0..3000u64).map(|i| unit_vector(i, 32)).collect();
    for (c, chunk) in stored.chunks(500).enumerate() {
        app.upsert(
            &name,
            chunk
                .iter()
                .enumerate()
                .map(|(j, v)| point((c * 500 + j) as u64, v.clone(), json!({})))
                .collect(),
        )
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let i = info(&app, &name).await;
        if i.status() == pb::IndexStatus::Ready && i.indexed_vectors_count >= 2500 {
            assert_eq!(i.quantization(), pb::Quantization::Int8);
            break;
        }
        assert!(Instant::now() < deadline, "not indexed in time: {i:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let cosine = mlmesh_vector_search::model::Distance::Cosine;
    let (mut found, mut rescored_off, mut raw_off) = (0, 0, 0);
    let queries = 20u64;
    for q in 0..queries {
        let v = unit_vector(10_000 + q, 32);
        let mut exact: Vec<(u64, f32)> = stored
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u64, mlmesh_vector_search::model::score(cosine, &v, s)))
            .collect();
        exact.sort_by(|a, b| b.1.total_cmp(&a.1));
        let truth: Vec<u64> = exact.iter().take(10).map(|e| e.0).collect();
        let score_of = |id: u64| {
            exact
                .iter()
                .find(|e| e.0 == id)
                .map(|e| e.1)
                .unwrap_or(f32::NAN)
        };
        let search = |skip_rescore: bool| {
            let mut c = app.client();
            let (name, v) = (name.clone(), v.clone());
            async move {
                c.search(pb::SearchRequest {
                    collection: name,
                    vector: v,
                    limit: 10,
                    skip_rescore,
                    ..Default::default()
                })
                .await
                .expect("search")
                .into_inner()
                .hits
            }
        };
        let rescored = search(false).await;
        found += rescored
            .iter()
            .filter(|h| truth.contains(&id_num(&h.id)))
            .count();
        rescored_off += rescored
            .iter()
            .filter(|h| (h.score - score_of(id_num(&h.id))).abs() > 1e-4)
            .count();
        raw_off += search(true)
            .await
            .iter()
            .filter(|h| (h.score - score_of(id_num(&h.id))).abs() > 1e-4)
            .count();
    }
    let recall = found as f64 / (queries * 10) as f64;
    assert!(recall >= 0.9, "recall@10 {recall}");
    // Rescored hits carry the exact float32 scores; without rescoring they
    // carry the byte search's approximations, which shows the bytes are used.
    assert_eq!(rescored_off, 0, "rescored scores differ from exact ones");
    assert!(
        raw_off > 0,
        "no score from the byte search differs from the exact one"
    );
    app.stop().await;
}

/// A stopped service's data folder holding collection `tag` with 50 points
/// in 4 dimensions: the folder, the collection's name, and the top-5 hits
/// for `unit_vector(3, 4)` before the stop.
async fn fifty_points_then_stopped(
    tag: &str,
) -> (mlmesh_tests::TempDir, String, Vec<pb::ScoredPoint>) {
    let data = mlmesh_tests::TempDir::new(&format!("vector-{tag}"));
    let app = start(
        mlmesh_vector_search::Settings::for_tests(data.path().to_owned()),
        None,
    )
    .await;
    let name = app.collection(tag, 4, pb::Distance::Dot).await;
    app.upsert(
        &name,
        (0..50u64)
            .map(|i| point(i, unit_vector(i, 4), json!({"n": i})))
            .collect(),
    )
    .await;
    let before = app.search(&name, unit_vector(3, 4), 5).await;
    app.stop().await;
    (data, name, before)
}

#[tokio::test]
async fn a_restarted_service_finds_its_collections_and_points() {
    let (data, name, before) = fifty_points_then_stopped("restart").await;
    let settings = || mlmesh_vector_search::Settings::for_tests(data.path().to_owned());

    let app = start(settings(), None).await;
    let after = app.search(&name, unit_vector(3, 4), 5).await;
    assert_eq!(before, after);
    assert_eq!(info(&app, &name).await.points_count, 50);
    app.stop().await;
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

/// The state a `kill -9` in the middle of a segment swap leaves: the same
/// points in two segments. The engine does not deduplicate at load; the
/// service finds the double count at start and rewrites the points once.
#[tokio::test]
async fn points_duplicated_across_segments_are_repaired_at_start() {
    let (data, name, before) = fifty_points_then_stopped("dup").await;
    let settings = || mlmesh_vector_search::Settings::for_tests(data.path().to_owned());

    // Copy every segment folder under a new name.
    let coll = collection_dir(data.path(), &name);
    // A crash leaves no clean-shutdown marker.
    std::fs::remove_file(coll.join("clean-shutdown")).expect("a clean stop marks the collection");
    let segments = coll.join("shard").join("segments");
    let originals: Vec<_> = std::fs::read_dir(&segments)
        .expect("segments folder")
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    assert!(!originals.is_empty());
    for e in originals {
        copy_dir(&e.path(), &segments.join(uuid::Uuid::new_v4().to_string()));
    }

    let app = start(settings(), None).await;
    assert_eq!(
        info(&app, &name).await.points_count,
        50,
        "one copy of each point"
    );
    let after = app.search(&name, unit_vector(3, 4), 5).await;
    assert_eq!(before, after);
    app.stop().await;
    // And it stays repaired.
    let app = start(settings(), None).await;
    assert_eq!(info(&app, &name).await.points_count, 50);
    app.stop().await;
}

#[tokio::test]
async fn health_reflection_and_metrics_are_served() {
    let app = spawn_app().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel);
    let status = health
        .check(HealthCheckRequest {
            service: "mlmesh.vector.v1.VectorSearch".into(),
        })
        .await
        .expect("health")
        .into_inner()
        .status;
    assert_eq!(status, 1, "SERVING");

    let name = app.collection("metrics", 2, pb::Distance::Dot).await;
    app.upsert(
        &name,
        (0..7u64)
            .map(|i| point(i, vec![1.0, i as f32], json!({})))
            .collect(),
    )
    .await;
    app.search(&name, vec![1.0, 0.0], 3).await;
    let label = format!("{{collection=\"{name}\"}}");
    assert_eq!(
        app.metric(&format!(
            "mlmesh_vector_upsert_duration_seconds_count{label}"
        ))
        .await,
        1.0
    );
    assert_eq!(
        app.metric(&format!(
            "mlmesh_vector_search_duration_seconds_count{label}"
        ))
        .await,
        1.0
    );
    assert_eq!(
        app.metric(&format!("mlmesh_vector_upserted_points_total{label}"))
            .await,
        7.0
    );
    // The gauge is refreshed by a background task (every second in tests).
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.metric(&format!("mlmesh_vector_points{label}")).await != 7.0 {
        assert!(Instant::now() < deadline, "points gauge never reached 7");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        app.metric("mlmesh_vector_requests_total{code=\"OK\",method=\"Upsert\"}")
            .await
            >= 1.0
    );
    app.stop().await;
}

/// The collection folder of `name` under `data`.
fn collection_dir(data: &std::path::Path, name: &str) -> std::path::PathBuf {
    std::fs::read_dir(data)
        .expect("data dir")
        .flatten()
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}-"))
        })
        .expect("collection folder")
        .path()
}

/// Shard folders in a collection folder, with the bytes allocated under
/// their `wal` and `segments` folders.
fn shard_folders(dir: &std::path::Path) -> Vec<(String, u64, u64)> {
    fn allocated(p: &std::path::Path) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        let Ok(m) = std::fs::symlink_metadata(p) else {
            return 0;
        };
        if !m.is_dir() {
            return m.blocks() * 512;
        }
        std::fs::read_dir(p)
            .expect("read_dir")
            .flatten()
            .map(|e| allocated(&e.path()))
            .sum()
    }
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .expect("collection dir")
        .flatten()
        .filter(|e| e.path().is_dir() && e.file_name().to_string_lossy().starts_with("shard"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                allocated(&e.path().join("wal")),
                allocated(&e.path().join("segments")),
            )
        })
        .collect();
    out.sort();
    out
}

async fn get_payload(app: &TestApp, name: &str, id: u64) -> Option<serde_json::Value> {
    app.client()
        .get(pb::GetRequest {
            collection: name.into(),
            ids: num(id).into_iter().collect(),
            with_payload: true,
            with_vectors: false,
        })
        .await
        .expect("get")
        .into_inner()
        .points
        .first()
        .map(|p| json(&p.payload))
}

/// qdrant-edge never truncates its own write-ahead log, so rewriting the
/// same points again and again grew it without bound. With the MiB floor
/// at 0, the maintenance thread compacts a collection once that log passes
/// twice its segments. Checked here: the log shrinks, one shard folder is
/// left, every point keeps its latest payload and vector, writes after the
/// compaction win (updates of existing points too, although the new
/// shard's operation numbers, the points' versions, started again from
/// zero), and all of it survives a restart.
#[tokio::test]
async fn the_engines_own_log_is_compacted_and_nothing_is_lost() {
    let data = mlmesh_tests::TempDir::new("vector-compact");
    let settings = || {
        let mut s = mlmesh_vector_search::Settings::for_tests(data.path().to_owned());
        s.vector.engine_wal_limit_mb = 0;
        s
    };
    let app = start(settings(), None).await;
    let name = app.collection("compact", 64, pb::Distance::Cosine).await;
    let dir = collection_dir(data.path(), &name);
    let rounds = 40u64;
    for round in 0..rounds {
        app.upsert(
            &name,
            (0..200u64)
                .map(|i| {
                    point(
                        i,
                        unit_vector(i * 1000 + round, 64),
                        json!({"n": i, "round": round}),
                    )
                })
                .collect(),
        )
        .await;
    }
    let grown: u64 = shard_folders(&dir).iter().map(|(_, wal, _)| wal).sum();
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.metric("mlmesh_vector_compactions_total").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "no compaction within 30 s; shard folders (name, log bytes, segment bytes): {:?}",
            shard_folders(&dir)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shards = shard_folders(&dir);
    assert_eq!(
        shards.len(),
        1,
        "one shard folder after compaction: {shards:?}"
    );
    assert_ne!(
        shards[0].0, "shard",
        "collection.json now names the new folder"
    );
    // The new log holds one copy of every point plus the writes replayed
    // from our log (those made while the copy was written: more of them on
    // a loaded machine), so it is compared with half the old one, not with
    // one copy.
    assert!(
        shards[0].1 * 2 < grown,
        "the engine log shrank: {grown} bytes before, {shards:?} after"
    );

    let last = rounds - 1;
    assert_eq!(app.count(&name).await, 200);
    assert_eq!(
        get_payload(&app, &name, 5).await,
        Some(json!({"n": 5, "round": last}))
    );

    // Writes after the switch: an update of an existing point and a delete.
    app.upsert(
        &name,
        vec![point(
            3,
            unit_vector(424_242, 64),
            json!({"n": 3, "round": "after"}),
        )],
    )
    .await;
    app.client()
        .delete(pb::DeleteRequest {
            collection: name.clone(),
            selector: Some(pb::delete_request::Selector::Ids(pb::PointIdList {
                ids: num(4).into_iter().collect(),
            })),
        })
        .await
        .expect("delete");
    expect_compacted_state(&app, &name, last).await;
    app.stop().await;

    let app = start(settings(), None).await;
    expect_compacted_state(&app, &name, last).await;
    app.stop().await;
}

/// What the compaction test expects, before and after a restart.
async fn expect_compacted_state(app: &TestApp, name: &str, last: u64) {
    assert_eq!(app.count(name).await, 199);
    assert_eq!(
        get_payload(app, name, 4).await,
        None,
        "deleted after the switch"
    );
    assert_eq!(
        get_payload(app, name, 3).await,
        Some(json!({"n": 3, "round": "after"})),
        "an update after the switch wins"
    );
    assert_eq!(
        get_payload(app, name, 5).await,
        Some(json!({"n": 5, "round": last}))
    );
    for (id, vector) in [
        (3, unit_vector(424_242, 64)),
        (7, unit_vector(7 * 1000 + last, 64)),
    ] {
        let hits = app.search(name, vector, 1).await;
        assert_eq!(hits[0].id, num(id));
        assert!(hits[0].score > 0.999, "point {id} keeps its latest vector");
    }
}

/// A crash in the middle of a compaction leaves a second shard folder that
/// `collection.json` does not name; the next start removes it and serves
/// the collection from the folder it names.
#[tokio::test]
async fn a_shard_folder_left_by_an_interrupted_compaction_is_removed() {
    let (data, name, before) = fifty_points_then_stopped("stray").await;
    let dir = collection_dir(data.path(), &name);
    let stray = dir.join("shard-0123456789abcdef0123456789abcdef");
    std::fs::create_dir_all(stray.join("segments")).expect("mkdir");
    std::fs::write(stray.join("segments").join("half-written"), b"x").expect("write");

    let app = start(
        mlmesh_vector_search::Settings::for_tests(data.path().to_owned()),
        None,
    )
    .await;
    assert!(
        !stray.exists(),
        "the stray shard folder is removed at start"
    );
    let names: Vec<String> = shard_folders(&dir).into_iter().map(|s| s.0).collect();
    assert_eq!(names, ["shard"]);
    assert_eq!(app.count(&name).await, 50);
    assert_eq!(app.search(&name, unit_vector(3, 4), 5).await, before);
    app.stop().await;
}
