//! `mlmesh model promote <model> <version> --to <alias>`: an alias move
//! through its policy. The move is tried first (fresh evidence may already
//! be recorded); when the registry refuses for want of evidence, the
//! policy's suite is run against the version (compared with the alias's
//! current version when the policy has a margin), the outcome is recorded
//! as evidence whatever it is, and the move is tried again with
//! compare-and-set from the version read at the start — so a concurrent
//! promotion makes this one fail rather than overwrite it.

use anyhow::{Context as _, bail};
use clap::Args;
use mlmesh_proto::registry::v1 as pb;
use mlmesh_registry_client::Selector;
use tonic::Code;

use super::validate;
use crate::registry::gate::describe_move;

#[derive(Args, Debug)]
pub struct Promote {
    /// The registered model.
    model: String,
    /// The version to promote: a number or @alias.
    version: String,
    /// The alias to move.
    #[arg(long)]
    to: String,
    /// Kept in the alias history.
    #[arg(long, default_value = "mlmesh model promote")]
    reason: String,
    /// Validate even when the registry would accept recorded evidence.
    #[arg(long)]
    revalidate: bool,
    #[command(flatten)]
    conn: crate::registry::RegistryConn,
}

pub async fn promote(p: Promote) -> anyhow::Result<()> {
    let mut reg = p.conn.connect()?;
    let selector = Selector::from_arg(&p.version).map_err(anyhow::Error::msg)?;
    let version = reg
        .get_version(pb::GetVersionRequest {
            model: p.model.clone(),
            selector: Some(selector.to_get()),
        })
        .await
        .with_context(|| format!("{} {}", p.model, p.version))?
        .into_inner();
    let model = reg
        .get_model(pb::GetModelRequest {
            name: p.model.clone(),
        })
        .await?
        .into_inner();
    let current = model.aliases.get(&p.to).copied().unwrap_or(0);
    if current == version.version {
        println!("{} {} already points at v{current}", p.model, p.to);
        return Ok(());
    }
    let policy = reg
        .list_alias_policies(pb::ListAliasPoliciesRequest {
            model: p.model.clone(),
        })
        .await?
        .into_inner()
        .policies
        .into_iter()
        .find(|x| x.alias == p.to);
    let move_alias = {
        let (model, alias, reason) = (p.model.clone(), p.to.clone(), p.reason.clone());
        let v = version.version;
        let reg = reg.clone();
        move || {
            let req = pb::SetAliasesRequest {
                model: model.clone(),
                aliases: vec![pb::AliasTarget {
                    alias: alias.clone(),
                    version: v,
                    expected_version: Some(current),
                }],
                reason: reason.clone(),
                override_policy: false,
            };
            let mut reg = reg.clone();
            async move { reg.set_aliases(req).await.map(|r| r.into_inner()) }
        }
    };
    if !p.revalidate || policy.is_none() {
        match move_alias().await {
            Ok(r) => {
                for m in &r.moves {
                    println!("{}", describe_move(m));
                }
                return Ok(());
            }
            Err(s) if s.code() == Code::FailedPrecondition && policy.is_some() => {
                println!("the registry asks for evidence: {}", s.message());
            }
            Err(s) => return Err(s).with_context(|| format!("moving {} {}", p.model, p.to)),
        }
    }
    let Some(policy) = policy else {
        bail!("{} {} has no policy", p.model, p.to)
    };
    if policy.suite_source.is_empty() {
        bail!(
            "the policy of {} {} names no suite source: run `mlmesh model validate … --record` with its suite ({})",
            p.model,
            p.to,
            policy.suite_digest
        );
    }
    let against = (policy.margin.is_some() && current != 0).then(|| current.to_string());
    let out = validate::run(
        &mut reg,
        &p.model,
        &version.version.to_string(),
        &policy.suite_source,
        against.as_deref(),
    )
    .await?;
    if out.evidence.suite_digest != policy.suite_digest {
        bail!(
            "the suite at {} is {}, but the policy of {} {} requires {}: the suite changed since the policy was set",
            policy.suite_source,
            out.evidence.suite_digest,
            p.model,
            p.to,
            policy.suite_digest
        );
    }
    let e = mlmesh_validator::record(&mut reg, out.evidence.clone()).await?;
    println!("recorded as evidence {}", e.id);
    validate::verdict(&out.results)?;
    let r = move_alias()
        .await
        .with_context(|| format!("moving {} {} after validation", p.model, p.to))?;
    for m in &r.moves {
        println!("{}", describe_move(m));
    }
    Ok(())
}
