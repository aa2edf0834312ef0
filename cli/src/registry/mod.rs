//! `mlmesh registry …`: the model registry from a shell. Push a folder as a
//! new version (hashed locally, only missing bytes sent, resumable, with
//! progress), pull a version into a folder (every file verified against its
//! digest), list and show, move and roll back aliases, watch changes.

use std::{collections::HashMap, path::PathBuf};

mod backup;
pub mod conn;
pub mod gate;
pub(crate) mod transfer;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use mlmesh_proto::registry::v1 as pb;
use mlmesh_registry_client::{Client, Selector};

pub use self::conn::RegistryConn;
use self::{
    backup::{backup, restore},
    transfer::{pull, push},
};

#[derive(Args, Debug)]
pub struct RegistryCmd {
    #[command(flatten)]
    conn: RegistryConn,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a model.
    Create {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// key=value, repeatable.
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Push a folder as the model's next version.
    Push {
        model: String,
        dir: PathBuf,
        /// Resume this upload (printed when a push is interrupted).
        #[arg(long)]
        upload: Option<String>,
        #[arg(long, default_value = "")]
        task: String,
        #[arg(long, default_value = "")]
        framework: String,
        #[arg(long, default_value = "")]
        source_commit: String,
        /// Bytes per upload message.
        #[arg(long, default_value_t = 1 << 20)]
        chunk_bytes: usize,
    },
    /// Write a version (NUMBER or @ALIAS) into a folder, verifying every file.
    Pull {
        model: String,
        version: String,
        dir: PathBuf,
    },
    /// Models (or, with a model, its versions).
    List { model: Option<String> },
    /// One model, or one version (NUMBER or @ALIAS) with its files.
    Show {
        model: String,
        version: Option<String>,
    },
    /// Aliases: set (compare-and-set with --expect), history, rollback.
    #[command(subcommand)]
    Alias(AliasCmd),
    /// What an alias demands before it moves: set, list, remove.
    #[command(subcommand)]
    Policy(gate::PolicyCmd),
    /// Validation evidence of a model (or one version), newest first.
    Evidence { model: String, version: Option<i64> },
    /// Write a consistent snapshot of the running registry (metadata and
    /// contents) into an empty folder.
    Backup { dir: PathBuf },
    /// Fill an empty registry from a backup folder.
    Restore { dir: PathBuf },
    /// Print changes as they happen (from --from REVISION, or from now).
    Watch {
        #[arg(long, default_value_t = 0)]
        from: i64,
        #[arg(long)]
        model: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum AliasCmd {
    Set {
        model: String,
        alias: String,
        version: i64,
        /// The version the alias must point at now (0: must not exist).
        #[arg(long)]
        expect: Option<i64>,
        #[arg(long, default_value = "")]
        reason: String,
        /// Move even where the alias's policy refuses (admin scope; needs
        /// --reason, kept in the history).
        #[arg(long = "override")]
        override_policy: bool,
    },
    History {
        model: String,
        alias: Option<String>,
    },
    Rollback {
        model: String,
        alias: String,
        #[arg(long, default_value = "")]
        reason: String,
        /// As for `alias set`.
        #[arg(long = "override")]
        override_policy: bool,
    },
}

pub async fn run(cmd: RegistryCmd) -> anyhow::Result<()> {
    let mut c = cmd.conn.connect()?;
    match cmd.command {
        Cmd::Create {
            name,
            description,
            tags,
        } => {
            let tags = tags
                .iter()
                .map(|t| {
                    t.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .with_context(|| format!("--tag {t:?}: expected key=value"))
                })
                .collect::<anyhow::Result<HashMap<_, _>>>()?;
            let m = c
                .create_model(pb::CreateModelRequest {
                    name,
                    description,
                    tags,
                    metadata: None,
                })
                .await?
                .into_inner();
            println!("created model {}", m.name);
        }
        Cmd::Push {
            model,
            dir,
            upload,
            task,
            framework,
            source_commit,
            chunk_bytes,
        } => {
            let lineage = pb::Lineage {
                task,
                framework,
                source_commit,
                ..Default::default()
            };
            let v = push(&mut c, &model, &dir, upload, lineage.into(), chunk_bytes).await?;
            println!(
                "{model} version {} committed: {} files, {} bytes, manifest {}",
                v.version,
                v.files.len(),
                v.total_size,
                v.manifest_digest
            );
        }
        Cmd::Pull {
            model,
            version,
            dir,
        } => {
            let v = pull(&mut c, &model, &version, &dir).await?;
            println!(
                "{model} version {} written to {} ({} files verified)",
                v.version,
                dir.display(),
                v.files.len()
            );
        }
        Cmd::List { model: None } => {
            let mut token = String::new();
            loop {
                let page = c
                    .list_models(pb::ListModelsRequest {
                        page_token: token,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                for m in &page.models {
                    println!(
                        "{:<32} latest {:<4} aliases {:?}",
                        m.name, m.latest_version, m.aliases
                    );
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
        }
        Cmd::List { model: Some(model) } => {
            let vs = c
                .list_versions(pb::ListVersionsRequest {
                    model,
                    ..Default::default()
                })
                .await?
                .into_inner();
            for v in vs.versions {
                println!(
                    "{:<6} {:<10} {:>12} bytes  {}  {:?}",
                    v.version,
                    status_name(v.status),
                    v.total_size,
                    v.manifest_digest,
                    v.aliases
                );
            }
        }
        Cmd::Show {
            model,
            version: None,
        } => {
            let m = c.get_model(pb::GetModelRequest { name: model }).await?;
            println!("{:#?}", m.into_inner());
        }
        Cmd::Show {
            model,
            version: Some(v),
        } => {
            let v = c
                .get_version(pb::GetVersionRequest {
                    model,
                    selector: Some(Selector::from_arg(&v).map_err(anyhow::Error::msg)?.to_get()),
                })
                .await?
                .into_inner();
            println!(
                "version {} ({}), {} bytes, manifest {}, aliases {:?}",
                v.version,
                status_name(v.status),
                v.total_size,
                v.manifest_digest,
                v.aliases
            );
            for f in &v.files {
                println!("  {}  {:>12}  {}", f.sha256, f.size, f.path);
            }
            if let Some(l) = &v.lineage {
                let fields = [
                    ("source run", l.source_run.clone()),
                    ("source commit", l.source_commit.clone()),
                    ("dataset", l.dataset_digest.clone()),
                    ("framework", l.framework.clone()),
                    ("task", l.task.clone()),
                    (
                        "parent version",
                        if l.parent_version > 0 {
                            l.parent_version.to_string()
                        } else {
                            String::new()
                        },
                    ),
                ];
                let said: Vec<String> = fields
                    .iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect();
                if !said.is_empty() {
                    println!("lineage: {}", said.join("; "));
                }
            }
            if let Some(m) = v.metadata.clone() {
                let m = mlmesh_proto::json::struct_to_json("metadata", m)?;
                if !m.is_empty() {
                    println!("metadata: {}", serde_json::Value::Object(m));
                }
            }
            gate::print_evidence(&mut c, &v.model, v.version).await?;
        }
        Cmd::Alias(a) => alias(&mut c, a).await?,
        Cmd::Policy(p) => gate::policy(&mut c, p).await?,
        Cmd::Evidence { model, version } => {
            gate::print_evidence(&mut c, &model, version.unwrap_or(0)).await?;
        }
        Cmd::Backup { dir } => {
            let (models, blobs, bytes) = backup(&mut c, &dir).await?;
            println!(
                "backup written to {}: {models} models, {blobs} contents, {bytes} bytes",
                dir.display()
            );
        }
        Cmd::Restore { dir } => {
            let r = restore(&mut c, &dir).await?;
            println!(
                "restored {} models, {} versions, {} contents; revision {}",
                r.models, r.versions, r.blobs, r.revision
            );
        }
        Cmd::Watch { from, model } => {
            let mut s = c
                .watch(pb::WatchRequest {
                    start_revision: from,
                    filter: Some(pb::WatchFilter {
                        models: model,
                        ..Default::default()
                    }),
                })
                .await?
                .into_inner();
            while let Some(e) = s.message().await? {
                let kind = pb::EventKind::try_from(e.kind).map_or("?", |k| k.as_str_name());
                println!(
                    "{:>8} {kind:<22} {} v{} {}{}",
                    e.revision,
                    e.model,
                    e.version,
                    e.alias,
                    if e.kind == pb::EventKind::AliasMoved as i32 {
                        format!(" (from v{})", e.from_version)
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
    Ok(())
}

async fn alias(c: &mut Client, cmd: AliasCmd) -> anyhow::Result<()> {
    match cmd {
        AliasCmd::Set {
            model,
            alias,
            version,
            expect,
            reason,
            override_policy,
        } => {
            let r = c
                .set_aliases(pb::SetAliasesRequest {
                    model,
                    aliases: vec![pb::AliasTarget {
                        alias,
                        version,
                        expected_version: expect,
                    }],
                    reason,
                    override_policy,
                })
                .await?
                .into_inner();
            for m in r.moves {
                println!("{}", gate::describe_move(&m));
            }
        }
        AliasCmd::History { model, alias } => {
            let h = c
                .alias_history(pb::AliasHistoryRequest {
                    model,
                    alias: alias.unwrap_or_default(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            for m in h.moves {
                let at = m.moved_at.map_or(0, |t| t.seconds);
                println!(
                    "{:>8}  {at}  {:<16} v{} -> v{}  {}{}",
                    m.revision,
                    m.alias,
                    m.from_version,
                    m.to_version,
                    gate::admitted_by(&m),
                    m.reason
                );
            }
        }
        AliasCmd::Rollback {
            model,
            alias,
            reason,
            override_policy,
        } => {
            let m = c
                .rollback_alias(pb::RollbackAliasRequest {
                    model,
                    alias,
                    expected_version: None,
                    reason,
                    override_policy,
                })
                .await?
                .into_inner();
            println!("{}", gate::describe_move(&m));
        }
    }
    Ok(())
}

fn status_name(s: i32) -> &'static str {
    pb::VersionStatus::try_from(s).map_or("?", |s| s.as_str_name())
}
