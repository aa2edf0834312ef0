//! Blobs in an S3-compatible object store (AWS S3, MinIO, Ceph, R2, …)
//! through the `object_store` crate, shared by several registry replicas:
//! `<prefix>/sha256/<first two digits>/<digest>`.
//!
//! The registry's calls block (they run on the blocking pool, like the
//! metadata store's); each one drives the async client on the service's
//! runtime. A content is written by one PUT, or by a multipart upload in
//! `registry.s3.part_bytes` parts with at most `part_concurrency` in flight
//! (bounded memory whatever the file's size); S3 makes either visible only
//! when whole, so a content is whole or absent, as in the local folder.

use std::{
    fs::File,
    io::Read,
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream::BoxStream};
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart,
    aws::AmazonS3Builder, path::Path as Key,
};
use tokio::runtime::Handle;

use super::BlobStore;
use crate::{
    error::{RegistryError, Result},
    manifest::check_sha256,
    settings::S3Settings,
};

/// Bytes read from a staged file per write into the multipart buffer.
const READ_BYTES: usize = 1 << 20;

pub struct S3Blobs {
    store: Arc<dyn ObjectStore>,
    /// `<prefix>/sha256`.
    root: Key,
    part_bytes: usize,
    part_concurrency: usize,
    rt: Handle,
}

impl std::fmt::Debug for S3Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Blobs({}, {})", self.store, self.root)
    }
}

fn s3_error(what: &str, key: &Key, e: object_store::Error) -> RegistryError {
    RegistryError::Blobs(format!("{what} {key}: {e}"))
}

impl S3Blobs {
    /// Connects to the bucket of `url` (`s3://bucket[/prefix]`) and checks
    /// that it answers (a list call), so a wrong endpoint, bucket or
    /// credential fails at start.
    pub fn open(url: &str, s3: &S3Settings, rt: Handle) -> Result<Self> {
        // reqwest is built without a crypto provider of its own; ring is
        // the one the rest of the service (tonic) already links. Installed
        // once per process; a second call finds it set.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rest = url.strip_prefix("s3://").unwrap_or_default();
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_allow_http(s3.allow_http)
            .with_virtual_hosted_style_request(s3.virtual_hosted_style);
        if !s3.endpoint.is_empty() {
            b = b.with_endpoint(&s3.endpoint);
        }
        if !s3.region.is_empty() {
            b = b.with_region(&s3.region);
        }
        if !s3.access_key_id.is_empty() {
            b = b.with_access_key_id(&s3.access_key_id);
        }
        if !s3.secret_access_key.0.is_empty() {
            b = b.with_secret_access_key(&s3.secret_access_key.0);
        }
        let store = b
            .build()
            .map_err(|e| RegistryError::Blobs(format!("registry.blob_url ({url}): {e}")))?;
        let root = Key::parse(prefix)
            .map_err(|e| RegistryError::Blobs(format!("registry.blob_url ({url}): prefix: {e}")))?
            .join("sha256");
        let this = Self {
            store: Arc::new(store),
            root,
            part_bytes: s3.part_bytes,
            part_concurrency: s3.part_concurrency,
            rt,
        };
        let probe = this.rt.block_on(async {
            let mut listing = this.store.list(Some(&this.root));
            listing.next().await.transpose()
        });
        probe.map_err(|e| {
            RegistryError::Blobs(format!(
                "registry.blob_url ({url}): the object store does not answer: {e}"
            ))
        })?;
        Ok(this)
    }

    fn key(&self, sha256: &str) -> Result<Key> {
        check_sha256("sha256", sha256)?;
        Ok(self.root.clone().join(&sha256[..2]).join(sha256))
    }

