//! What the registry refuses and bounds: bad manifests and chunks, quotas
//! on open uploads and staged bytes, and downloads whose reader stops.

use mlmesh_proto::registry::v1 as pb;
use tonic::Code;

use crate::helpers::{Store, assert_status, bytes, sha256};

async fn bad_manifests_and_chunks_are_refused(store: Store) {
    let Some(env) = store.env("bad_manifests_and_chunks_are_refused") else {
        return;
    };
    let app = env.spawn(|_| {}).await;
    app.create("m").await;
    let entry = |path: &str| pb::FileEntry {
        path: path.into(),
        size: 1,
        sha256: sha256(b"x"),
    };
    for (files, needle) in [
        (vec![entry("../escape")], "files[0].path"),
        (vec![entry("/etc/passwd")], "absolute"),
        (vec![entry("a//b")], "empty segment"),
        (vec![entry("ok"), entry("a/./b")], "files[1].path"),
        (vec![entry("a"), entry("a")], "twice"),
        (vec![], "at least one file"),
        (
            vec![pb::FileEntry {
                path: "x".into(),
                size: 1,
                sha256: "ABC".into(),
            }],
            "files[0].sha256",
        ),
        // Quotas, refused before anything is staged (defaults: 16 GiB per
        // file, 64 GiB per version).
        (
            vec![pb::FileEntry {
                path: "huge".into(),
                size: 17 << 30,
                sha256: sha256(b"x"),
            }],
            "registry.max_file_bytes",
        ),
        (
            (0..5)
                .map(|i| pb::FileEntry {
                    path: format!("part{i}"),
                    size: 15 << 30,
                    sha256: sha256(b"x"),
                })
                .collect(),
            "registry.max_version_bytes",
        ),
    ] {
        assert_status(
            app.client()
                .start_upload(pb::StartUploadRequest {
                    model: "m".into(),
                    files,
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            &[needle],
        );
    }
    assert_status(
        app.start("nope", &[("a", vec![1])]).await,
        Code::NotFound,
        &["nope"],
    );
    let up = app.start("m", &[("a", vec![1, 2])]).await.expect("start");
    assert_status(
        app.send(&up.upload_id, &[("b", vec![1, 2])], 10).await,
        Code::InvalidArgument,
        &["\"b\"", "not a file"],
    );
    assert_status(
        app.send_chunks(vec![pb::UploadChunk {
            upload_id: String::new(),
            path: "a".into(),
            offset: 0,
            data: vec![1].into(),
        }])
        .await,
        Code::InvalidArgument,
        &["upload_id"],
    );
    assert_status(
        app.send("no-such-upload", &[("a", vec![1, 2])], 10).await,
        Code::NotFound,
        &["no-such-upload"],
    );
    // Unknown version, alias and file.
    let mut c = app.client();
    for sel in [
        pb::get_version_request::Selector::Version(7),
        pb::get_version_request::Selector::Alias("prod".into()),
    ] {
        assert_status(
            c.get_version(pb::GetVersionRequest {
                model: "m".into(),
                selector: Some(sel),
            })
            .await,
            Code::NotFound,
            &["m"],
        );
    }
    app.push("m", &[("a", vec![1, 2])]).await;
    let mut s = c
        .download(pb::DownloadRequest {
            model: "m".into(),
            selector: Some(pb::download_request::Selector::Version(1)),
            path: "nope".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(
        s.as_mut().map(|_| ()).expect_err("no file").code(),
        Code::NotFound
    );
    app.stop().await;
}

/// Open uploads are bounded in number and in declared bytes, refused at
/// StartUpload naming the setting; many concurrent starts admit exactly
/// as many as the quota allows; an abort frees its share.
async fn open_uploads_and_staged_bytes_are_bounded(store: Store) {
    let Some(env) = store.env("open_uploads_and_staged_bytes_are_bounded") else {
        return;
    };
    let app = env
        .spawn(|s| {
            s.registry.max_open_uploads = 3;
            s.registry.max_staged_bytes = 100;
        })
        .await;
    app.create("m").await;
    // Eight callers at once, 10 bytes each: exactly three get an upload.
    let starts = (0..8u8).map(|i| {
        let app = &app;
        async move { app.start("m", &[("f", vec![i; 10])]).await }
    });
    let results = futures::future::join_all(starts).await;
    let (ok, refused): (Vec<_>, Vec<_>) = results.into_iter().partition(|r| r.is_ok());
    assert_eq!(ok.len(), 3, "{refused:?}");
    for r in refused {
        let e = r.expect_err("refused");
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(e.message().contains("registry.max_open_uploads"), "{e:?}");
    }
    let first = ok[0].as_ref().expect("ok").upload_id.clone();
    app.client()
        .abort_upload(pb::AbortUploadRequest { upload_id: first })
        .await
        .expect("abort");
    // One slot again, but 20 + 81 bytes would pass max_staged_bytes.
    assert_status(
        app.start("m", &[("big", vec![7; 81])]).await,
        Code::ResourceExhausted,
        &["registry.max_staged_bytes"],
    );
    app.start("m", &[("fits", vec![7; 70])])
        .await
        .expect("70 more bytes fit");
    app.stop().await;
}

crate::helpers::on_every_store!(
    bad_manifests_and_chunks_are_refused,
    open_uploads_and_staged_bytes_are_bounded,
);

/// Downloads whose client stops reading are bounded: beyond
/// `max_concurrent_sends` a download is refused naming the setting while
/// metadata calls are answered, and a stream nobody reads for
/// `send_stall_secs` ends with DEADLINE_EXCEEDED (not OK on truncated
/// data) and frees its slot for the next download, which arrives whole.
#[tokio::test]
async fn readers_that_stop_reading_hold_no_slot_forever() {
    let Some(env) = Store::Sqlite.env("readers_that_stop_reading") else {
        return;
    };
    let app = env
        .spawn(|s| {
            s.registry.max_concurrent_sends = 2;
            s.registry.send_stall_secs = 1;
        })
        .await;
    app.create("big").await;
    // Far more than the client's flow-control windows and the read-ahead.
    let content = bytes(7, 24 << 20);
    let v = app.push("big", &[("weights.bin", content.clone())]).await;
    let download = || pb::DownloadRequest {
        model: "big".into(),
        selector: Some(pb::download_request::Selector::Version(v.version)),
        ..Default::default()
    };
    let mut stalled = Vec::new();
    for _ in 0..2 {
        stalled.push(
            app.client()
                .download(download())
                .await
                .expect("admitted")
                .into_inner(),
        );
    }
    assert_status(
        app.client().download(download()).await.map(|_| ()),
        Code::ResourceExhausted,
        &["registry.max_concurrent_sends"],
    );
    app.client()
        .list_models(pb::ListModelsRequest::default())
        .await
        .expect("metadata calls are answered meanwhile");
    // The stalled streams end on their own and free their slots.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let mut s = stalled.remove(0);
    let end = loop {
        match s.message().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("a stalled stream ended OK on truncated data"),
            Err(e) => break e,
        }
    };
    assert_eq!(end.code(), Code::DeadlineExceeded, "{end:?}");
    assert!(
        end.message().contains("registry.send_stall_secs"),
        "{end:?}"
    );
    let whole = app.pull("big", v.version).await;
    assert_eq!(whole.len(), 1);
    assert!(whole[0].1 == content, "the next download arrives whole");
    app.stop().await;
}
