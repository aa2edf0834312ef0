//! What the cross-process registry tests share: pushing a version over
//! gRPC (digests by the `sha2` crate, not by the registry).

use mlmesh_proto::registry::v1::{self as pb, registry_client::RegistryClient};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

pub fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Declares `files`, uploads them in messages of at most `chunk` bytes, and
/// returns the committed version number.
pub async fn push(
    c: &mut RegistryClient<Channel>,
    model: &str,
    files: &[(&str, Vec<u8>)],
    lineage: Option<pb::Lineage>,
    chunk: usize,
) -> Result<i64, tonic::Status> {
    let up = c
        .start_upload(pb::StartUploadRequest {
            model: model.into(),
            files: files
                .iter()
                .map(|(p, b)| pb::FileEntry {
                    path: (*p).into(),
                    size: b.len() as u64,
                    sha256: sha256(b),
                })
                .collect(),
            lineage,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut msgs = Vec::new();
    for (p, b) in files {
        for (i, part) in b.chunks(chunk.max(1)).enumerate() {
            msgs.push(pb::UploadChunk {
                upload_id: up.upload_id.clone(),
                path: (*p).into(),
                offset: (i * chunk) as u64,
                data: part.to_vec().into(),
            });
        }
    }
    c.upload_files(tokio_stream::iter(msgs))
        .await?
        .into_inner()
        .version
        .map(|v| v.version)
        .ok_or_else(|| tonic::Status::internal("not committed"))
}
