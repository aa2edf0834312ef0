//! Where a validation suite comes from: a JSON file, or a registry version
//! holding `suite.json` (`registry://<model>@<alias|version>`), so one
//! suite is stored once and reused by every version it validates. Either
//! way its identity is the SHA-256 of the document's bytes: the same
//! suite, the same digest, wherever it is kept (alias policies name it).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use mlmesh_proto::registry::v1 as pb;
use sha2::Digest as _;

/// The suite's bytes and their SHA-256 (lower-case hex); `dir` holds a
/// pulled registry suite.
pub async fn fetch(
    reg: &mut mlmesh_registry_client::Client,
    suite: &str,
    dir: &Path,
) -> anyhow::Result<(Vec<u8>, String)> {
    let bytes = if suite.starts_with("registry://") {
        let source = mlmesh_registry_client::Source::parse(suite).map_err(anyhow::Error::msg)?;
        let version = reg
            .get_version(pb::GetVersionRequest {
                model: source.model.clone(),
                selector: Some(source.selector.to_get()),
            })
            .await
            .with_context(|| format!("the suite {suite}"))?
            .into_inner();
        if !version.files.iter().any(|f| f.path == "suite.json") {
            bail!(
                "the suite {suite} (v{}) holds no suite.json",
                version.version
            );
        }
        mlmesh_registry_client::pull(reg, &version, dir, |p| Ok(PathBuf::from(p)), |_| {})
            .await
            .with_context(|| format!("pulling the suite {suite}"))?;
        read_bounded(&dir.join("suite.json"))?
    } else {
        read_bounded(Path::new(suite))?
    };
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
    Ok((bytes, digest))
}

/// A suite file, refused past the largest suite before it is read.
fn read_bounded(path: &Path) -> anyhow::Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len > mlmesh_validate::suite::MAX_SUITE_BYTES as u64 {
        bail!(
            "{}: {len} bytes; a suite is at most {}",
            path.display(),
            mlmesh_validate::suite::MAX_SUITE_BYTES
        );
    }
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}
