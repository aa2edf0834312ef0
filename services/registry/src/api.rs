//! The tonic implementation of `mlmesh.registry.v1.Registry`: translates
//! messages, calls the [`Registry`] core, counts and traces every call.

use std::{collections::HashSet, future::Future, pin::Pin, sync::Arc};

use futures::{Stream, StreamExt};
use mlmesh_proto::registry::v1::{self as pb, registry_server};
use mlmesh_runtime::admin::Scope;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

use crate::{
    backup::Piece,
    convert,
    download::DownloadSpec,
    error::RegistryError,
    registry::Registry,
    store::{AliasChange, ModelFilter, VersionFilter, evidence::Gate},
    uploads::{Chunk, UploadSpec},
    watch::{WatchItem, WatchSpec},
};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The gRPC face of a [`Registry`].
#[derive(Clone, Debug)]
pub struct RegistryApi {
    registry: Arc<Registry>,
}

impl RegistryApi {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }

    /// Traces and counts one call.
    async fn call<T>(
        &self,
        method: &'static str,
        f: impl Future<Output = Result<T, RegistryError>>,
    ) -> Result<Response<T>, Status> {
        let span = mlmesh_runtime::call_span!("registry.call", method);
        let start = std::time::Instant::now();
        let result = f.instrument(span).await.map_err(Status::from);
        let code = result
            .as_ref()
            .map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        let metrics = &self.registry.metrics;
        metrics.rpc.record(method, code, start.elapsed());
        metrics
            .calls
            .with_label_values(&[method, mlmesh_runtime::code_name(code)])
            .inc();
        result.map(Response::new)
    }
}

/// How a move treats its alias's policy: an override needs the admin scope
/// (the admin layer says what the caller was admitted as).
fn gate<T>(req: &Request<T>, override_policy: bool) -> Result<Gate, RegistryError> {
    if !override_policy {
        return Ok(Gate::Enforce);
    }
    match Scope::of(req) {
        Some(s) if s.is_admin() => Ok(Gate::Override),
        _ => Err(RegistryError::PermissionDenied(
            "override_policy needs the admin scope (server.admin_token_file or server.tls.admin_identities); a writer's credential moves aliases only through their policies".into(),
        )),
    }
}

#[tonic::async_trait]
impl registry_server::Registry for RegistryApi {
    async fn create_model(
        &self,
        req: Request<pb::CreateModelRequest>,
    ) -> Result<Response<pb::Model>, Status> {
        let r = req.into_inner();
        self.call("CreateModel", async {
            let spec = convert::spec(r.name, r.description, r.tags, r.metadata)?;
            self.registry.create_model(spec).await.map(convert::model)
        })
        .await
    }

