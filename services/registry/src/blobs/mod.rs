//! The blob store: file contents by SHA-256, each stored once whichever
//! versions hold it. Calls block (run them off the reactor); [`local`] is
//! the embedded implementation (a folder), [`s3`] the shared one (an
//! S3-compatible object store).

pub mod local;
pub mod s3;

use std::{io::Read, path::Path, time::SystemTime};

use crate::error::Result;

pub trait BlobStore: Send + Sync + 'static {
    /// Moves the verified file at `staged` in as the content `sha256`; when
    /// the content is already stored the staged file is just removed.
    /// Returns once the content is durable.
    fn put(&self, sha256: &str, staged: &Path) -> Result<()>;
    /// The stored size of `sha256`, None when it is not stored.
    fn size(&self, sha256: &str) -> Result<Option<u64>>;
    /// `len` bytes of `sha256` from `offset`.
    fn read(&self, sha256: &str, offset: u64, len: u64) -> Result<Box<dyn Read + Send>>;
    /// Removes a content; a missing one is not an error.
    fn delete(&self, sha256: &str) -> Result<()>;
    /// Every stored content with the time it was stored (to find contents a
    /// crash left behind without metadata).
    fn list(&self) -> Result<Vec<(String, SystemTime)>>;
}
