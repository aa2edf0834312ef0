//! Storage: everything survives a restart; released contents are removed
//! after their grace period and never while an upload may use them.

use mlmesh_proto::registry::v1 as pb;

use crate::{
    helpers::{Store, bytes},
    versions::count_files,
};

async fn everything_survives_a_restart(store: Store) {
    let Some(env) = store.env("everything_survives_a_restart") else {
        return;
    };
    let app = env.spawn(|_| {}).await;
    app.create("m").await;
    let files = vec![("w", bytes(10, 70_000))];
    app.push("m", &files).await;
    app.set_alias("m", "production", 1, None)
        .await
        .expect("alias");
    let up = app
        .start("m", &[("x", bytes(11, 1000))])
        .await
        .expect("start");
    app.send_chunks(vec![pb::UploadChunk {
        upload_id: up.upload_id.clone(),
        path: "x".into(),
        offset: 0,
        data: bytes(11, 1000)[..400].to_vec().into(),
    }])
    .await
    .expect("partial");
    app.stop().await;

    let app = env.spawn(|_| {}).await;
    let m = app
        .client()
        .get_model(pb::GetModelRequest { name: "m".into() })
        .await
        .expect("model")
        .into_inner();
    assert_eq!(m.aliases["production"], 1);
    assert_eq!(app.pull("m", 1).await[0].1, files[0].1);
    let held = app
        .client()
        .get_upload(pb::GetUploadRequest {
            upload_id: up.upload_id.clone(),
        })
        .await
        .expect("upload survives")
        .into_inner();
    assert_eq!(held.files[0].received, 400);
    app.stop().await;
}

async fn released_contents_go_after_the_grace_period_only(store: Store) {
    let Some(env) = store.env("released_contents_go_after_the_grace_period_only") else {
        return;
    };
    let app = env.spawn(|s| s.registry.blob_grace_secs = 0).await;
    let blobs = env.dir.path().join("blobs");
    app.create("m").await;
    let shared = bytes(20, 5000);
    app.push("m", &[("a", shared.clone()), ("b", bytes(21, 10))])
        .await; // v1
    app.push("m", &[("a", shared.clone())]).await; // v2 shares "a"
    assert_eq!(count_files(&blobs), 2);
    // An upload declares v1's "b" content: it must survive v1's deletion.
    let pending = app
        .start("m", &[("b", bytes(21, 10))])
        .await
        .expect("start");
    assert_eq!(pending.files[0].received, 10, "held already");
    let mut c = app.client();
    c.delete_version(pb::DeleteVersionRequest {
        model: "m".into(),
        version: 1,
    })
    .await
    .expect("delete v1");
    std::thread::sleep(std::time::Duration::from_millis(5));
    app.registry.housekeep().await.expect("housekeeping");
    assert_eq!(count_files(&blobs), 2, "shared and pending contents stay");
    // The pending upload commits without sending a byte.
    let done = app
        .send_chunks(vec![pb::UploadChunk {
            upload_id: pending.upload_id.clone(),
            path: "b".into(),
            offset: 10,
            data: Vec::new().into(),
        }])
        .await
        .expect("commit");
    let v3 = done.version.expect("committed");
    // Deleting v2 and v3 releases everything.
    for v in [2, v3.version] {
        c.delete_version(pb::DeleteVersionRequest {
            model: "m".into(),
            version: v,
        })
        .await
        .expect("delete");
    }
    std::thread::sleep(std::time::Duration::from_millis(5));
    let r = app.registry.housekeep().await.expect("housekeeping");
    assert_eq!(r.blobs_removed, 2);
    assert_eq!(count_files(&blobs), 0);
    app.stop().await;
}

crate::helpers::on_every_store!(
    everything_survives_a_restart,
    released_contents_go_after_the_grace_period_only,
);
