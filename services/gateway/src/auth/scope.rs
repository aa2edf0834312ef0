//! What each operation needs: the scope a gRPC method or an HTTP route
//! requires, or none for health checks.

/// A permission an API key or token grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Embeddings and similarity.
    Embed,
    /// Reading collections, search, RAG retrieval.
    Search,
    /// Creating and deleting collections, ingesting documents.
    Ingest,
    /// Inference, pipelines, model lists.
    Predict,
    /// Loading and unloading models.
    Admin,
    /// The console's views of the mesh: services, replicas, metrics, the
    /// registry's models and evidence.
    Observe,
    /// Moving and rolling back model aliases (through the registry's
    /// validation gate; passing over it needs `admin` too).
    Promote,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "embed" => Scope::Embed,
            "search" => Scope::Search,
            "ingest" => Scope::Ingest,
            "predict" => Scope::Predict,
            "admin" => Scope::Admin,
            "observe" => Scope::Observe,
            "promote" => Scope::Promote,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Embed => "embed",
            Scope::Search => "search",
            Scope::Ingest => "ingest",
            Scope::Predict => "predict",
            Scope::Admin => "admin",
            Scope::Observe => "observe",
            Scope::Promote => "promote",
        }
    }
}

/// The scope a gRPC call (`/package.Service/Method`) needs.
pub fn for_grpc(path: &str) -> Option<Scope> {
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    Some(match (service, method) {
        ("mlmesh.gateway.v1.Gateway", m) => match m {
            "Embed" => Scope::Embed,
            "Search" | "RagQuery" | "ListCollections" | "GetCollection" => Scope::Search,
            "CreateCollection" | "DeleteCollection" | "AddTextIndex" | "Ingest" => Scope::Ingest,
            _ => Scope::Predict,
        },
        ("inference.GRPCInferenceService", "RepositoryModelLoad" | "RepositoryModelUnload") => {
            Scope::Admin
        }
        ("inference.GRPCInferenceService", _) => Scope::Predict,
        // Health and reflection are open (probes, grpcurl).
        _ => return None,
    })
}

/// The scope an HTTP route needs; `None` for the open ones. MCP is checked
/// per tool (see `mcp`): the endpoint itself needs a caller, no scope.
pub fn for_http(method: &http::Method, path: &str) -> Option<Option<Scope>> {
    let read = method == http::Method::GET;
    Some(Some(match path {
        "/healthz" | "/readyz" => return None,
        // The console's files hold no data: open, so the page can ask
        // for a key. What it shows comes from the APIs below.
        p if p == "/ui" || p.starts_with("/ui/") => return None,
        p if p == "/v1/mesh" || p.starts_with("/v1/mesh/") || p == "/v1/serving" => Scope::Observe,
        p if p.starts_with("/v1/registry/") => {
            if read {
                Scope::Observe
            } else {
                Scope::Promote
            }
        }
        p if p.starts_with("/v2/repository/models/")
            && (p.ends_with("/load") || p.ends_with("/unload")) =>
        {
            Scope::Admin
        }
        // Who may call, and what was changed by whom: the operator's.
        "/v1/audit" | "/v1/access" => Scope::Admin,
        "/mcp" => return Some(None),
        "/v1/embeddings" | "/v1/similarity" => Scope::Embed,
        "/v1/rag/query" => Scope::Search,
        // How a candidate compares with production is the operator's.
        "/v1/shadow" => Scope::Admin,
        p if p.starts_with("/v1/collections") => {
            if read || p.ends_with("/search") || p.ends_with("/browse") {
                Scope::Search
            } else {
                Scope::Ingest
            }
        }
        _ => Scope::Predict,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_map_to_scopes() {
        assert_eq!(
            for_grpc("/mlmesh.gateway.v1.Gateway/Embed"),
            Some(Scope::Embed)
        );
        assert_eq!(
            for_grpc("/mlmesh.gateway.v1.Gateway/Ingest"),
            Some(Scope::Ingest)
        );
        assert_eq!(
            for_grpc("/inference.GRPCInferenceService/ModelInfer"),
            Some(Scope::Predict)
        );
        assert_eq!(
            for_grpc("/inference.GRPCInferenceService/RepositoryModelUnload"),
            Some(Scope::Admin)
        );
        assert_eq!(for_grpc("/grpc.health.v1.Health/Check"), None);
        let get = http::Method::GET;
        let post = http::Method::POST;
        assert_eq!(for_http(&get, "/healthz"), None);
        assert_eq!(
            for_http(&post, "/v1/collections/x/search"),
            Some(Some(Scope::Search))
        );
        assert_eq!(
            for_http(&post, "/v1/collections/x/documents"),
            Some(Some(Scope::Ingest))
        );
        assert_eq!(for_http(&get, "/v1/collections"), Some(Some(Scope::Search)));
        assert_eq!(
            for_http(&post, "/v2/models/m/infer"),
            Some(Some(Scope::Predict))
        );
        assert_eq!(for_http(&post, "/mcp"), Some(None));
        assert_eq!(for_http(&get, "/ui/console.js"), None);
        assert_eq!(
            for_http(&get, "/v1/mesh/events"),
            Some(Some(Scope::Observe))
        );
        assert_eq!(for_http(&get, "/uix"), Some(Some(Scope::Predict)));
        assert_eq!(
            for_http(&get, "/v1/registry/models"),
            Some(Some(Scope::Observe))
        );
        assert_eq!(
            for_http(&post, "/v1/registry/models/m/aliases/prod"),
            Some(Some(Scope::Promote))
        );
        assert_eq!(for_http(&get, "/v1/audit"), Some(Some(Scope::Admin)));
        assert_eq!(
            for_http(&post, "/v2/repository/models/iris/unload"),
            Some(Some(Scope::Admin))
        );
    }
}
