//! `mlmesh`: the mesh launcher (`mlmesh up`, see [`up`]), the model
//! registry's command line (`mlmesh registry …`, see [`registry`]), the
//! validator, converter and quantizer (`mlmesh model …`, see [`model`]),
//! the benchmarker (`mlmesh bench model`, see [`bench`]) and a private CA
//! for mutual TLS (`mlmesh certs`, see [`certs`]).

mod bench;
mod certs;
mod model;
mod registry;
mod up;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "mlmesh",
    version,
    about = "The mlmesh launcher and registry client"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start embedding, vector-search, inference and gateway; load the demo corpus.
    Up(up::Up),
    /// Models, versions and aliases in the model registry.
    Registry(registry::RegistryCmd),
    /// A private CA and certificates for mutual TLS between the services.
    Certs(certs::Certs),
    /// Model versions as a whole: validate, promote, convert, quantize.
    Model(model::ModelCmd),
    /// Benchmarks with intervals, A/B by interleaving and history.
    Bench(bench::BenchCmd),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Up(u) => up::up(u).await,
        Cmd::Registry(r) => registry::run(r).await,
        Cmd::Certs(c) => certs::certs(c),
        Cmd::Model(m) => model::run(m).await,
        Cmd::Bench(b) => bench::run(b).await,
    }
}
