//! The model registry as the gateway's callers see it (the console's Models
//! page, or any HTTP client): models, versions with manifest and lineage,
//! evidence, aliases with their history — and alias moves, which always
//! go through the registry's compare-and-set and its validation gate.
//!
//! Paging is the registry's (server-side, by token): the gateway bounds the
//! page size and maps messages to JSON, nothing more, so 10,000 versions
//! cost what one page costs. A move is made with the registry token of
//! `downstream.registry_token_file` once the caller's own scope was
//! checked, and is stamped with the caller's name in the reason the
//! registry keeps.

mod json;
mod moves;

use mlmesh_proto::registry::v1 as reg;
use serde_json::{Value as Json, json};

pub use moves::{MoveAlias, Rollback};

use self::json::{evidence_json, model_json, move_json, policy_json, structure, version_json};
use super::{Core, Result};
use crate::{
    downstream::{Deadline, Pool, rpc},
    error::GatewayError,
};

/// The largest page the gateway asks the registry for.
pub const MAX_PAGE: u32 = 200;
/// Longest name, alias, prefix or filter value accepted.
const MAX_NAME: usize = 256;
/// Longest page token accepted (the registry's are short).
const MAX_TOKEN: usize = 512;
/// Evidence records shown with a model (newest).
const MODEL_EVIDENCE: u32 = 500;

/// A list query: a page of `page_size` after `page_token`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    #[serde(default)]
    pub page_size: Option<u32>,
    #[serde(default)]
    pub page_token: Option<String>,
}

/// The models query: a page, a name prefix, a task, one tag.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelQuery {
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub task: Option<String>,
    /// `key=value`.
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub page_size: Option<u32>,
    #[serde(default)]
    pub page_token: Option<String>,
}
fn bounded(field: &str, v: &str, max: usize) -> Result<()> {
    if v.len() > max {
        return Err(GatewayError::invalid(
            field,
            format!("{} bytes; at most {max}", v.len()),
        ));
    }
    Ok(())
}

fn name(field: &str, v: &str) -> Result<()> {
    if v.is_empty() {
        return Err(GatewayError::invalid(field, "must not be empty"));
    }
    bounded(field, v, MAX_NAME)
}

fn page(size: Option<u32>, token: Option<&str>) -> Result<(u32, String)> {
    let size = size.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&size) {
        return Err(GatewayError::invalid(
            "page_size",
            format!("{size} is not between 1 and {MAX_PAGE}"),
        ));
    }
    let token = token.unwrap_or("");
    bounded("page_token", token, MAX_TOKEN)?;
    Ok((size, token.to_owned()))
}

impl Core {
    /// The registry pool, or UNIMPLEMENTED naming the setting.
    fn registry_pool(&self) -> Result<&Pool> {
        if self.settings.downstream.registry.is_empty() {
            return Err(GatewayError::NotConfigured {
                service: "registry",
                key: "downstream.registry",
            });
        }
        Ok(&self.registry)
    }

    /// A page of models (prefix, task and tag filters).
    pub async fn registry_models(&self, q: ModelQuery, deadline: Deadline) -> Result<Json> {
        let pool = self.registry_pool()?;
        let (page_size, page_token) = page(q.page_size, q.page_token.as_deref())?;
        let prefix = q.prefix.unwrap_or_default();
        let task = q.task.unwrap_or_default();
        bounded("prefix", &prefix, MAX_NAME)?;
        bounded("task", &task, MAX_NAME)?;
        let mut tags = std::collections::HashMap::new();
        if let Some(t) = q.tag.filter(|t| !t.is_empty()) {
            bounded("tag", &t, MAX_NAME)?;
            let (k, v) = t
                .split_once('=')
                .ok_or_else(|| GatewayError::invalid("tag", "is not key=value"))?;
            tags.insert(k.to_owned(), v.to_owned());
        }
        let r = pool
            .unary(
                &rpc::LIST_MODELS,
                deadline,
                reg::ListModelsRequest {
                    name_prefix: prefix,
                    tags,
                    metadata: Default::default(),
                    task,
                    page_size,
                    page_token,
                },
            )
            .await?;
        Ok(json!({
            "models": r.models.iter().map(model_json).collect::<Vec<_>>(),
            "next_page_token": r.next_page_token,
            "revision": r.revision,
        }))
    }