    async fn get_model(
        &self,
        req: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::Model>, Status> {
        let r = req.into_inner();
        self.call("GetModel", async {
            self.registry.get_model(r.name).await.map(convert::model)
        })
        .await
    }

    async fn update_model(
        &self,
        req: Request<pb::UpdateModelRequest>,
    ) -> Result<Response<pb::Model>, Status> {
        let r = req.into_inner();
        self.call("UpdateModel", async {
            let spec = convert::spec(r.name, r.description, r.tags, r.metadata)?;
            self.registry.update_model(spec).await.map(convert::model)
        })
        .await
    }

    async fn list_models(
        &self,
        req: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let r = req.into_inner();
        self.call("ListModels", async {
            let filter = ModelFilter {
                name_prefix: r.name_prefix,
                tags: r.tags.into_iter().collect(),
                metadata: r.metadata.into_iter().collect(),
                task: r.task,
                after: (!r.page_token.is_empty()).then_some(r.page_token),
                limit: r.page_size,
            };
            let (models, next, revision) = self.registry.list_models(filter).await?;
            Ok(pb::ListModelsResponse {
                models: models.into_iter().map(convert::model).collect(),
                next_page_token: next.unwrap_or_default(),
                revision,
            })
        })
        .await
    }

    async fn start_upload(
        &self,
        req: Request<pb::StartUploadRequest>,
    ) -> Result<Response<pb::Upload>, Status> {
        let r = req.into_inner();
        self.call("StartUpload", async {
            let spec = UploadSpec {
                model: r.model,
                files: convert::files(r.files),
                metadata: convert::metadata("metadata", r.metadata)?,
                lineage: convert::lineage(r.lineage),
            };
            self.registry.start_upload(spec).await.map(convert::upload)
        })
        .await
    }

    async fn get_upload(
        &self,
        req: Request<pb::GetUploadRequest>,
    ) -> Result<Response<pb::Upload>, Status> {
        let r = req.into_inner();
        self.call("GetUpload", async {
            self.registry
                .get_upload(r.upload_id)
                .await
                .map(convert::upload)
        })
        .await
    }

    async fn upload_files(
        &self,
        req: Request<Streaming<pb::UploadChunk>>,
    ) -> Result<Response<pb::UploadFilesResponse>, Status> {
        let chunks = req.into_inner().map(|m| {
            m.map(|c| Chunk {
                upload_id: c.upload_id,
                path: c.path,
                offset: c.offset,
                data: c.data,
            })
            .map_err(|s| {
                RegistryError::Aborted(format!("the upload stream broke: {}", s.message()))
            })
        });
        self.call("UploadFiles", async {
            let (progress, version) = self.registry.upload_files(chunks).await?;
            Ok(pb::UploadFilesResponse {
                upload: Some(convert::upload(progress)),
                version: version.map(convert::version),
            })
        })
        .await
    }

    async fn abort_upload(
        &self,
        req: Request<pb::AbortUploadRequest>,
    ) -> Result<Response<pb::AbortUploadResponse>, Status> {
        let r = req.into_inner();
        self.call("AbortUpload", async {
            self.registry.abort_upload(r.upload_id).await?;
            Ok(pb::AbortUploadResponse {})
        })
        .await
    }

    async fn get_version(
        &self,
        req: Request<pb::GetVersionRequest>,
    ) -> Result<Response<pb::Version>, Status> {
        let r = req.into_inner();
        self.call("GetVersion", async {
            let sel = convert::selector(r.selector)?;
            self.registry
                .get_version(r.model, sel)
                .await
                .map(convert::version)
        })
        .await
    }

    async fn list_versions(
        &self,
        req: Request<pb::ListVersionsRequest>,
    ) -> Result<Response<pb::ListVersionsResponse>, Status> {
        let r = req.into_inner();
        self.call("ListVersions", async {
            let filter = VersionFilter {
                status: convert::status_from("status", r.status)?,
                task: r.task,
                before: convert::page_token_i64("page_token", &r.page_token)?,
                limit: r.page_size,
            };
            let (versions, next, revision) = self.registry.list_versions(r.model, filter).await?;
            Ok(pb::ListVersionsResponse {
                versions: versions.into_iter().map(convert::version).collect(),
                next_page_token: next.map(|n| n.to_string()).unwrap_or_default(),
                revision,
            })
        })
        .await
    }

    async fn set_version_status(
        &self,
        req: Request<pb::SetVersionStatusRequest>,
    ) -> Result<Response<pb::Version>, Status> {
        let r = req.into_inner();
        self.call("SetVersionStatus", async {
            let status = convert::status_from("status", r.status)?
                .ok_or_else(|| RegistryError::invalid("status: READY or DEPRECATED"))?;
            self.registry
                .set_status(r.model, r.version, status)
                .await
                .map(convert::version)
        })
        .await
    }

    async fn delete_version(
        &self,
        req: Request<pb::DeleteVersionRequest>,
    ) -> Result<Response<pb::DeleteVersionResponse>, Status> {
        let r = req.into_inner();
        self.call("DeleteVersion", async {
            self.registry.delete_version(r.model, r.version).await?;
            Ok(pb::DeleteVersionResponse {})
        })
        .await
    }

    type DownloadStream = BoxStream<pb::DownloadChunk>;

    async fn download(
        &self,
        req: Request<pb::DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let r = req.into_inner();
        let rx = self
            .call("Download", async {
                let spec = DownloadSpec {
                    model: r.model,
                    selector: convert::download_selector(r.selector)?,
                    path: r.path,
                    offset: r.offset,
                    length: r.length,
                };
                self.registry.download(spec).await
            })
            .await?
            .into_inner();
        let stream = rx.into_stream().map(|p| {
            p.map(|p| pb::DownloadChunk {
                version: p.version,
                path: p.path,
                offset: p.offset,
                data: p.data,
            })
            .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn set_aliases(
        &self,
        req: Request<pb::SetAliasesRequest>,
    ) -> Result<Response<pb::SetAliasesResponse>, Status> {
        let gate = gate(&req, req.get_ref().override_policy);
        let r = req.into_inner();
        self.call("SetAliases", async {
            let gate = gate?;
            let changes = r
                .aliases
                .into_iter()
                .map(|a| AliasChange {
                    alias: a.alias,
                    version: a.version,
                    expected: a.expected_version,
                })
                .collect();
            let moves = self
                .registry
                .set_aliases(r.model, changes, r.reason, gate)
                .await?;
            let revision = match moves.last() {
                Some(m) => m.revision,
                None => *self.registry.head.borrow(),
            };
            Ok(pb::SetAliasesResponse {
                moves: moves.into_iter().map(convert::alias_move).collect(),
                revision,
            })
        })
        .await
    }

    async fn alias_history(
        &self,
        req: Request<pb::AliasHistoryRequest>,
    ) -> Result<Response<pb::AliasHistoryResponse>, Status> {
        let r = req.into_inner();
        self.call("AliasHistory", async {
            let before = convert::page_token_i64("page_token", &r.page_token)?;
            let (moves, next) = self
                .registry
                .alias_history(r.model, r.alias, before, r.page_size)
                .await?;
            Ok(pb::AliasHistoryResponse {
                moves: moves.into_iter().map(convert::alias_move).collect(),
                next_page_token: next.map(|n| n.to_string()).unwrap_or_default(),
            })
        })
        .await
    }

    async fn rollback_alias(
        &self,
        req: Request<pb::RollbackAliasRequest>,
    ) -> Result<Response<pb::AliasMove>, Status> {
        let gate = gate(&req, req.get_ref().override_policy);
        let r = req.into_inner();
        self.call("RollbackAlias", async {
            self.registry
                .rollback_alias(r.model, r.alias, r.expected_version, r.reason, gate?)
                .await
                .map(convert::alias_move)
        })
        .await
    }

    async fn record_evidence(
        &self,
        req: Request<pb::RecordEvidenceRequest>,
    ) -> Result<Response<pb::Evidence>, Status> {
        let r = req.into_inner();
        self.call("RecordEvidence", async {
            let e = convert::evidence_from(r.evidence)?;
            self.registry
                .record_evidence(e)
                .await
                .map(convert::evidence)
        })
        .await
    }

    async fn list_evidence(
        &self,
        req: Request<pb::ListEvidenceRequest>,
    ) -> Result<Response<pb::ListEvidenceResponse>, Status> {
        let r = req.into_inner();
        self.call("ListEvidence", async {
            let before = convert::page_token_i64("page_token", &r.page_token)?;
            let version = (r.version != 0).then_some(r.version);
            let (list, next) = self
                .registry
                .list_evidence(r.model, version, before, r.page_size)
                .await?;
            Ok(pb::ListEvidenceResponse {
                evidence: list.into_iter().map(convert::evidence).collect(),
                next_page_token: next.map(|n| n.to_string()).unwrap_or_default(),
            })
        })
        .await
    }

    async fn set_alias_policy(
        &self,
        req: Request<pb::SetAliasPolicyRequest>,
    ) -> Result<Response<pb::AliasPolicy>, Status> {
        let r = req.into_inner();
        self.call("SetAliasPolicy", async {
            let p = convert::policy_from(r.policy)?;
            self.registry
                .set_policy(p, r.remove)
                .await
                .map(convert::policy)
        })
        .await
    }

    async fn list_alias_policies(
        &self,
        req: Request<pb::ListAliasPoliciesRequest>,
    ) -> Result<Response<pb::ListAliasPoliciesResponse>, Status> {
        let r = req.into_inner();
        self.call("ListAliasPolicies", async {
            let list = self.registry.list_policies(r.model).await?;
            Ok(pb::ListAliasPoliciesResponse {
                policies: list.into_iter().map(convert::policy).collect(),
            })
        })
        .await
    }

    type BackupStream = BoxStream<pb::BackupChunk>;

    async fn backup(
        &self,
        _req: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let rx = self
            .call("Backup", self.registry.backup())
            .await?
            .into_inner();
        let stream = rx.into_stream().map(|p| {
            p.map(|p| pb::BackupChunk {
                part: Some(match p {
                    Piece::Metadata(b) => pb::backup_chunk::Part::Metadata(b),
                    Piece::Blob {
                        sha256,
                        size,
                        offset,
                        data,
                    } => pb::backup_chunk::Part::Blob(pb::BlobChunk {
                        sha256,
                        size,
                        offset,
                        data,
                    }),
                }),
            })
            .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn restore(
        &self,
        req: Request<Streaming<pb::BackupChunk>>,
    ) -> Result<Response<pb::RestoreResponse>, Status> {
        let pieces = req.into_inner().map(|m| match m {
            Ok(pb::BackupChunk {
                part: Some(pb::backup_chunk::Part::Metadata(b)),
            }) => Ok(Piece::Metadata(b)),
            Ok(pb::BackupChunk {
                part: Some(pb::backup_chunk::Part::Blob(b)),
            }) => Ok(Piece::Blob {
                sha256: b.sha256,
                size: b.size,
                offset: b.offset,
                data: b.data,
            }),
            Ok(pb::BackupChunk { part: None }) => Err(RegistryError::invalid(
                "part: each message carries metadata or a blob",
            )),
            Err(s) => Err(RegistryError::Aborted(format!(
                "the restore stream broke: {}",
                s.message()
            ))),
        });
        self.call("Restore", async {
            let r = self.registry.restore(pieces).await?;
            Ok(pb::RestoreResponse {
                models: r.models as i64,
                versions: r.versions as i64,
                blobs: r.blobs as i64,
                revision: r.revision,
            })
        })
        .await
    }

    type WatchStream = BoxStream<pb::WatchEvent>;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let r = req.into_inner();
        let registry = Arc::clone(&self.registry);
        let rx = self
            .call("Watch", async {
                let f = r.filter.unwrap_or_default();
                let kinds = f
                    .kinds
                    .iter()
                    .enumerate()
                    .map(|(i, k)| convert::event_kind_from(i, *k))
                    .collect::<Result<HashSet<_>, _>>()?;
                let spec = WatchSpec {
                    start_revision: r.start_revision,
                    models: f.models.into_iter().collect(),
                    aliases: f.aliases.into_iter().collect(),
                    kinds,
                };
                registry.watch(spec).await
            })
            .await?
            .into_inner();
        let stream = ReceiverStream::new(rx).map(|item| match item {
            Ok(WatchItem::Event(e)) => Ok(convert::event(e)),
            Ok(WatchItem::Progress(revision)) => Ok(pb::WatchEvent {
                revision,
                kind: pb::EventKind::Progress as i32,
                ..Default::default()
            }),
            Err(e) => Err(Status::from(e)),
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
