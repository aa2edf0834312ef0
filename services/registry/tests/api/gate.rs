//! The validation gate: evidence bound to a version's manifest, alias
//! policies, refusals naming the failed check, rollback, override by the
//! admin scope only, a race of promotions, and all of it surviving a
//! restart and a backup/restore — on every metadata store.

use mlmesh_proto::registry::v1 as pb;
use tonic::Code;

use crate::helpers::{Client, Store, TestApp, assert_status, on_every_store, sha256, spawn_app};

const SUITE: &str = "suite-v1";

/// Evidence for `version` of `m`: one accuracy check, compared with
/// `against` (0: none) with the given lower bound.
fn evidence(v: &pb::Version, against: Option<&pb::Version>, lower: f64) -> pb::Evidence {
    let passed = lower > -0.05;
    pb::Evidence {
        model: v.model.clone(),
        version: v.version,
        manifest_digest: v.manifest_digest.clone(),
        suite_digest: sha256(SUITE.as_bytes()),
        suite_source: "registry://suites@1".into(),
        passed,
        against_version: against.map_or(0, |a| a.version),
        against_manifest_digest: against
            .map(|a| a.manifest_digest.clone())
            .unwrap_or_default(),
        checks: vec![pb::Check {
            name: "accuracy".into(),
            passed,
            detail: String::new(),
            figures: [("accuracy".to_owned(), 0.9)].into_iter().collect(),
            non_inferiority: against.map(|a| pb::NonInferiority {
                metric: "accuracy".into(),
                against_version: a.version,
                difference: lower + 0.02,
                lower,
                upper: lower + 0.04,
                confidence: 0.95,
                margin: 0.05,
                samples: 1000,
                detectable: 0.03,
                mcnemar_p: 0.5,
            }),
        }],
        runner: Some(pb::Runner {
            cpu: "test".into(),
            cores: 2,
            ..Default::default()
        }),
        kind: "validation".into(),
        ..Default::default()
    }
}

async fn record(c: &mut Client, e: pb::Evidence) -> Result<pb::Evidence, tonic::Status> {
    c.record_evidence(pb::RecordEvidenceRequest { evidence: Some(e) })
        .await
        .map(|r| r.into_inner())
}

async fn set_policy(c: &mut Client, margin: Option<f64>) -> pb::AliasPolicy {
    c.set_alias_policy(pb::SetAliasPolicyRequest {
        policy: Some(pb::AliasPolicy {
            model: "m".into(),
            alias: "production".into(),
            suite_digest: sha256(SUITE.as_bytes()),
            suite_source: "registry://suites@1".into(),
            margin,
            max_age_secs: 3600,
            updated_at: None,
        }),
        remove: false,
    })
    .await
    .expect("set policy")
    .into_inner()
}

async fn history(c: &mut Client) -> Vec<pb::AliasMove> {
    c.alias_history(pb::AliasHistoryRequest {
        model: "m".into(),
        alias: "production".into(),
        ..Default::default()
    })
    .await
    .expect("history")
    .into_inner()
    .moves
}

async fn override_to(
    c: &mut Client,
    version: i64,
    reason: &str,
) -> Result<pb::SetAliasesResponse, tonic::Status> {
    c.set_aliases(pb::SetAliasesRequest {
        model: "m".into(),
        aliases: vec![pb::AliasTarget {
            alias: "production".into(),
            version,
            expected_version: None,
        }],
        reason: reason.into(),
        override_policy: true,
    })
    .await
    .map(|r| r.into_inner())
}

async fn four_versions(app: &TestApp) -> Vec<pb::Version> {
    app.create("m").await;
    let mut out = Vec::new();
    for i in 1..=4u8 {
        out.push(app.push("m", &[("model.onnx", vec![i; 16])]).await);
    }
    out
}