    /// One model: itself, its aliases' policies, its newest alias moves,
    /// the first page of its versions and its evidence records (newest
    /// first) — the Models page in one call.
    pub async fn registry_model(&self, model: &str, q: Page, deadline: Deadline) -> Result<Json> {
        let pool = self.registry_pool()?;
        name("model", model)?;
        let (page_size, page_token) = page(q.page_size, q.page_token.as_deref())?;
        let m = model.to_owned();
        let (got, policies, versions, history, evidence) = futures::try_join!(
            pool.unary(
                &rpc::GET_MODEL,
                deadline,
                reg::GetModelRequest { name: m.clone() }
            ),
            pool.unary(
                &rpc::LIST_ALIAS_POLICIES,
                deadline,
                reg::ListAliasPoliciesRequest { model: m.clone() }
            ),
            pool.unary(
                &rpc::LIST_VERSIONS,
                deadline,
                reg::ListVersionsRequest {
                    model: m.clone(),
                    page_size,
                    page_token,
                    ..Default::default()
                }
            ),
            pool.unary(
                &rpc::ALIAS_HISTORY,
                deadline,
                reg::AliasHistoryRequest {
                    model: m.clone(),
                    alias: String::new(),
                    page_size: 50,
                    page_token: String::new(),
                }
            ),
            pool.unary(
                &rpc::LIST_EVIDENCE,
                deadline,
                reg::ListEvidenceRequest {
                    model: m.clone(),
                    version: 0,
                    page_size: MODEL_EVIDENCE,
                    page_token: String::new(),
                }
            ),
        )?;
        Ok(json!({
            "model": model_json(&got),
            "policies": policies.policies.iter().map(policy_json).collect::<Vec<_>>(),
            "versions": versions.versions.iter().map(version_json).collect::<Vec<_>>(),
            "next_page_token": versions.next_page_token,
            "history": history.moves.iter().map(move_json).collect::<Vec<_>>(),
            "more_history": !history.next_page_token.is_empty(),
            "evidence": evidence.evidence.iter().map(evidence_json).collect::<Vec<_>>(),
        }))
    }

    /// One version with every evidence record of it.
    pub async fn registry_version(
        &self,
        model: &str,
        version: i64,
        deadline: Deadline,
    ) -> Result<Json> {
        let pool = self.registry_pool()?;
        name("model", model)?;
        if version < 1 {
            return Err(GatewayError::invalid("version", "must be 1 or more"));
        }
        let (v, evidence) = futures::try_join!(
            pool.unary(
                &rpc::GET_VERSION,
                deadline,
                reg::GetVersionRequest {
                    model: model.to_owned(),
                    selector: Some(reg::get_version_request::Selector::Version(version)),
                }
            ),
            pool.unary(
                &rpc::LIST_EVIDENCE,
                deadline,
                reg::ListEvidenceRequest {
                    model: model.to_owned(),
                    version,
                    page_size: 1000,
                    page_token: String::new(),
                }
            ),
        )?;
        Ok(json!({
            "version": structure(Some(v)),
            "evidence": evidence.evidence.iter().map(evidence_json).collect::<Vec<_>>(),
        }))
    }

    /// A page of one alias's moves (every alias of the model when empty).
    pub async fn registry_alias_history(
        &self,
        model: &str,
        alias: &str,
        q: Page,
        deadline: Deadline,
    ) -> Result<Json> {
        let pool = self.registry_pool()?;
        name("model", model)?;
        bounded("alias", alias, MAX_NAME)?;
        let (page_size, page_token) = page(q.page_size, q.page_token.as_deref())?;
        let r = pool
            .unary(
                &rpc::ALIAS_HISTORY,
                deadline,
                reg::AliasHistoryRequest {
                    model: model.to_owned(),
                    alias: alias.to_owned(),
                    page_size,
                    page_token,
                },
            )
            .await?;
        Ok(json!({
            "moves": r.moves.iter().map(move_json).collect::<Vec<_>>(),
            "next_page_token": r.next_page_token,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_bounded_before_the_registry_is_asked() {
        assert_eq!(page(None, None).expect("default").0, 50);
        let e = page(Some(0), None).expect_err("zero");
        assert_eq!(e.field(), Some("page_size"));
        let e = page(Some(MAX_PAGE + 1), None).expect_err("big");
        assert!(e.to_string().contains("between 1 and 200"), "{e}");
        let long = "x".repeat(MAX_TOKEN + 1);
        assert_eq!(
            page(Some(5), Some(&long)).expect_err("token").field(),
            Some("page_token")
        );
        assert_eq!(name("alias", "").expect_err("empty").field(), Some("alias"));
    }
}
