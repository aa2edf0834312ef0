//! Alias moves and rollbacks through the gateway: always compare-and-set,
//! always through the registry's validation gate (an override needs the
//! admin scope and a reason), sent with the registry token once the
//! caller's own scope was checked, stamped with the caller in the reason
//! the registry keeps, and audited however they end.

use mlmesh_proto::registry::v1 as reg;
use serde_json::{Value as Json, json};

use super::{bounded, json::move_json, name};
use crate::{
    core::{Core, Result},
    downstream::{Deadline, Pool, rpc},
    error::GatewayError,
};

/// Longest reason accepted for a move.
pub(super) const MAX_REASON: usize = 1024;

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
/// `: reason` for an audit detail, or nothing.
fn said(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

impl Core {
    /// The reason the registry keeps: the caller's, stamped with who.
    fn stamped(reason: &str) -> Result<String> {
        bounded("reason", reason, MAX_REASON)?;
        let who = crate::core::audit::who();
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
    fn reasons_are_bounded_and_stamped_with_the_caller() {
        assert!(Core::stamped(&"r".repeat(MAX_REASON + 1)).is_err());
        assert_eq!(
            Core::stamped(" because ").expect("ok"),
            "because (by anonymous via the gateway)"
        );
        assert!(Core::check_override(true, " ").is_err());
    }
}
