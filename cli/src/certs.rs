//! `mlmesh certs`: a private CA and one certificate per holder, for a mesh
//! with mutual TLS on one machine or in a test cluster without
//! cert-manager. Writes `ca.crt` and `<holder>.crt`/`<holder>.key`
//! (keys owner-only); each certificate is valid as a server's and a
//! client's. A production cluster issues its certificates from its own PKI
//! (the chart's `tls.certManager`).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use mlmesh_runtime::tls::pki::Ca;

#[derive(Args, Debug)]
pub struct Certs {
    /// Folder to write into (created if missing; existing files of the
    /// same names are replaced).
    #[arg(long, default_value = ".cache/mlmesh/certs")]
    out: PathBuf,
    /// Holders, each `name=dns-or-ip[,dns-or-ip…]`: `registry=127.0.0.1,localhost`
    /// writes registry.crt/.key naming both. The first name is the one
    /// `server.tls.admin_identities` lists.
    #[arg(required = true, value_name = "HOLDER=NAMES")]
    holders: Vec<String>,
}

pub fn certs(c: Certs) -> anyhow::Result<()> {
    let mut parsed = Vec::new();
    for h in &c.holders {
        let (holder, names) = h
            .split_once('=')
            .with_context(|| format!("{h:?}: expected holder=name[,name…]"))?;
        let ok = !holder.is_empty()
            && holder
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_'));
        anyhow::ensure!(ok, "{h:?}: a holder is a file stem of A-Z a-z 0-9 - _");
        let names: Vec<&str> = names
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        anyhow::ensure!(!names.is_empty(), "{h:?}: no names");
        parsed.push((holder, names));
    }
    std::fs::create_dir_all(&c.out).with_context(|| format!("creating {}", c.out.display()))?;
    let ca = Ca::new("mlmesh mesh CA")?;
    std::fs::write(c.out.join("ca.crt"), ca.pem())?;
    println!("{}", c.out.join("ca.crt").display());
    for (holder, names) in parsed {
        let (cert, key) = ca.issue(&names)?.write(&c.out, holder)?;
        println!(
            "{} {} ({})",
            cert.display(),
            key.display(),
            names.join(", ")
        );
    }
    Ok(())
}
