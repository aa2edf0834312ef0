//! `mlmesh model shadow <model> <version> --gateway URL --rule MODEL`: a
//! gateway's shadow report (`GET /v1/shadow`) for one rule, judged and
//! printed, and with `--record` stored in the registry as evidence of the
//! version the shadow served (kind `shadow`). The "suite" of such evidence
//! is the rule itself: its digest is the SHA-256 of the rule's canonical
//! JSON (models, comparison, tolerances), so evidence of another rule
//! never counts for this one.

use anyhow::{Context as _, bail};
use clap::Args;
use mlmesh_proto::registry::v1 as pb;
use mlmesh_registry_client::Selector;
use serde_json::{Value, json};
use sha2::Digest as _;

#[derive(Args, Debug)]
pub struct Shadow {
    /// The registered model whose version the shadow served.
    model: String,
    /// That version: a number or @alias.
    version: String,
    /// The gateway's HTTP address (e.g. http://127.0.0.1:8080).
    #[arg(long)]
    gateway: String,
    /// The rule's primary model (its `model` in `[[shadow.rules]]`).
    #[arg(long)]
    rule: String,
    /// An API key or JWT with the gateway's admin scope, when it
    /// authenticates.
    #[arg(long, env = "MLMESH_API_KEY")]
    api_key: Option<String>,
    /// The agreement the shadow must reach: the 95% interval's lower bound
    /// must be at least this.
    #[arg(long, default_value_t = 0.95)]
    min_agreement: f64,
    /// Fewest compared calls for a verdict.
    #[arg(long, default_value_t = 100)]
    min_calls: u64,
    /// Most shadow p99 latency as a multiple of the primary's.
    #[arg(long, default_value_t = 2.0)]
    max_latency_ratio: f64,
    /// Store the outcome as evidence of the version.
    #[arg(long)]
    record: bool,
    #[command(flatten)]
    conn: crate::registry::RegistryConn,
}

/// A figure of the report, as a finite number (absent: 0).
fn num(v: &Value) -> f64 {
    v.as_f64().filter(|x| x.is_finite()).unwrap_or(0.0)
}

pub async fn shadow(s: Shadow) -> anyhow::Result<()> {
    let url = format!("{}/v1/shadow", s.gateway.trim_end_matches('/'));
    mlmesh_runtime::tls::install_default_provider();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .context("an HTTP client")?;
    let mut rq = client.get(&url);
    if let Some(k) = &s.api_key {
        rq = rq.bearer_auth(k);
    }
    let resp = rq.send().await.with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let body = resp.text().await.with_context(|| format!("GET {url}"))?;
    if !status.is_success() {
        bail!("GET {url}: {status}: {body}");
    }
    let report: Value = serde_json::from_str(&body).with_context(|| format!("GET {url}"))?;
    let Some(rule) = report["rules"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["model"] == s.rule.as_str()))
    else {
        bail!(
            "the gateway at {} has no shadow rule for model {:?}",
            s.gateway,
            s.rule
        );
    };
    let (agree, disagree, errors, skipped) = (
        num(&rule["agree"]),
        num(&rule["disagree"]),
        num(&rule["errors"]),
        num(&rule["skipped"]),
    );
    let compared = agree + disagree;
    let (low, high) = (
        num(&rule["agreement_interval"]["low"]),
        num(&rule["agreement_interval"]["high"]),
    );
    let rate = if compared > 0.0 {
        agree / compared
    } else {
        0.0
    };
    let enough = compared >= s.min_calls as f64;
    let mut checks = Vec::new();
    let mut check = |name: &str, passed: bool, detail: String, figures: Vec<(&str, f64)>| {
        println!("{} {name}: {detail}", if passed { "PASS" } else { "FAIL" });
        checks.push(pb::Check {
            name: name.into(),
            passed,
            detail,
            figures: figures
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            non_inferiority: None,
        });
    };
    check(
        "shadow agreement",
        enough && low >= s.min_agreement,
        format!(
            "{rate:.4} of {compared} compared calls agree ({:?} by {}), 95% interval [{low:.4}, {high:.4}]; at least {} required of its lower bound{}",
            rule["compare"].as_str().unwrap_or("?"),
            rule["shadow_model"].as_str().unwrap_or("?"),
            s.min_agreement,
            if enough {
                String::new()
            } else {
                format!("; fewer than {} calls compared", s.min_calls)
            }
        ),
        vec![
            ("agree", agree),
            ("disagree", disagree),
            ("agreement", rate),
            ("low", low),
            ("high", high),
            ("drift_p50", num(&rule["drift"]["p50"])),
            ("drift_p99", num(&rule["drift"]["p99"])),
            ("drift_max", num(&rule["drift"]["max"])),
        ],
    );
    check(
        "shadow errors",
        errors == 0.0,
        format!("{errors} shadow calls failed, {skipped} skipped (no free slot)"),
        vec![("errors", errors), ("skipped", skipped)],
    );
    let (shadow_p99, primary_p99) = (
        num(&rule["shadow_ms"]["p99"]),
        num(&rule["primary_ms"]["p99"]),
    );
    let ratio = shadow_p99 / primary_p99.max(1e-9);
    check(
        "shadow latency",
        ratio <= s.max_latency_ratio,
        format!(
            "shadow p99 {shadow_p99:.2} ms, primary p99 {primary_p99:.2} ms (ratio {ratio:.2}; at most {})",
            s.max_latency_ratio
        ),
        vec![
            ("shadow_p50_ms", num(&rule["shadow_ms"]["p50"])),
            ("shadow_p99_ms", shadow_p99),
            ("primary_p50_ms", num(&rule["primary_ms"]["p50"])),
            ("primary_p99_ms", primary_p99),
        ],
    );
    let passed = checks.iter().all(|c| c.passed);
    if s.record {
        let mut reg = s.conn.connect()?;
        let selector = Selector::from_arg(&s.version).map_err(anyhow::Error::msg)?;
        let v = reg
            .get_version(pb::GetVersionRequest {
                model: s.model.clone(),
                selector: Some(selector.to_get()),
            })
            .await
            .with_context(|| format!("{} {}", s.model, s.version))?
            .into_inner();
        let canonical = json!({
            "model": rule["model"], "shadow_model": rule["shadow_model"],
            "shadow_version": rule["shadow_version"], "compare": rule["compare"],
            "output": rule["output"], "atol": rule["atol"], "rtol": rule["rtol"],
        });
        let e = mlmesh_validator::record(
            &mut reg,
            pb::Evidence {
                model: v.model.clone(),
                version: v.version,
                manifest_digest: v.manifest_digest.clone(),
                suite_digest: hex::encode(sha2::Sha256::digest(canonical.to_string())),
                suite_source: format!(
                    "shadow {} -> {} at {}",
                    s.rule,
                    rule["shadow_model"].as_str().unwrap_or("?"),
                    s.gateway
                ),
                passed,
                checks,
                runner: Some(mlmesh_validator::runner()),
                kind: "shadow".into(),
                ..Default::default()
            },
        )
        .await?;
        println!(
            "recorded as evidence {} of {} v{}",
            e.id, e.model, e.version
        );
    }
    if passed {
        Ok(())
    } else {
        bail!("the shadow did not pass")
    }
}