async fn an_alias_moves_only_with_passing_evidence(store: Store) {
    let Some(env) = store.env("an_alias_moves_only_with_passing_evidence") else {
        return;
    };
    let app = env.spawn(|_| {}).await;
    let v = four_versions(&app).await;
    let mut c = app.client();
    app.set_alias("m", "production", 1, Some(0))
        .await
        .expect("before any policy");
    set_policy(&mut c, Some(0.02)).await;

    // No evidence: refused, naming what is missing.
    assert_status(
        app.set_alias("m", "production", 2, Some(1)).await,
        Code::FailedPrecondition,
        &["requires passing evidence", "version 2", "none is recorded"],
    );
    // Evidence must describe the version's own files.
    let mut wrong = evidence(&v[1], Some(&v[0]), -0.01);
    wrong.manifest_digest = v[2].manifest_digest.clone();
    assert_status(
        record(&mut c, wrong).await,
        Code::FailedPrecondition,
        &["other files"],
    );
    // A lie about the outcome is refused.
    let mut lie = evidence(&v[1], Some(&v[0]), -0.3);
    lie.passed = true;
    assert_status(
        record(&mut c, lie).await,
        Code::InvalidArgument,
        &["check(s) failed"],
    );
    // A worse version: refused with the failed check and its interval.
    record(&mut c, evidence(&v[1], Some(&v[0]), -0.3))
        .await
        .expect("failing evidence is kept");
    assert_status(
        app.set_alias("m", "production", 2, Some(1)).await,
        Code::FailedPrecondition,
        &[
            "check \"accuracy\" failed",
            "interval [-0.3000",
            "1000 examples",
        ],
    );
    // Passing evidence, but not by the policy's tighter margin.
    record(&mut c, evidence(&v[1], Some(&v[0]), -0.03))
        .await
        .expect("evidence");
    assert_status(
        app.set_alias("m", "production", 2, Some(1)).await,
        Code::FailedPrecondition,
        &["margin 0.02", "[-0.0300"],
    );
    // Good evidence: the move passes and names it.
    let good = record(&mut c, evidence(&v[1], Some(&v[0]), -0.01))
        .await
        .expect("evidence");
    assert!(good.id > 0 && good.recorded_at.is_some(), "{good:?}");
    let moved = app
        .set_alias("m", "production", 2, Some(1))
        .await
        .expect("gated move");
    assert_eq!(moved.moves[0].evidence_id, good.id);

    // Evidence compared with a version the alias no longer points at.
    let v3 = record(&mut c, evidence(&v[2], Some(&v[0]), -0.01))
        .await
        .expect("evidence");
    assert_status(
        app.set_alias("m", "production", 3, Some(2)).await,
        Code::FailedPrecondition,
        &["compared with version 1, not version 2"],
    );
    // Rollback to version 1 needs passing evidence for it; once there, no
    // comparison and no age limit apply.
    assert_status(
        c.rollback_alias(pb::RollbackAliasRequest {
            model: "m".into(),
            alias: "production".into(),
            reason: "incident".into(),
            ..Default::default()
        })
        .await,
        Code::FailedPrecondition,
        &["version 1"],
    );
    let v1 = record(&mut c, evidence(&v[0], None, 0.0))
        .await
        .expect("evidence for v1");
    let back = c
        .rollback_alias(pb::RollbackAliasRequest {
            model: "m".into(),
            alias: "production".into(),
            reason: "incident".into(),
            ..Default::default()
        })
        .await
        .expect("rollback to a version that passed")
        .into_inner();
    assert_eq!((back.to_version, back.evidence_id), (1, v1.id));

    // An override must say why; in an open registry (no credentials) the
    // caller is an admin. It is kept in the history as overridden.
    assert_status(
        override_to(&mut c, 3, " ").await,
        Code::InvalidArgument,
        &["must say why"],
    );
    let o = override_to(&mut c, 3, "hotfix approved by on-call")
        .await
        .expect("override");
    assert!(
        o.moves[0].overridden && o.moves[0].evidence_id == 0,
        "{o:?}"
    );
    let h = history(&mut c).await;
    assert!(h[0].overridden && h[0].reason.contains("hotfix"), "{h:?}");
    assert_eq!(h[1].evidence_id, v1.id);
    assert_eq!(h[2].evidence_id, good.id);

    // Evidence and policies are listed; watchers saw both kinds of event.
    let listed = c
        .list_evidence(pb::ListEvidenceRequest {
            model: "m".into(),
            version: 2,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .evidence;
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(listed[0].id, good.id, "newest first");
    assert_eq!(
        listed[0].checks[0]
            .non_inferiority
            .as_ref()
            .map(|n| n.samples),
        Some(1000)
    );
    let kinds = events(&mut c).await;
    for k in [
        pb::EventKind::EvidenceRecorded,
        pb::EventKind::PolicyChanged,
    ] {
        assert!(kinds.contains(&(k as i32)), "{k:?} in {kinds:?}");
    }

    // After a restart: the same policy, evidence and history.
    app.stop().await;
    let app = env.spawn(|_| {}).await;
    let mut c = app.client();
    assert_eq!(history(&mut c).await, h);
    gate_holds(&app, 3, 2, good.id).await;
    let h = history(&mut c).await;

    // A backup restores evidence, policies and what the gate decided.
    let chunks: Vec<pb::BackupChunk> = {
        use futures::StreamExt as _;
        c.backup(pb::BackupRequest {})
            .await
            .expect("backup")
            .into_inner()
            .map(|c| c.expect("chunk"))
            .collect()
            .await
    };
    let fresh_dir = mlmesh_tests::TempDir::new("gate-restore");
    let fresh = spawn_app(fresh_dir.path(), |_| {}).await;
    let mut f = fresh.client();
    f.restore(tokio_stream::iter(chunks))
        .await
        .expect("restore");
    assert_eq!(history(&mut f).await, h);
    let policies = f
        .list_alias_policies(pb::ListAliasPoliciesRequest { model: "m".into() })
        .await
        .expect("policies")
        .into_inner()
        .policies;
    assert_eq!(policies.len(), 1);
    assert_eq!(policies[0].margin, Some(0.02));
    gate_holds(&fresh, 2, 3, v3.id).await;
    // Removing the policy ungates the alias.
    f.set_alias_policy(pb::SetAliasPolicyRequest {
        policy: Some(pb::AliasPolicy {
            model: "m".into(),
            alias: "production".into(),
            ..Default::default()
        }),
        remove: true,
    })
    .await
    .expect("remove");
    fresh
        .set_alias("m", "production", 4, Some(3))
        .await
        .expect("no policy, no gate");
    fresh.stop().await;
    app.stop().await;
}

/// The policy still refuses version 4 (never validated), and recorded
/// evidence still lets the alias move back from `from` to `to`.
async fn gate_holds(app: &TestApp, from: i64, to: i64, evidence_id: i64) {
    assert_status(
        app.set_alias("m", "production", 4, None).await,
        Code::FailedPrecondition,
        &["version 4", "none is recorded"],
    );
    let back = app
        .set_alias("m", "production", to, Some(from))
        .await
        .expect("back to a version that passed");
    assert_eq!(back.moves[0].evidence_id, evidence_id, "{back:?}");
}

/// Every event kind the log holds from the start.
async fn events(c: &mut Client) -> Vec<i32> {
    use futures::StreamExt as _;
    let mut s = c
        .watch(pb::WatchRequest {
            start_revision: 1,
            filter: None,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut kinds = Vec::new();
    while let Ok(Some(Ok(e))) =
        tokio::time::timeout(std::time::Duration::from_millis(500), s.next()).await
    {
        if e.kind == pb::EventKind::Progress as i32 {
            break;
        }
        kinds.push(e.kind);
    }
    kinds
}

async fn racing_promotions_leave_exactly_one_winner(store: Store) {
    let Some(env) = store.env("racing_promotions_leave_exactly_one_winner") else {
        return;
    };
    let app = env.spawn(|_| {}).await;
    app.create("m").await;
    let mut versions = Vec::new();
    for i in 1..=5u8 {
        versions.push(app.push("m", &[("model.onnx", vec![i; 8])]).await);
    }
    let mut c = app.client();
    app.set_alias("m", "production", 1, Some(0))
        .await
        .expect("first");
    set_policy(&mut c, Some(0.02)).await;
    for v in &versions[1..] {
        record(&mut c, evidence(v, Some(&versions[0]), -0.01))
            .await
            .expect("evidence");
    }
    // Four promotions at once, none with compare-and-set: each one's
    // evidence compares with version 1, so after the first move the
    // others' evidence is stale and the gate refuses them.
    let tasks: Vec<_> = (2..=5)
        .map(|v| {
            let mut c = app.client();
            tokio::spawn(async move {
                c.set_aliases(pb::SetAliasesRequest {
                    model: "m".into(),
                    aliases: vec![pb::AliasTarget {
                        alias: "production".into(),
                        version: v,
                        expected_version: None,
                    }],
                    reason: "race".into(),
                    override_policy: false,
                })
                .await
            })
        })
        .collect();
    let mut won = Vec::new();
    for t in tasks {
        match t.await.expect("task") {
            Ok(r) => won.push(r.into_inner().moves[0].to_version),
            Err(s) => assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one winner: {won:?}");
    let m = c
        .get_model(pb::GetModelRequest { name: "m".into() })
        .await
        .expect("model")
        .into_inner();
    assert_eq!(m.aliases.get("production"), Some(&won[0]));
    app.stop().await;
}

on_every_store!(
    an_alias_moves_only_with_passing_evidence,
    racing_promotions_leave_exactly_one_winner
);

/// With credentials: a writer moves aliases through their policies and
/// records evidence; only an admin overrides or takes a backup.
#[tokio::test]
async fn only_the_admin_scope_overrides_a_policy() {
    let dir = mlmesh_tests::TempDir::new("gate-scopes");
    let (admin, writer) = ("an-admin-token-0123456789", "a-writer-token-0123456789");
    std::fs::write(dir.path().join("admin"), admin).expect("token");
    std::fs::write(dir.path().join("writer"), writer).expect("token");
    let data = dir.path().join("data");
    let (a, w) = (dir.path().join("admin"), dir.path().join("writer"));
    let app = spawn_app(&data, move |s| {
        s.server.admin_token_file = a.display().to_string();
        s.server.writer_token_file = w.display().to_string();
    })
    .await;
    let mut c = app.client();
    let create = pb::CreateModelRequest {
        name: "m".into(),
        ..Default::default()
    };
    c.create_model(tonic::Request::new(create).tap_token(writer))
        .await
        .expect("a writer creates");
    let p = tonic::Request::new(pb::SetAliasPolicyRequest {
        policy: Some(pb::AliasPolicy {
            model: "m".into(),
            alias: "production".into(),
            suite_digest: sha256(SUITE.as_bytes()),
            ..Default::default()
        }),
        remove: false,
    })
    .tap_token(writer);
    c.set_alias_policy(p).await.expect("a writer sets a policy");
    let request = || pb::SetAliasesRequest {
        model: "m".into(),
        aliases: vec![pb::AliasTarget {
            alias: "production".into(),
            version: 1,
            expected_version: None,
        }],
        reason: "override".into(),
        override_policy: true,
    };
    // The model has no version 1 yet: the scope is checked first.
    assert_status(
        c.set_aliases(tonic::Request::new(request()).tap_token(writer))
            .await,
        Code::PermissionDenied,
        &["admin scope"],
    );
    assert_status(
        c.backup(tonic::Request::new(pb::BackupRequest {}).tap_token(writer))
            .await,
        Code::PermissionDenied,
        &["needs the admin scope", "server.admin_token_file"],
    );
    assert_status(
        c.set_aliases(tonic::Request::new(request()).tap_token(admin))
            .await,
        Code::NotFound,
        &["no version 1"],
    );
    app.stop().await;
}

trait TapToken {
    fn tap_token(self, token: &str) -> Self;
}

impl<T> TapToken for tonic::Request<T> {
    fn tap_token(mut self, token: &str) -> Self {
        self.metadata_mut()
            .insert("x-mlmesh-admin-token", token.parse().expect("ascii"));
        self
    }
}
