//! Models: create, read, update, search and paging, and their errors.

use mlmesh_proto::registry::v1 as pb;
use tonic::Code;

use crate::helpers::{Store, assert_status};

fn metadata(pairs: &[(&str, serde_json::Value)]) -> prost_types::Struct {
    let m: serde_json::Map<String, serde_json::Value> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    mlmesh_proto::json::json_to_struct(m)
}

async fn models_are_created_read_updated_and_searched(store: Store) {
    let Some(env) = store.env("models_are_created_read_updated_and_searched") else {
        return;
    };
    let app = env.spawn(|_| {}).await;
    let mut c = app.client();
    for (name, team, task) in [
        ("fraud", "risk", "classification"),
        ("fraud-v2", "risk", "classification"),
        ("churn", "growth", "regression"),
    ] {
        let m = c
            .create_model(pb::CreateModelRequest {
                name: name.into(),
                description: format!("{name} model"),
                tags: [("team".to_owned(), team.to_owned())].into(),
                metadata: Some(metadata(&[
                    ("owner", serde_json::json!(format!("{team}@example.com"))),
                    ("tier", serde_json::json!(1)),
                ])),
            })
            .await
            .expect("create")
            .into_inner();
        assert_eq!(m.latest_version, 0);
        app.push(name, &[("model.bin", name.as_bytes().to_vec())])
            .await;
        // Lineage task is what ListModels' task filter matches.
        let up = c
            .start_upload(pb::StartUploadRequest {
                model: name.into(),
                files: crate::helpers::manifest(&[("m", vec![1, 2, 3])]),
                lineage: Some(pb::Lineage {
                    task: task.into(),
                    framework: "sklearn".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("start")
            .into_inner();
        app.send(&up.upload_id, &[("m", vec![1, 2, 3])], 2)
            .await
            .expect("send");
    }
    assert_status(
        c.create_model(pb::CreateModelRequest {
            name: "fraud".into(),
            ..Default::default()
        })
        .await,
        Code::AlreadyExists,
        &["fraud"],
    );

    let m = c
        .get_model(pb::GetModelRequest {
            name: "fraud".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(m.description, "fraud model");
    assert_eq!(m.latest_version, 2);
    assert_eq!(m.tags["team"], "risk");

    let names =
        |r: pb::ListModelsResponse| r.models.into_iter().map(|m| m.name).collect::<Vec<_>>();
    let list = |req: pb::ListModelsRequest| {
        let mut c = c.clone();
        async move { c.list_models(req).await.expect("list").into_inner() }
    };
    assert_eq!(
        names(list(pb::ListModelsRequest::default()).await),
        ["churn", "fraud", "fraud-v2"]
    );
    assert_eq!(
        names(
            list(pb::ListModelsRequest {
                name_prefix: "fraud".into(),
                ..Default::default()
            })
            .await
        ),
        ["fraud", "fraud-v2"]
    );
    assert_eq!(
        names(
            list(pb::ListModelsRequest {
                tags: [("team".to_owned(), "growth".to_owned())].into(),
                ..Default::default()
            })
            .await
        ),
        ["churn"]
    );
    assert_eq!(
        names(
            list(pb::ListModelsRequest {
                metadata: [
                    ("owner".to_owned(), "risk@example.com".to_owned()),
                    ("tier".to_owned(), "1".to_owned())
                ]
                .into(),
                ..Default::default()
            })
            .await
        ),
        ["fraud", "fraud-v2"]
    );
    assert_eq!(
        names(
            list(pb::ListModelsRequest {
                task: "regression".into(),
                ..Default::default()
            })
            .await
        ),
        ["churn"]
    );

    // Pages of one, followed by token.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(pb::ListModelsRequest {
            page_size: 1,
            page_token: token.clone(),
            ..Default::default()
        })
        .await;
        assert!(page.revision > 0);
        seen.extend(names(page.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["churn", "fraud", "fraud-v2"]);

    let updated = c
        .update_model(pb::UpdateModelRequest {
            name: "churn".into(),
            description: "new".into(),
            tags: [("team".to_owned(), "risk".to_owned())].into(),
            metadata: None,
        })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.description, "new");
    assert_eq!(updated.tags["team"], "risk");
    assert!(updated.metadata.expect("struct").fields.is_empty());
    app.stop().await;
}

async fn bad_model_requests_get_clear_statuses(store: Store) {
    let Some(env) = store.env("bad_model_requests_get_clear_statuses") else {
        return;
    };
    let app = env.spawn(|_| {}).await;
    let mut c = app.client();
    for bad in ["", "../x", "a/b", ".hidden", "-x"] {
        assert_status(
            c.create_model(pb::CreateModelRequest {
                name: bad.into(),
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
            &["name"],
        );
    }
    assert_status(
        c.get_model(pb::GetModelRequest {
            name: "nope".into(),
        })
        .await,
        Code::NotFound,
        &["nope"],
    );
    assert_status(
        c.update_model(pb::UpdateModelRequest {
            name: "nope".into(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
        &["nope"],
    );
    let big = serde_json::json!("x".repeat(70 * 1024));
    assert_status(
        c.create_model(pb::CreateModelRequest {
            name: "big".into(),
            metadata: Some(metadata(&[("blob", big)])),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        &["metadata", "limit"],
    );
    app.stop().await;
}

crate::helpers::on_every_store!(
    models_are_created_read_updated_and_searched,
    bad_model_requests_get_clear_statuses,
);
