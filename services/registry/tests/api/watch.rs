//! Watch: every change in order without gaps, resumable from a revision,
//! filtered, with progress for idle watchers and a clear error for a
//! revision no longer kept.

use std::time::Duration;

use mlmesh_proto::registry::v1::{self as pb, EventKind};
use tonic::{Code, Streaming};

use crate::helpers::Store;

async fn next(s: &mut Streaming<pb::WatchEvent>) -> pb::WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("an event within 10 s")
        .expect("stream ok")
        .expect("stream open")
}

async fn watch(app: &crate::helpers::TestApp, req: pb::WatchRequest) -> Streaming<pb::WatchEvent> {
    app.client().watch(req).await.expect("watch").into_inner()
}

async fn watch_replays_from_a_revision_then_follows_live(store: Store) {
    let Some(env) = store.env("watch_replays_from_a_revision_then_follows_live") else {
        return;
    };
    let app = env.spawn(|_| {}).await;
    app.create("m").await; // 1
    app.push("m", &[("a", vec![1])]).await; // 2
    app.set_alias("m", "production", 1, None)
        .await
        .expect("alias"); // 3
    let mut all = watch(
        &app,
        pb::WatchRequest {
            start_revision: 1,
            filter: None,
        },
    )
    .await;
    let kinds: Vec<(i64, i32)> = [
        next(&mut all).await,
        next(&mut all).await,
        next(&mut all).await,
    ]
    .iter()
    .map(|e| (e.revision, e.kind))
    .collect();
    assert_eq!(
        kinds,
        [
            (1, EventKind::ModelCreated as i32),
            (2, EventKind::VersionCreated as i32),
            (3, EventKind::AliasMoved as i32)
        ]
    );
    // Only alias moves of `production`, from now on.
    let mut prod = watch(
        &app,
        pb::WatchRequest {
            start_revision: 0,
            filter: Some(pb::WatchFilter {
                models: vec!["m".into()],
                aliases: vec!["production".into()],
                kinds: vec![],
            }),
        },
    )
    .await;
    app.push("m", &[("a", vec![2])]).await; // 4
    app.set_alias("m", "staging", 2, None)
        .await
        .expect("staging"); // 5
    app.set_alias("m", "production", 2, Some(1))
        .await
        .expect("promote"); // 6
    let e = next(&mut prod).await;
    assert_eq!(
        (
            e.revision,
            e.kind,
            e.alias.as_str(),
            e.from_version,
            e.version
        ),
        (6, EventKind::AliasMoved as i32, "production", 1, 2)
    );
    // The unfiltered watcher saw every revision, gap-free.
    for want in 4..=6 {
        assert_eq!(next(&mut all).await.revision, want);
    }
    app.stop().await;
}

async fn idle_watchers_get_progress_and_old_revisions_are_refused(store: Store) {
    let Some(env) = store.env("idle_watchers_get_progress_and_old_revisions_are_refused") else {
        return;
    };
    let app = env
        .spawn(|s| {
            s.registry.watch_progress_secs = 1;
            s.registry.event_retention = 2;
        })
        .await;
    app.create("m").await;
    app.create("n").await;
    app.create("o").await; // revisions 1..=3
    let mut idle = watch(
        &app,
        pb::WatchRequest {
            start_revision: 0,
            filter: None,
        },
    )
    .await;
    let p = next(&mut idle).await;
    assert_eq!((p.kind, p.revision), (EventKind::Progress as i32, 3));
    // Keep the 2 newest events: revision 1 is gone.
    app.registry.housekeep().await.expect("housekeeping");
    let err = app
        .client()
        .watch(pb::WatchRequest {
            start_revision: 1,
            filter: None,
        })
        .await
        .expect_err("compacted");
    assert_eq!(err.code(), Code::OutOfRange);
    assert!(
        err.message().contains("oldest kept: 2"),
        "{}",
        err.message()
    );
    // From the oldest kept revision it works.
    let mut ok = watch(
        &app,
        pb::WatchRequest {
            start_revision: 2,
            filter: None,
        },
    )
    .await;
    assert_eq!(next(&mut ok).await.revision, 2);
    // The watch stream ends with the service.
    app.stop().await;
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match idle.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ends on shutdown");
    assert!(end.is_err() || end.expect("ok").is_none());
}

crate::helpers::on_every_store!(
    watch_replays_from_a_revision_then_follows_live,
    idle_watchers_get_progress_and_old_revisions_are_refused,
);

/// Two replicas on one PostgreSQL database: a watcher on one sees what is
/// committed through the other, and a compare-and-set made through one is
/// seen by the other.
#[tokio::test]
async fn replicas_sharing_postgres_see_each_others_changes() {
    let Some(env) = Store::Postgres.env("replicas") else {
        return;
    };
    let a = env.spawn(|s| s.registry.watch_poll_ms = 100).await;
    let b = env.spawn(|s| s.registry.watch_poll_ms = 100).await;
    let mut w = watch(
        &a,
        pb::WatchRequest {
            start_revision: 0,
            filter: None,
        },
    )
    .await;
    b.create("shared").await;
    let e = next(&mut w).await;
    assert_eq!(
        (e.kind, e.model.as_str()),
        (EventKind::ModelCreated as i32, "shared")
    );
    a.push("shared", &[("m", vec![1])]).await;
    b.set_alias("shared", "production", 1, Some(0))
        .await
        .expect("first");
    let lost = a.set_alias("shared", "production", 1, Some(0)).await;
    assert_eq!(
        lost.expect_err("lost race").code(),
        Code::FailedPrecondition
    );
    // Revisions stay gap-free across replicas.
    let revs: Vec<i64> = [next(&mut w).await, next(&mut w).await]
        .iter()
        .map(|e| e.revision)
        .collect();
    assert_eq!(revs, [e.revision + 1, e.revision + 2]);
    a.stop().await;
    b.stop().await;
}
