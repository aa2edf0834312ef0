//! `mlmesh-gateway`: the gateway service binary, the service kit's generic main.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    mlmesh_runtime::service::main::<mlmesh_gateway::Application>().await
}