    /// Sends a staged file as one content: one PUT when it fits in a part,
    /// a multipart upload otherwise (aborted on any error, so no parts are
    /// left to bill).
    async fn upload(&self, key: &Key, staged: &Path) -> Result<()> {
        let io = |e: std::io::Error| RegistryError::Blobs(format!("{}: {e}", staged.display()));
        let size = std::fs::metadata(staged).map_err(io)?.len();
        if size <= self.part_bytes as u64 {
            // This future runs under `block_on` on a blocking-pool thread,
            // so local file reads here never hold up the reactor.
            let bytes = std::fs::read(staged).map_err(io)?;
            self.store
                .put(key, PutPayload::from(bytes))
                .await
                .map_err(|e| s3_error("cannot store", key, e))?;
            return Ok(());
        }
        let upload = self
            .store
            .put_multipart(key)
            .await
            .map_err(|e| s3_error("cannot start a multipart upload of", key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_bytes);
        let sent = self.send_parts(&mut writer, staged).await;
        match sent {
            Ok(()) => writer
                .finish()
                .await
                .map(|_| ())
                .map_err(|e| s3_error("cannot complete the upload of", key, e)),
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    async fn send_parts(&self, writer: &mut WriteMultipart, staged: &Path) -> Result<()> {
        let io = |e: std::io::Error| RegistryError::Blobs(format!("{}: {e}", staged.display()));
        let mut file = File::open(staged).map_err(io)?;
        loop {
            writer
                .wait_for_capacity(self.part_concurrency)
                .await
                .map_err(|e| {
                    RegistryError::Blobs(format!("a part of {}: {e}", staged.display()))
                })?;
            let mut buf = vec![0u8; READ_BYTES];
            let n = file.read(&mut buf).map_err(io)?;
            if n == 0 {
                return Ok(());
            }
            buf.truncate(n);
            writer.put(Bytes::from(buf));
        }
    }
}

impl BlobStore for S3Blobs {
    fn put(&self, sha256: &str, staged: &Path) -> Result<()> {
        let key = self.key(sha256)?;
        if self.size(sha256)?.is_none() {
            self.rt.block_on(self.upload(&key, staged))?;
        }
        std::fs::remove_file(staged)
            .map_err(|e| RegistryError::Blobs(format!("cannot remove {}: {e}", staged.display())))
    }

    fn size(&self, sha256: &str) -> Result<Option<u64>> {
        let key = self.key(sha256)?;
        match self.rt.block_on(self.store.head(&key)) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(s3_error("cannot look up", &key, e)),
        }
    }

    fn read(&self, sha256: &str, offset: u64, len: u64) -> Result<Box<dyn Read + Send>> {
        let key = self.key(sha256)?;
        if len == 0 {
            // S3 answers an empty range with an error; nothing to fetch.
            return Ok(Box::new(std::io::empty()));
        }
        let options = GetOptions {
            range: Some(GetRange::Bounded(offset..offset + len)),
            ..GetOptions::default()
        };
        let got = self
            .rt
            .block_on(self.store.get_opts(&key, options))
            .map_err(|e| s3_error("cannot read", &key, e))?;
        Ok(Box::new(StreamReader {
            stream: got.into_stream(),
            current: Bytes::new(),
            rt: self.rt.clone(),
            key,
        }))
    }

    fn delete(&self, sha256: &str) -> Result<()> {
        let key = self.key(sha256)?;
        match self.rt.block_on(self.store.delete(&key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(s3_error("cannot delete", &key, e)),
        }
    }

    fn list(&self) -> Result<Vec<(String, SystemTime)>> {
        let metas: Vec<_> = self
            .rt
            .block_on(self.store.list(Some(&self.root)).try_collect())
            .map_err(|e| s3_error("cannot list", &self.root, e))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let name = m.location.filename()?.to_owned();
                check_sha256("", &name).ok()?;
                let secs = u64::try_from(m.last_modified.timestamp()).unwrap_or(0);
                Some((name, SystemTime::UNIX_EPOCH + Duration::from_secs(secs)))
            })
            .collect())
    }
}

/// A blocking `Read` over the body of a GET, pulled as the caller reads.
struct StreamReader {
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    current: Bytes,
    rt: Handle,
    key: Key,
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rt.block_on(self.stream.next()) {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => {
                    return Err(std::io::Error::other(format!("reading {}: {e}", self.key)));
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
