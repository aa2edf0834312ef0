//! Storage: everything survives a restart; released contents are removed
//! after their grace period and never while an upload may use them.

use mlmesh_proto::registry::v1 as pb;

use crate::helpers::{Store, bytes, settings, use_s3};

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
    app.create("m").await;
    let shared = bytes(20, 5000);
    app.push("m", &[("a", shared.clone()), ("b", bytes(21, 10))])
        .await; // v1
    app.push("m", &[("a", shared.clone())]).await; // v2 shares "a"
    assert_eq!(app.stored_blobs().await, 2);
    // An upload declares v1's "b" content: it must survive v1's deletion.
    let pending = app
        .start("m", &[("b", bytes(21, 10))])
        .await
        .expect("start");
    assert_eq!(pending.files[0].received, 10, "held already");
    app.delete_versions("m", &[1]).await;
    std::thread::sleep(std::time::Duration::from_millis(5));
    app.registry.housekeep().await.expect("housekeeping");
    assert_eq!(
        app.stored_blobs().await,
        2,
        "shared and pending contents stay"
    );
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
    app.delete_versions("m", &[2, v3.version]).await;
    std::thread::sleep(std::time::Duration::from_millis(5));
    let r = app.registry.housekeep().await.expect("housekeeping");
    assert_eq!(r.blobs_removed, 2);
    assert_eq!(app.stored_blobs().await, 0);
    app.stop().await;
}

crate::helpers::on_every_store!(
    everything_survives_a_restart,
    released_contents_go_after_the_grace_period_only,
);

/// The scaled-out setup: two replicas, each with its own local folder,
/// sharing PostgreSQL and an S3 bucket. What one stores the other serves,
/// reuses without resending, and collects once released.
#[tokio::test]
async fn replicas_sharing_postgres_and_s3_share_contents() {
    let Some(env) = Store::PostgresS3.env("replicas_s3") else {
        return;
    };
    let other = mlmesh_tests::TempDir::new("registry-b");
    let a = env.spawn(|s| s.registry.blob_grace_secs = 0).await;
    let b = env
        .spawn_in(other.path(), |s| s.registry.blob_grace_secs = 0)
        .await;
    a.create("m").await;
    // Larger than one multipart part: sent in parts, read back in ranges.
    let big = bytes(30, 12 * 1024 * 1024 + 123);
    let v1 = a.push("m", &[("weights", big.clone())]).await;
    assert_eq!(b.pull("m", v1.version).await[0].1, big, "served by B");
    // B already holds A's content: declared, not sent.
    let up = b
        .start("m", &[("weights", big.clone()), ("extra", vec![7; 3])])
        .await
        .expect("start on B");
    assert_eq!(up.files[0].received, big.len() as u64);
    let done = b
        .send(&up.upload_id, &[("extra", vec![7; 3])], 1024)
        .await
        .expect("send on B");
    let v2 = done.version.expect("committed on B").version;
    assert_eq!(a.stored_blobs().await, 2);
    b.delete_versions("m", &[v1.version, v2]).await;
    std::thread::sleep(std::time::Duration::from_millis(5));
    let r = a.registry.housekeep().await.expect("housekeeping on A");
    assert_eq!(r.blobs_removed, 2);
    assert_eq!(b.stored_blobs().await, 0, "gone from the shared bucket");
    a.stop().await;
    b.stop().await;
}

/// A bucket that does not answer fails the start, naming the setting.
#[tokio::test]
async fn an_unreachable_bucket_fails_at_start_naming_the_key() {
    let Some(server) = mlmesh_tests::s3::S3Server::shared() else {
        return;
    };
    let dir = mlmesh_tests::TempDir::new("registry-bad-bucket");
    let mut s = settings(dir.path());
    use_s3(
        &mut s,
        "s3://no-such-bucket/x".into(),
        server.endpoint.clone(),
    );
    let Err(e) = <mlmesh_registry::Application as mlmesh_runtime::service::Service>::build(s).await
    else {
        panic!("a missing bucket must fail the start");
    };
    let msg = e.to_string();
    assert!(
        msg.contains("registry.blob_url") && msg.contains("no-such-bucket"),
        "{msg}"
    );
}
