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

use mlmesh_proto::registry::v1 as reg;
use prost_types::Timestamp;
use serde_json::{Map, Value as Json, json};

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
/// Longest reason accepted for a move.
const MAX_REASON: usize = 1024;
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

/// Point `alias` at `version` if it points at `expected_version` now.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveAlias {
    pub version: i64,
    /// Compare-and-set, required: the version the caller saw (0: the
    /// alias did not exist).
    pub expected_version: i64,
    #[serde(default)]
    pub reason: String,
    /// Pass over the alias's policy (admin scope, and a reason).
    #[serde(default, rename = "override")]
    pub override_policy: bool,
}

/// Point `alias` back at the version it named before.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    pub expected_version: i64,
    #[serde(default)]
    pub reason: String,
    #[serde(default, rename = "override")]
    pub override_policy: bool,
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

/// `: reason` for an audit detail, or nothing.
fn said(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

fn ms(t: Option<&Timestamp>) -> Option<i64> {
    t.map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

fn structure(s: Option<reg::Version>) -> Json {
    s.map_or(Json::Null, |v| version_json(&v))
}

fn meta(s: Option<&prost_types::Struct>) -> Json {
    s.and_then(|s| mlmesh_proto::json::struct_to_json("metadata", s.clone()).ok())
        .map_or(Json::Object(Map::new()), Json::Object)
}

fn model_json(m: &reg::Model) -> Json {
    json!({
        "name": m.name,
        "description": m.description,
        "tags": m.tags,
        "metadata": meta(m.metadata.as_ref()),
        "aliases": m.aliases,
        "latest_version": m.latest_version,
        "created_at_ms": ms(m.created_at.as_ref()),
        "updated_at_ms": ms(m.updated_at.as_ref()),
    })
}

fn version_json(v: &reg::Version) -> Json {
    let lineage = v.lineage.as_ref().map(|l| {
        json!({
            "source_run": l.source_run, "source_commit": l.source_commit,
            "dataset_digest": l.dataset_digest, "parent_version": l.parent_version,
            "framework": l.framework, "task": l.task,
        })
    });
    json!({
        "model": v.model,
        "version": v.version,
        "status": match reg::VersionStatus::try_from(v.status) {
            Ok(reg::VersionStatus::Ready) => "ready",
            Ok(reg::VersionStatus::Deprecated) => "deprecated",
            _ => "unknown",
        },
        "files": v.files.iter().map(|f| json!({"path": f.path, "size": f.size, "sha256": f.sha256})).collect::<Vec<_>>(),
        "manifest_digest": v.manifest_digest,
        "total_size": v.total_size,
        "metadata": meta(v.metadata.as_ref()),
        "lineage": lineage,
        "created_at_ms": ms(v.created_at.as_ref()),
        "aliases": v.aliases,
    })
}

fn move_json(m: &reg::AliasMove) -> Json {
    json!({
        "alias": m.alias,
        "from_version": m.from_version,
        "to_version": m.to_version,
        "revision": m.revision,
        "moved_at_ms": ms(m.moved_at.as_ref()),
        "reason": m.reason,
        "evidence_id": m.evidence_id,
        "overridden": m.overridden,
    })
}

fn finite(v: f64) -> Json {
    if v.is_finite() { json!(v) } else { Json::Null }
}

fn evidence_json(e: &reg::Evidence) -> Json {
    let checks: Vec<Json> = e
        .checks
        .iter()
        .map(|c| {
            let mut figures: Vec<(&String, &f64)> = c.figures.iter().collect();
            figures.sort_by(|a, b| a.0.cmp(b.0));
            let ni = c.non_inferiority.as_ref().map(|n| {
                json!({
                    "metric": n.metric, "against_version": n.against_version,
                    "difference": finite(n.difference), "lower": finite(n.lower),
                    "upper": finite(n.upper), "confidence": finite(n.confidence),
                    "margin": finite(n.margin), "samples": n.samples,
                })
            });
            json!({
                "name": c.name,
                "passed": c.passed,
                "detail": c.detail,
                "figures": figures.into_iter().map(|(k, v)| (k.clone(), finite(*v))).collect::<Map<_, _>>(),
                "non_inferiority": ni,
            })
        })
        .collect();
    json!({
        "id": e.id,
        "version": e.version,
        "kind": if e.kind.is_empty() { "validation" } else { e.kind.as_str() },
        "passed": e.passed,
        "suite_digest": e.suite_digest,
        "suite_source": e.suite_source,
        "against_version": e.against_version,
        "recorded_at_ms": ms(e.recorded_at.as_ref()),
        "duration_ms": e.duration_ms,
        "runner": e.runner.as_ref().map(|r| json!({"cpu": r.cpu, "cores": r.cores, "os": r.os, "onnxruntime": r.onnxruntime, "mlmesh": r.mlmesh})),
        "checks": checks,
    })
}

fn policy_json(p: &reg::AliasPolicy) -> Json {
    json!({
        "alias": p.alias,
        "suite_digest": p.suite_digest,
        "suite_source": p.suite_source,
        "margin": p.margin,
        "max_age_secs": p.max_age_secs,
    })
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

    /// The reason the registry keeps: the caller's, stamped with who.
    fn stamped(reason: &str) -> Result<String> {
        bounded("reason", reason, MAX_REASON)?;
        let who = super::audit::who();
        Ok(if reason.trim().is_empty() {
            format!("by {who} via the gateway")
        } else {
            format!("{} (by {who} via the gateway)", reason.trim())
        })
    }

    /// Sends an alias move with the registry token and audits how it ended.
    #[allow(clippy::too_many_arguments)]
    async fn forward_move<Req: Clone, Resp>(
        &self,
        pool: &Pool,
        rpc: &rpc::Rpc<Req, Resp>,
        request: Req,
        deadline: Deadline,
        action: &'static str,
        model: &str,
        alias: &str,
        detail: String,
    ) -> Result<Resp> {
        let r = pool
            .unary_as(rpc, deadline, request, self.registry_token.as_ref())
            .await
            .map_err(GatewayError::from);
        self.audit
            .outcome(action, format!("{model}/{alias}"), detail, &r);
        r
    }

    fn check_override(override_policy: bool, reason: &str) -> Result<()> {
        if !override_policy {
            return Ok(());
        }
        if reason.trim().is_empty() {
            return Err(GatewayError::invalid(
                "reason",
                "an override needs a reason (it is kept in the alias history)",
            ));
        }
        match crate::auth::current_caller() {
            Some(c) if !c.scopes.contains(&crate::auth::Scope::Admin) => Err(GatewayError::Auth(
                crate::auth::AuthError::PermissionDenied {
                    caller: c.name.clone(),
                    label: c.label.clone(),
                    scope: "admin",
                    has: c
                        .scopes
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                },
            )),
            _ => Ok(()),
        }
    }

    /// Points `alias` at `m.version` if it points at `m.expected_version`
    /// now and the alias's policy admits it.
    pub async fn move_alias(
        &self,
        model: &str,
        alias: &str,
        m: MoveAlias,
        deadline: Deadline,
    ) -> Result<Json> {
        let pool = self.registry_pool()?;
        name("model", model)?;
        name("alias", alias)?;
        if m.version < 1 || m.expected_version < 0 {
            return Err(GatewayError::invalid(
                "version",
                "version must be 1 or more and expected_version 0 or more",
            ));
        }
        Self::check_override(m.override_policy, &m.reason)?;
        let request = reg::SetAliasesRequest {
            model: model.to_owned(),
            aliases: vec![reg::AliasTarget {
                alias: alias.to_owned(),
                version: m.version,
                expected_version: Some(m.expected_version),
            }],
            reason: Self::stamped(&m.reason)?,
            override_policy: m.override_policy,
        };
        let detail = format!(
            "v{} → v{}{}{}",
            m.expected_version,
            m.version,
            if m.override_policy { " (override)" } else { "" },
            said(&m.reason)
        );
        let r = self
            .forward_move(
                pool,
                &rpc::SET_ALIASES,
                request,
                deadline,
                "alias.move",
                model,
                alias,
                detail,
            )
            .await?;
        Ok(json!({
            "moves": r.moves.iter().map(move_json).collect::<Vec<_>>(),
            "revision": r.revision,
        }))
    }

    /// Points `alias` back at the version it named before this one.
    pub async fn rollback_alias(
        &self,
        model: &str,
        alias: &str,
        b: Rollback,
        deadline: Deadline,
    ) -> Result<Json> {
        let pool = self.registry_pool()?;
        name("model", model)?;
        name("alias", alias)?;
        if b.expected_version < 1 {
            return Err(GatewayError::invalid(
                "expected_version",
                "the version the alias points at now (1 or more)",
            ));
        }
        Self::check_override(b.override_policy, &b.reason)?;
        let request = reg::RollbackAliasRequest {
            model: model.to_owned(),
            alias: alias.to_owned(),
            expected_version: Some(b.expected_version),
            reason: Self::stamped(&b.reason)?,
            override_policy: b.override_policy,
        };
        let detail = format!("from v{}{}", b.expected_version, said(&b.reason));
        let r = self
            .forward_move(
                pool,
                &rpc::ROLLBACK_ALIAS,
                request,
                deadline,
                "alias.rollback",
                model,
                alias,
                detail,
            )
            .await?;
        Ok(move_json(&r))
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
        assert!(Core::stamped(&"r".repeat(MAX_REASON + 1)).is_err());
        assert_eq!(
            Core::stamped(" because ").expect("ok"),
            "because (by anonymous via the gateway)"
        );
        assert!(Core::check_override(true, " ").is_err());
    }
}
