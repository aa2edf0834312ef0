//! `spawn_app()`: one real vector-search service per test, on its own port,
//! with its own data folder; `spawn_qdrant_app()` for the Qdrant backend
//! when `MLMESH_TEST_QDRANT_URL` points at a server.

use std::net::SocketAddr;

use mlmesh_proto::vector::v1::{self as pb, vector_search_client::VectorSearchClient};
use mlmesh_runtime::testing::Running;
use mlmesh_tests::TempDir;
use mlmesh_vector_search::{Application, Settings, settings::BackendKind};
use prost_types::Struct;
use serde_json::Value;
use tonic::transport::Channel;

pub type Client = VectorSearchClient<Channel>;

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: Client,
    running: Running,
    /// Keeps the data folder alive as long as the service.
    _data: Option<TempDir>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let data = TempDir::new("vector-test");
    let mut settings = Settings::for_tests(data.path().to_owned());
    tweak(&mut settings);
    start(settings, Some(data)).await
}

/// The env var naming a Qdrant server (gRPC URL) for the conformance suite.
pub const QDRANT_ENV: &str = "MLMESH_TEST_QDRANT_URL";

/// A service backed by the Qdrant server in `MLMESH_TEST_QDRANT_URL`, or
/// `None` (with a printed reason) when it is unset.
pub async fn spawn_qdrant_app(test: &str) -> Option<TestApp> {
    let Ok(url) = std::env::var(QDRANT_ENV) else {
        eprintln!(
            "SKIPPED {test} on the qdrant backend: {QDRANT_ENV} is not set (no Qdrant server on this machine); the same test ran on the embedded backend"
        );
        return None;
    };
    let mut settings = Settings::for_tests(std::env::temp_dir());
    settings.vector.backend = BackendKind::Qdrant;
    settings.qdrant.url = url;
    settings.qdrant.api_key = std::env::var("MLMESH_TEST_QDRANT_API_KEY").unwrap_or_default();
    Some(start(settings, None).await)
}

pub async fn start(settings: Settings, data: Option<TempDir>) -> TestApp {
    let running = Running::spawn::<Application>(settings).await;
    let addr = running.addr;
    let client = VectorSearchClient::connect(format!("http://{addr}"))
        .await
        .expect("connects")
        .max_decoding_message_size(256 * 1024 * 1024)
        .max_encoding_message_size(256 * 1024 * 1024);
    TestApp {
        addr,
        client,
        running,
        _data: data,
    }
}

impl TestApp {
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Sum of the `/metrics` samples whose line starts with `prefix`.
    pub async fn metric(&self, prefix: &str) -> f64 {
        self.running.metric(prefix).await
    }

    /// Creates a collection with a name unique to this test run.
    pub async fn collection(&self, label: &str, dimension: u32, distance: pb::Distance) -> String {
        self.create(label, dimension, distance, pb::TextIndex::Unspecified)
            .await
    }

    /// Creates a cosine collection with text index `index`, named uniquely.
    pub async fn text_collection(
        &self,
        label: &str,
        dimension: u32,
        index: pb::TextIndex,
    ) -> String {
        self.create(label, dimension, pb::Distance::Cosine, index)
            .await
    }

    async fn create(
        &self,
        label: &str,
        dimension: u32,
        distance: pb::Distance,
        text_index: pb::TextIndex,
    ) -> String {
        let name = unique_name(label);
        self.client()
            .create_collection(pb::CreateCollectionRequest {
                name: name.clone(),
                dimension,
                distance: distance.into(),
                text_index: text_index.into(),
                ..Default::default()
            })
            .await
            .expect("create collection");
        name
    }

    pub async fn upsert(&self, collection: &str, points: Vec<pb::Point>) {
        self.client()
            .upsert(pb::UpsertRequest {
                collection: collection.into(),
                points,
            })
            .await
            .expect("upsert");
    }

