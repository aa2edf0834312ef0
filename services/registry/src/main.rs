//! `mlmesh-registry`: the registry service binary, the service kit's generic main.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    mlmesh_runtime::service::main::<mlmesh_registry::Application>().await
}
