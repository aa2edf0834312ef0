//! Versions: verified uploads, resumes, deduplicated contents, downloads
//! and ranges, status and deletion. What is refused and bounded: `limits.rs`.

use mlmesh_proto::registry::v1 as pb;
use tonic::Code;

use crate::helpers::{Store, assert_status, bytes, manifest, sha256};

async fn a_pushed_version_downloads_byte_for_byte(store: Store) {
    let Some(env) = store.env("a_pushed_version_downloads_byte_for_byte") else {
        return;
    };
    let app = env.spawn(|_| {}).await;
    app.create("iris").await;
    let files = vec![
        ("model.onnx", bytes(1, 300_000)),
        ("config/config.pbtxt", b"name: \"iris\"\n".to_vec()),
        ("empty", Vec::new()),
    ];
    let v = app.push("iris", &files).await;
    assert_eq!(v.version, 1);
    assert_eq!(v.status, pb::VersionStatus::Ready as i32);
    assert_eq!(v.total_size, 300_000 + 13);
    assert_eq!(v.files, manifest(&files));
    // The manifest digest as documented in the proto: sha256 over
    // "<sha256>  <size>  <path>\n" in path order.
    let mut lines: Vec<String> = files
        .iter()
        .map(|(p, b)| format!("{}  {}  {p}\n", sha256(b), b.len()))
        .collect();
    lines.sort_by(|a, b| a.rsplit("  ").next().cmp(&b.rsplit("  ").next()));
    assert_eq!(v.manifest_digest, sha256(lines.concat().as_bytes()));

    let pulled = app.pull("iris", 1).await;
    let want: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(p, b)| ((*p).to_owned(), b.clone()))
        .collect();
    assert_eq!(pulled, want);

    // A byte range of one file.
    let mut s = app
        .client()
        .download(pb::DownloadRequest {
            model: "iris".into(),
            selector: Some(pb::download_request::Selector::Version(1)),
            path: "model.onnx".into(),
            offset: 1000,
            length: 5000,
        })
        .await
        .expect("range")
        .into_inner();
    let mut got = Vec::new();
    while let Some(c) = s.message().await.expect("chunk") {
        assert_eq!(c.version, 1);
        got.extend_from_slice(&c.data);
    }
    assert_eq!(got, files[0].1[1000..6000]);

    // Versions count up; the model's latest follows.
    let v2 = app.push("iris", &[("model.onnx", bytes(2, 10))]).await;
    assert_eq!(v2.version, 2);
    let list = app
        .client()
        .list_versions(pb::ListVersionsRequest {
            model: "iris".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        list.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [2, 1]
    );
    app.stop().await;
}

