//! Every downstream call the gateway makes, declared once: its gRPC path
//! (the client span's name and the metrics' `method`), whether it may be
//! retried on another replica, and the generated client method that sends
//! it. A call site names the RPC and passes its request
//! (`pool.unary(&rpc::EMBED, deadline, request)`); adding a downstream call
//! is one line here.
//!
//! Only calls whose repetition cannot change the outcome are idempotent:
//! a `CreateCollection` that reached the service and lost its answer would
//! come back ALREADY_EXISTS if sent again, so it is not.

use std::future::Future;
use std::pin::Pin;

use mlmesh_proto::{
    embedding::v1::{self as emb, embedding_service_client::EmbeddingServiceClient},
    inference::{self as inf, grpc_inference_service_client::GrpcInferenceServiceClient},
    registry::v1::{self as reg, registry_client::RegistryClient},
    vector::v1::{self as vec, vector_search_client::VectorSearchClient},
};
use tonic::{Request, Response, Status};

use super::{Deadline, DownstreamError, Pool, TracedChannel};

/// The largest answer decoded from a downstream service: embeddings of a
/// full batch, search hits with payloads, inference outputs.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// An answer on its way back.
pub type Sent<Resp> = Pin<Box<dyn Future<Output = Result<Response<Resp>, Status>> + Send>>;

/// One RPC of a downstream service.
pub struct Rpc<Req, Resp> {
    /// The full gRPC path, as spans and metrics name the call.
    pub path: &'static str,
    /// Retried on another replica after UNAVAILABLE.
    pub idempotent: bool,
    send: fn(TracedChannel, Request<Req>) -> Sent<Resp>,
}

impl<Req, Resp> std::fmt::Debug for Rpc<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rpc")
            .field("path", &self.path)
            .field("idempotent", &self.idempotent)
            .finish()
    }
}

impl Pool {
    /// Sends `request` as `rpc` to a replica (balanced, within `deadline`,
    /// retried on another replica when `rpc` is idempotent).
    pub async fn unary<Req, Resp>(
        &self,
        rpc: &Rpc<Req, Resp>,
        deadline: Deadline,
        request: Req,
    ) -> Result<Resp, DownstreamError>
    where
        Req: Clone,
    {
        self.unary_as(rpc, deadline, request, None).await
    }

    /// [`Pool::unary`] presenting the service's `token` (a forwarded
    /// state change the caller's own scope allowed).
    pub async fn unary_as<Req, Resp>(
        &self,
        rpc: &Rpc<Req, Resp>,
        deadline: Deadline,
        request: Req,
        token: Option<&mlmesh_runtime::admin::AdminToken>,
    ) -> Result<Resp, DownstreamError>
    where
        Req: Clone,
    {
        self.call(rpc.path, deadline, rpc.idempotent, |ch, timeout| {
            let mut r = Request::new(request.clone());
            r.set_timeout(timeout);
            if let Some(t) = token {
                t.attach(r.metadata_mut());
            }
            (rpc.send)(ch, r)
        })
        .await
    }
}

