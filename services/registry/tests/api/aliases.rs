//! Aliases: compare-and-set, several at once, history, rollback.

use mlmesh_proto::registry::v1 as pb;
use tonic::Code;

use crate::helpers::{Store, assert_status};

async fn aliases_move_by_compare_and_set_and_roll_back(store: Store) {
    let Some(env) = store.env("aliases_move_by_compare_and_set_and_roll_back") else {
        return;
    };
    let app = env.spawn(|_| {}).await;
    app.create("m").await;
    for i in 1..=3u8 {
        app.push("m", &[("a", vec![i])]).await;
    }
    let mut c = app.client();
    // Create only if absent.
    let r = app
        .set_alias("m", "production", 1, Some(0))
        .await
        .expect("create");
    assert_eq!(r.moves[0].from_version, 0);
    assert_eq!(r.moves[0].to_version, 1);
    assert_status(
        app.set_alias("m", "production", 2, Some(0)).await,
        Code::FailedPrecondition,
        &["production", "points at version 1"],
    );
    // Two pipelines race from version 1: one wins, the loser learns the
    // current version.
    app.set_alias("m", "production", 2, Some(1))
        .await
        .expect("winner");
    assert_status(
        app.set_alias("m", "production", 3, Some(1)).await,
        Code::FailedPrecondition,
        &["points at version 2", "expected"],
    );
    // Several at once, all or nothing: the second move fails, so neither applies.
    assert_status(
        c.set_aliases(pb::SetAliasesRequest {
            model: "m".into(),
            aliases: vec![
                pb::AliasTarget {
                    alias: "staging".into(),
                    version: 3,
                    expected_version: None,
                },
                pb::AliasTarget {
                    alias: "production".into(),
                    version: 3,
                    expected_version: Some(1),
                },
            ],
            reason: "promote".into(),
            override_policy: false,
        })
        .await,
        Code::FailedPrecondition,
        &["production"],
    );
    let m = c
        .get_model(pb::GetModelRequest { name: "m".into() })
        .await
        .expect("model")
        .into_inner();
    assert_eq!(m.aliases.get("production"), Some(&2));
    assert_eq!(
        m.aliases.get("staging"),
        None,
        "nothing of the failed call applied"
    );
    let r = c
        .set_aliases(pb::SetAliasesRequest {
            model: "m".into(),
            aliases: vec![
                pb::AliasTarget {
                    alias: "staging".into(),
                    version: 2,
                    expected_version: Some(0),
                },
                pb::AliasTarget {
                    alias: "production".into(),
                    version: 3,
                    expected_version: Some(2),
                },
            ],
            reason: "release 3".into(),
            override_policy: false,
        })
        .await
        .expect("both")
        .into_inner();
    assert_eq!(r.moves.len(), 2);
    assert_eq!(r.revision, r.moves[1].revision);
    assert_eq!(r.moves[1].revision, r.moves[0].revision + 1);
    // The version knows its aliases; GetVersion by alias.
    let v = c
        .get_version(pb::GetVersionRequest {
            model: "m".into(),
            selector: Some(pb::get_version_request::Selector::Alias(
                "production".into(),
            )),
        })
        .await
        .expect("by alias")
        .into_inner();
    assert_eq!(v.version, 3);
    assert_eq!(v.aliases, ["production"]);

    // Rollback: back to the version before the last move.
    let back = c
        .rollback_alias(pb::RollbackAliasRequest {
            model: "m".into(),
            alias: "production".into(),
            expected_version: Some(3),
            reason: "bad release".into(),
            override_policy: false,
        })
        .await
        .expect("rollback")
        .into_inner();
    assert_eq!((back.from_version, back.to_version), (3, 2));
    assert_eq!(back.reason, "bad release");

    let h = c
        .alias_history(pb::AliasHistoryRequest {
            model: "m".into(),
            alias: "production".into(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner();
    let moves: Vec<(i64, i64)> = h
        .moves
        .iter()
        .map(|m| (m.from_version, m.to_version))
        .collect();
    assert_eq!(moves, [(3, 2), (2, 3), (1, 2), (0, 1)], "newest first");
    assert!(h.moves.windows(2).all(|w| w[0].revision > w[1].revision));
    // Paged.
    let p1 = c
        .alias_history(pb::AliasHistoryRequest {
            model: "m".into(),
            alias: "production".into(),
            page_size: 3,
            ..Default::default()
        })
        .await
        .expect("page 1")
        .into_inner();
    let p2 = c
        .alias_history(pb::AliasHistoryRequest {
            model: "m".into(),
            alias: "production".into(),
            page_size: 3,
            page_token: p1.next_page_token.clone(),
        })
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(p1.moves.len() + p2.moves.len(), 4);
    assert!(p2.next_page_token.is_empty());
    // Removing an alias (version 0).
    app.set_alias("m", "staging", 0, Some(2))
        .await
        .expect("remove");
    assert_status(
        app.set_alias("m", "staging", 0, None).await,
        Code::NotFound,
        &["staging"],
    );
    app.stop().await;
}

async fn bad_alias_requests_get_clear_statuses(store: Store) {
    let Some(env) = store.env("bad_alias_requests_get_clear_statuses") else {
        return;
    };
    let app = env.spawn(|_| {}).await;
    app.create("m").await;
    app.push("m", &[("a", vec![1])]).await;
    assert_status(
        app.set_alias("m", "prod", 9, None).await,
        Code::NotFound,
        &["version 9"],
    );
    assert_status(
        app.set_alias("nope", "prod", 1, None).await,
        Code::NotFound,
        &["nope"],
    );
    assert_status(
        app.set_alias("m", "bad/alias", 1, None).await,
        Code::InvalidArgument,
        &["aliases[0].alias"],
    );
    assert_status(
        app.client()
            .rollback_alias(pb::RollbackAliasRequest {
                model: "m".into(),
                alias: "prod".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        &["prod"],
    );
    // A first move has nothing to roll back to.
    app.set_alias("m", "prod", 1, None).await.expect("set");
    assert_status(
        app.client()
            .rollback_alias(pb::RollbackAliasRequest {
                model: "m".into(),
                alias: "prod".into(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
        &["nothing to roll back"],
    );
    app.stop().await;
}

crate::helpers::on_every_store!(
    aliases_move_by_compare_and_set_and_roll_back,
    bad_alias_requests_get_clear_statuses,
);