async fn an_upload_resumes_where_the_broken_stream_stopped(store: Store) {
    let Some(env) = store.env("an_upload_resumes_where_the_broken_stream_stopped") else {
        return;
    };
    let app = env.spawn(|_| {}).await;
    app.create("big").await;
    let files = vec![
        ("weights", bytes(3, 200_000)),
        ("tokenizer", bytes(4, 5_000)),
    ];
    let up = app.start("big", &files).await.expect("start");
    assert!(up.files.iter().all(|f| f.received == 0));
    // First stream: 120 000 bytes of the first file, then it ends.
    let first: Vec<pb::UploadChunk> = (0..3)
        .map(|i| pb::UploadChunk {
            upload_id: up.upload_id.clone(),
            path: "weights".into(),
            offset: i * 40_000,
            data: files[0].1[(i as usize * 40_000)..((i as usize + 1) * 40_000)]
                .to_vec()
                .into(),
        })
        .collect();
    let partial = app.send_chunks(first).await.expect("partial upload");
    assert!(partial.version.is_none(), "not committed yet");
    assert_eq!(partial.upload.expect("progress").files[0].received, 120_000);
    // Nothing is visible meanwhile.
    assert_status(
        app.client()
            .get_version(pb::GetVersionRequest {
                model: "big".into(),
                selector: Some(pb::get_version_request::Selector::Version(1)),
            })
            .await,
        Code::NotFound,
        &["version 1"],
    );
    let now = app
        .client()
        .get_upload(pb::GetUploadRequest {
            upload_id: up.upload_id.clone(),
        })
        .await
        .expect("progress")
        .into_inner();
    let held = now.files[0].received as usize;
    assert_eq!(held, 120_000);
    // Resending from the wrong offset is refused and names the right one.
    assert_status(
        app.send_chunks(vec![pb::UploadChunk {
            upload_id: up.upload_id.clone(),
            path: "weights".into(),
            offset: 0,
            data: vec![0u8; 10].into(),
        }])
        .await,
        Code::InvalidArgument,
        &["weights", "120000"],
    );
    // Second stream: the rest.
    let rest = vec![
        pb::UploadChunk {
            upload_id: up.upload_id.clone(),
            path: "weights".into(),
            offset: held as u64,
            data: files[0].1[held..].to_vec().into(),
        },
        pb::UploadChunk {
            upload_id: String::new(),
            path: "tokenizer".into(),
            offset: 0,
            data: files[1].1.clone().into(),
        },
    ];
    let done = app.send_chunks(rest).await.expect("resumed upload");
    let v = done.version.expect("committed");
    assert_eq!(v.version, 1);
    // The resume continued the hash from its checkpoint: the 120 000
    // bytes already verified were not read again.
    assert_eq!(
        app.metric("mlmesh_registry_upload_rehashed_bytes_total")
            .await,
        0.0
    );
    // Without its checkpoint (a crash between bytes and checkpoint) a
    // resume hashes the staged bytes again, and still commits.
    let other = bytes(5, 200_000);
    let again = app
        .start("big", &[("weights", other.clone())])
        .await
        .expect("start");
    let part = pb::UploadChunk {
        upload_id: again.upload_id.clone(),
        path: "weights".into(),
        offset: 0,
        data: other[..50_000].to_vec().into(),
    };
    app.send_chunks(vec![part]).await.expect("partial");
    let state = env
        .dir
        .path()
        .join("uploads")
        .join(&again.upload_id)
        .join("0.sha256-state");
    std::fs::remove_file(&state).expect("the checkpoint is beside the staged file");
    let rest = pb::UploadChunk {
        upload_id: again.upload_id.clone(),
        path: "weights".into(),
        offset: 50_000,
        data: other[50_000..].to_vec().into(),
    };
    let done = app.send_chunks(vec![rest]).await.expect("resumed");
    assert!(done.version.is_some(), "committed");
    assert_eq!(
        app.metric("mlmesh_registry_upload_rehashed_bytes_total")
            .await,
        50_000.0
    );
    let pulled = app.pull("big", 1).await;
    assert_eq!(pulled[0].1, files[0].1);
    assert_eq!(pulled[1].1, files[1].1);
    // The upload is gone once committed.
    assert_status(
        app.client()
            .get_upload(pb::GetUploadRequest {
                upload_id: up.upload_id,
            })
            .await,
        Code::NotFound,
        &["upload"],
    );
    app.stop().await;
}

async fn a_stored_content_is_stored_once_and_never_resent(store: Store) {
    let Some(env) = store.env("a_stored_content_is_stored_once_and_never_resent") else {
        return;
    };
    let app = env.spawn(|_| {}).await;
    app.create("m").await;
    let shared = bytes(5, 50_000);
    app.push("m", &[("a", shared.clone())]).await;
    let files = vec![("a", shared.clone()), ("b", bytes(6, 10))];
    let up = app.start("m", &files).await.expect("start");
    assert_eq!(up.files[0].received, 50_000, "already held");
    assert_eq!(up.files[1].received, 0);
    // Only the new file is sent.
    let done = app
        .send(&up.upload_id, &files[1..], 1024)
        .await
        .expect("send");
    let v = done.version.expect("committed");
    assert_eq!(app.pull("m", v.version).await[0].1, shared);
    let stored = app.stored_blobs().await;
    assert_eq!(stored, 2, "two distinct contents, stored once each");
    app.stop().await;
}

