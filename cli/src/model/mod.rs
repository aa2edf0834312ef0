//! `mlmesh model …`: what is done to a model version as a whole.
//! `validate` runs a validation suite against a registry version (and,
//! with `--against`, the version it would replace); see [`validate`].
//! `promote` moves an alias through its policy, validating first when the
//! registry would refuse for want of evidence; see [`promote`].
//! `convert` turns a checkpoint into an ONNX folder; see [`convert`].
//! `quantize` makes an int8 version of it in a closed loop; see [`quantize`].

mod convert;
mod promote;
mod quantize;
mod shadow;
pub(crate) mod validate;

use clap::{Args, Subcommand};

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
    /// Convert a sentence-transformers (BERT-family) checkpoint folder to
    /// an fp32 ONNX folder the embedding service serves; --push registers
    /// it with its lineage.
    Convert(convert::Convert),
    /// Quantize an fp32 sentence-encoder folder to int8 in a closed loop:
    /// a quality gate against fp32 on calibration texts, the worst nodes
    /// kept fp32 until it holds, the speed-up measured on this CPU;
    /// --push registers it with its lineage (and --suite its evidence).
    Quantize(quantize::Quantize),
}

pub async fn run(cmd: ModelCmd) -> anyhow::Result<()> {
    match cmd.command {
        Cmd::Validate(v) => validate::validate(v).await,
        Cmd::Promote(p) => promote::promote(p).await,
        Cmd::Shadow(s) => shadow::shadow(s).await,
        Cmd::Convert(c) => convert::convert(c).await,
        Cmd::Quantize(q) => quantize::quantize(q).await,
    }
}