/// `NAME = Client::method(Request) -> Response, "path", retried;`
macro_rules! rpcs {
    ($($(#[$doc:meta])* $name:ident = $client:ident::$method:ident($req:ty) -> $resp:ty, $path:literal, $retried:literal;)*) => {
        $(
            $(#[$doc])*
            pub const $name: Rpc<$req, $resp> = Rpc {
                path: $path,
                idempotent: $retried,
                send: |ch, r| {
                    Box::pin(async move {
                        $client::new(ch)
                            .max_decoding_message_size(MAX_RESPONSE_BYTES)
                            .$method(r)
                            .await
                    })
                },
            };
        )*
    };
}

rpcs! {
    EMBED = EmbeddingServiceClient::embed(emb::EmbedRequest) -> emb::EmbedResponse,
        "mlmesh.embedding.v1.EmbeddingService/Embed", true;
    SIMILARITY = EmbeddingServiceClient::similarity(emb::SimilarityRequest) -> emb::SimilarityResponse,
        "mlmesh.embedding.v1.EmbeddingService/Similarity", true;
    TOKENIZE = EmbeddingServiceClient::tokenize(emb::TokenizeRequest) -> emb::TokenizeResponse,
        "mlmesh.embedding.v1.EmbeddingService/Tokenize", true;
    INFO = EmbeddingServiceClient::info(emb::InfoRequest) -> emb::InfoResponse,
        "mlmesh.embedding.v1.EmbeddingService/Info", true;

    /// Not retried: see the module's header.
    CREATE_COLLECTION = VectorSearchClient::create_collection(vec::CreateCollectionRequest) -> vec::CreateCollectionResponse,
        "mlmesh.vector.v1.VectorSearch/CreateCollection", false;
    DELETE_COLLECTION = VectorSearchClient::delete_collection(vec::DeleteCollectionRequest) -> vec::DeleteCollectionResponse,
        "mlmesh.vector.v1.VectorSearch/DeleteCollection", true;
    LIST_COLLECTIONS = VectorSearchClient::list_collections(vec::ListCollectionsRequest) -> vec::ListCollectionsResponse,
        "mlmesh.vector.v1.VectorSearch/ListCollections", true;
    GET_COLLECTION = VectorSearchClient::get_collection(vec::GetCollectionRequest) -> vec::CollectionInfo,
        "mlmesh.vector.v1.VectorSearch/GetCollection", true;
    /// Retried: a repeat adds nothing and fills only what is left.
    ADD_TEXT_INDEX = VectorSearchClient::add_text_index(vec::AddTextIndexRequest) -> vec::AddTextIndexResponse,
        "mlmesh.vector.v1.VectorSearch/AddTextIndex", true;
    /// Retried: points are written by id, so a repeat writes the same.
    UPSERT = VectorSearchClient::upsert(vec::UpsertRequest) -> vec::UpsertResponse,
        "mlmesh.vector.v1.VectorSearch/Upsert", true;
    DELETE_POINTS = VectorSearchClient::delete(vec::DeleteRequest) -> vec::DeleteResponse,
        "mlmesh.vector.v1.VectorSearch/Delete", true;
    COUNT = VectorSearchClient::count(vec::CountRequest) -> vec::CountResponse,
        "mlmesh.vector.v1.VectorSearch/Count", true;
    SCROLL = VectorSearchClient::scroll(vec::ScrollRequest) -> vec::ScrollResponse,
        "mlmesh.vector.v1.VectorSearch/Scroll", true;
    SEARCH = VectorSearchClient::search(vec::SearchRequest) -> vec::SearchResponse,
        "mlmesh.vector.v1.VectorSearch/Search", true;

    MODEL_INFER = GrpcInferenceServiceClient::model_infer(inf::ModelInferRequest) -> inf::ModelInferResponse,
        "/inference.GRPCInferenceService/ModelInfer", true;
    MODEL_METADATA = GrpcInferenceServiceClient::model_metadata(inf::ModelMetadataRequest) -> inf::ModelMetadataResponse,
        "/inference.GRPCInferenceService/ModelMetadata", true;
    MODEL_READY = GrpcInferenceServiceClient::model_ready(inf::ModelReadyRequest) -> inf::ModelReadyResponse,
        "/inference.GRPCInferenceService/ModelReady", true;
    SERVER_READY = GrpcInferenceServiceClient::server_ready(inf::ServerReadyRequest) -> inf::ServerReadyResponse,
        "/inference.GRPCInferenceService/ServerReady", true;
    SERVER_LIVE = GrpcInferenceServiceClient::server_live(inf::ServerLiveRequest) -> inf::ServerLiveResponse,
        "/inference.GRPCInferenceService/ServerLive", true;
    SERVER_METADATA = GrpcInferenceServiceClient::server_metadata(inf::ServerMetadataRequest) -> inf::ServerMetadataResponse,
        "/inference.GRPCInferenceService/ServerMetadata", true;
    REPOSITORY_INDEX = GrpcInferenceServiceClient::repository_index(inf::RepositoryIndexRequest) -> inf::RepositoryIndexResponse,
        "/inference.GRPCInferenceService/RepositoryIndex", true;

    LIST_MODELS = RegistryClient::list_models(reg::ListModelsRequest) -> reg::ListModelsResponse,
        "/mlmesh.registry.v1.Registry/ListModels", true;
    GET_MODEL = RegistryClient::get_model(reg::GetModelRequest) -> reg::Model,
        "/mlmesh.registry.v1.Registry/GetModel", true;
    LIST_VERSIONS = RegistryClient::list_versions(reg::ListVersionsRequest) -> reg::ListVersionsResponse,
        "/mlmesh.registry.v1.Registry/ListVersions", true;
    GET_VERSION = RegistryClient::get_version(reg::GetVersionRequest) -> reg::Version,
        "/mlmesh.registry.v1.Registry/GetVersion", true;
    ALIAS_HISTORY = RegistryClient::alias_history(reg::AliasHistoryRequest) -> reg::AliasHistoryResponse,
        "/mlmesh.registry.v1.Registry/AliasHistory", true;
    LIST_EVIDENCE = RegistryClient::list_evidence(reg::ListEvidenceRequest) -> reg::ListEvidenceResponse,
        "/mlmesh.registry.v1.Registry/ListEvidence", true;
    LIST_ALIAS_POLICIES = RegistryClient::list_alias_policies(reg::ListAliasPoliciesRequest) -> reg::ListAliasPoliciesResponse,
        "/mlmesh.registry.v1.Registry/ListAliasPolicies", true;
    /// Not retried: a move whose answer was lost would come back as a
    /// compare-and-set conflict, hiding that it succeeded.
    SET_ALIASES = RegistryClient::set_aliases(reg::SetAliasesRequest) -> reg::SetAliasesResponse,
        "/mlmesh.registry.v1.Registry/SetAliases", false;
    ROLLBACK_ALIAS = RegistryClient::rollback_alias(reg::RollbackAliasRequest) -> reg::AliasMove,
        "/mlmesh.registry.v1.Registry/RollbackAlias", false;
}