    pub async fn search(
        &self,
        collection: &str,
        vector: Vec<f32>,
        limit: u32,
    ) -> Vec<pb::ScoredPoint> {
        self.client()
            .search(pb::SearchRequest {
                collection: collection.into(),
                vector,
                limit,
                with_payload: true,
                ..Default::default()
            })
            .await
            .expect("search")
            .into_inner()
            .hits
    }

    /// Points in a collection (no filter).
    pub async fn count(&self, collection: &str) -> u64 {
        self.client()
            .count(pb::CountRequest {
                collection: collection.into(),
                filter: None,
            })
            .await
            .expect("count")
            .into_inner()
            .count
    }

    /// Deletes a collection (tests against a shared Qdrant clean up).
    pub async fn drop_collection(&self, name: &str) {
        let _ = self
            .client()
            .delete_collection(pb::DeleteCollectionRequest { name: name.into() })
            .await;
    }

    pub async fn stop(self) {
        self.running.stop().await;
    }
}

/// `label` and a random suffix: a collection name no other test run uses
/// (a Qdrant server may be shared).
pub fn unique_name(label: &str) -> String {
    format!(
        "{label}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

pub fn num(n: u64) -> Option<pb::PointId> {
    Some(pb::PointId {
        kind: Some(pb::point_id::Kind::Num(n)),
    })
}

pub fn uuid_id(s: &str) -> Option<pb::PointId> {
    Some(pb::PointId {
        kind: Some(pb::point_id::Kind::Uuid(s.into())),
    })
}

/// A JSON object literal as a protobuf Struct.
pub fn payload(v: Value) -> Option<Struct> {
    let Value::Object(map) = v else {
        panic!("payload must be an object")
    };
    Some(mlmesh_proto::json::json_to_struct(map))
}

/// A Struct back as JSON.
pub fn json(s: &Option<Struct>) -> Value {
    Value::Object(
        mlmesh_vector_search::convert::struct_to_json("payload", s.clone().unwrap_or_default())
            .expect("valid payload"),
    )
}

pub fn point(id: u64, vector: Vec<f32>, p: Value) -> pb::Point {
    pb::Point {
        id: num(id),
        vector,
        payload: payload(p),
        ..Default::default()
    }
}

pub fn id_num(id: &Option<pb::PointId>) -> u64 {
    match id.as_ref().and_then(|i| i.kind.as_ref()) {
        Some(pb::point_id::Kind::Num(n)) => *n,
        other => panic!("expected a numeric id, got {other:?}"),
    }
}

pub fn keyword(key: &str, value: &str) -> pb::Condition {
    field(key, pb::field_condition::Test::Keyword(value.into()))
}

pub fn integer(key: &str, value: i64) -> pb::Condition {
    field(key, pb::field_condition::Test::Integer(value))
}

pub fn boolean(key: &str, value: bool) -> pb::Condition {
    field(key, pb::field_condition::Test::Boolean(value))
}

pub fn range(key: &str, r: pb::Range) -> pb::Condition {
    field(key, pb::field_condition::Test::Range(r))
}

pub fn field(key: &str, test: pb::field_condition::Test) -> pb::Condition {
    pb::Condition {
        condition: Some(pb::condition::Condition::Field(pb::FieldCondition {
            key: key.into(),
            test: Some(test),
        })),
    }
}

pub fn has_id(ids: &[u64]) -> pb::Condition {
    pb::Condition {
        condition: Some(pb::condition::Condition::HasId(pb::HasIdCondition {
            ids: ids.iter().map(|i| num(*i).unwrap_or_default()).collect(),
        })),
    }
}

pub fn nested(f: pb::Filter) -> pb::Condition {
    pb::Condition {
        condition: Some(pb::condition::Condition::Filter(f)),
    }
}

/// A deterministic unit vector from a seed (xorshift), for tests.
pub fn unit_vector(seed: u64, dim: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v: Vec<f32> = (0..dim)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}
