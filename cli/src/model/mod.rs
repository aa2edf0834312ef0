//! `mlmesh model …`: what is done to a model version as a whole.
//! `validate` runs a validation suite against a registry version (and,
//! with `--against`, the version it would replace); see [`validate`].

mod robustness;
mod validate;

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
}

pub async fn run(cmd: ModelCmd) -> anyhow::Result<()> {
    match cmd.command {
        Cmd::Validate(v) => validate::validate(v).await,
    }
}