pub fn count_files(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            n += count_files(&p);
        } else {
            n += 1;
        }
    }
    n
}

async fn a_digest_or_size_mismatch_fails_the_upload_and_commits_nothing(store: Store) {
    let Some(env) = store.env("a_digest_or_size_mismatch_fails_the_upload_and_commits_nothing")
    else {
        return;
    };
    let app = env.spawn(|_| {}).await;
    app.create("m").await;
    let good = vec![("ok", bytes(7, 1000)), ("model.bin", bytes(8, 1000))];
    // Declared digest of other bytes.
    let up = app
        .client()
        .start_upload(pb::StartUploadRequest {
            model: "m".into(),
            files: manifest(&[("ok", good[0].1.clone()), ("model.bin", bytes(9, 1000))]),
            ..Default::default()
        })
        .await
        .expect("start")
        .into_inner();
    assert_status(
        app.send(&up.upload_id, &good, 300).await,
        Code::InvalidArgument,
        &["model.bin", "sha256"],
    );
    // The upload is dropped and no version exists.
    assert_status(
        app.client()
            .get_upload(pb::GetUploadRequest {
                upload_id: up.upload_id,
            })
            .await,
        Code::NotFound,
        &[],
    );
    let m = app
        .client()
        .get_model(pb::GetModelRequest { name: "m".into() })
        .await
        .expect("model")
        .into_inner();
    assert_eq!(m.latest_version, 0);
    // More bytes than declared.
    let up = app.start("m", &[("x", vec![1; 10])]).await.expect("start");
    assert_status(
        app.send(&up.upload_id, &[("x", vec![1; 11])], 100).await,
        Code::InvalidArgument,
        &["\"x\"", "declared size of 10"],
    );
    assert_eq!(app.stored_blobs().await, 0);
    assert_eq!(count_files(&env.dir.path().join("uploads")), 0);
    app.stop().await;
}

async fn status_changes_and_deletion(store: Store) {
    let Some(env) = store.env("status_changes_and_deletion") else {
        return;
    };
    let app = env.spawn(|_| {}).await;
    app.create("m").await;
    app.push("m", &[("a", vec![1])]).await;
    app.push("m", &[("a", vec![2])]).await;
    let mut c = app.client();
    let v = c
        .set_version_status(pb::SetVersionStatusRequest {
            model: "m".into(),
            version: 1,
            status: pb::VersionStatus::Deprecated as i32,
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(v.status, pb::VersionStatus::Deprecated as i32);
    let ready = c
        .list_versions(pb::ListVersionsRequest {
            model: "m".into(),
            status: pb::VersionStatus::Ready as i32,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(ready.versions.len(), 1);
    assert_eq!(ready.versions[0].version, 2);
    // A version an alias names cannot go; after the alias moves it can.
    app.set_alias("m", "production", 1, None)
        .await
        .expect("alias");
    assert_status(
        c.delete_version(pb::DeleteVersionRequest {
            model: "m".into(),
            version: 1,
        })
        .await,
        Code::FailedPrecondition,
        &["production"],
    );
    app.set_alias("m", "production", 2, Some(1))
        .await
        .expect("move");
    c.delete_version(pb::DeleteVersionRequest {
        model: "m".into(),
        version: 1,
    })
    .await
    .expect("delete");
    assert_status(
        c.delete_version(pb::DeleteVersionRequest {
            model: "m".into(),
            version: 1,
        })
        .await,
        Code::NotFound,
        &["version 1"],
    );
    // Numbers are never reused.
    assert_eq!(app.push("m", &[("a", vec![3])]).await.version, 3);
    app.stop().await;
}

crate::helpers::on_every_store!(
    a_pushed_version_downloads_byte_for_byte,
    an_upload_resumes_where_the_broken_stream_stopped,
    a_stored_content_is_stored_once_and_never_resent,
    a_digest_or_size_mismatch_fails_the_upload_and_commits_nothing,
    status_changes_and_deletion,
);
