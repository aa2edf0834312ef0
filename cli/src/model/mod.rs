//! `mlmesh model …`: what is done to a model version as a whole.
//! `validate` runs a validation suite against a registry version (and,
//! with `--against`, the version it would replace); see [`validate`].
//! `promote` moves an alias through its policy, validating first when the
//! registry would refuse for want of evidence; see [`promote`].

mod budgets;
mod promote;
mod robustness;
mod shadow;
pub(crate) mod suite;
mod validate;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use mlmesh_proto::inference as inf;
use mlmesh_tensor::DataType;

#[derive(Args, Debug)]
pub struct ModelCmd {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a validation suite against a registry version (NUMBER or
    /// @ALIAS), alone or against another version; exits 1 when a check
    /// fails, naming it.
    Validate(validate::Validate),
    /// Move an alias to a version through its policy: validate first when
    /// the version lacks fresh evidence of the policy's suite (printing
    /// each check), record the evidence, then move the alias with
    /// compare-and-set.
    Promote(promote::Promote),
    /// Judge a gateway's shadow report for one rule (agreement with its
    /// interval, errors, latency) and, with --record, store it as evidence
    /// of the version the shadow served.
    Shadow(shadow::Shadow),
}

pub async fn run(cmd: ModelCmd) -> anyhow::Result<()> {
    match cmd.command {
        Cmd::Validate(v) => validate::validate(v).await,
        Cmd::Promote(p) => promote::promote(p).await,
        Cmd::Shadow(s) => shadow::shadow(s).await,
    }
}

/// An output's elements as numbers (booleans as 0 and 1, anything else
/// NaN), as the suite's checks read them.
fn numbers(
    o: &inf::model_infer_response::InferOutputTensor,
    raw: &[u8],
) -> anyhow::Result<Vec<f64>> {
    let dt = DataType::parse(&o.datatype)
        .with_context(|| format!("output {:?}: datatype {}", o.name, o.datatype))?;
    Ok(mlmesh_tensor::json::from_raw(dt, raw, &o.name)?
        .iter()
        .map(|v| {
            v.as_f64()
                .or_else(|| v.as_bool().map(|b| f64::from(u8::from(b))))
                .unwrap_or(f64::NAN)
        })
        .collect())
}
