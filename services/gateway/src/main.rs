//! `mlmesh-gateway`: the gateway binary.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use mlmesh_gateway::{Application, Settings};
use mlmesh_runtime::cli::ServerArgs;

/// The mlmesh front door: gRPC (mlmesh.gateway.v1) and HTTP/JSON.
#[derive(Parser, Debug)]
#[command(name = "mlmesh-gateway", version, after_long_help = SETTINGS_HELP)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// HTTP/JSON listen address; overrides `http.listen`.
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<SocketAddr>,
}

const SETTINGS_HELP: &str = "\
Settings (file key / environment variable / default):
  server.listen              MLMESH_SERVER__LISTEN               127.0.0.1:50050
  server.metrics_listen      MLMESH_SERVER__METRICS_LISTEN       127.0.0.1:9050 (off: disabled)
  server.shutdown_grace_secs MLMESH_SERVER__SHUTDOWN_GRACE_SECS  30   drain time after SIGTERM
  server.max_request_bytes   MLMESH_SERVER__MAX_REQUEST_BYTES    16777216 larger: RESOURCE_EXHAUSTED
  server.max_concurrent_streams MLMESH_SERVER__MAX_CONCURRENT_STREAMS 1024
  telemetry.log_format       MLMESH_TELEMETRY__LOG_FORMAT        pretty (pretty|json)
  telemetry.log_level        MLMESH_TELEMETRY__LOG_LEVEL         info (RUST_LOG wins)
  http.listen                MLMESH_HTTP__LISTEN                 127.0.0.1:8080 (off: disabled)
  http.max_body_bytes        MLMESH_HTTP__MAX_BODY_BYTES         16777216 larger: 413
  downstream.embedding       MLMESH_DOWNSTREAM__EMBEDDING        127.0.0.1:50051 (comma-separated replicas)
  downstream.vector_search   MLMESH_DOWNSTREAM__VECTOR_SEARCH    127.0.0.1:50052 (comma-separated replicas)
  downstream.inference       MLMESH_DOWNSTREAM__INFERENCE        empty: no inference behind this gateway
  downstream.request_timeout_ms MLMESH_DOWNSTREAM__REQUEST_TIMEOUT_MS 30000 deadline when the caller sets none
  downstream.connect_timeout_ms MLMESH_DOWNSTREAM__CONNECT_TIMEOUT_MS 1000
  downstream.max_attempts    MLMESH_DOWNSTREAM__MAX_ATTEMPTS     3    idempotent calls, on UNAVAILABLE
  downstream.eject_ms        MLMESH_DOWNSTREAM__EJECT_MS         1000 skip a failed replica (doubling, up to 16x)
  chunking.unit              MLMESH_CHUNKING__UNIT               tokens (tokens|characters)
  chunking.size              MLMESH_CHUNKING__SIZE               128
  chunking.overlap           MLMESH_CHUNKING__OVERLAP            16
  limits.max_documents       MLMESH_LIMITS__MAX_DOCUMENTS        256  per Ingest
  limits.max_document_bytes  MLMESH_LIMITS__MAX_DOCUMENT_BYTES   1048576
  limits.max_chunks          MLMESH_LIMITS__MAX_CHUNKS           8192 per Ingest
  limits.max_query_bytes     MLMESH_LIMITS__MAX_QUERY_BYTES      16384
  limits.max_top_k           MLMESH_LIMITS__MAX_TOP_K            100
  limits.max_in_flight       MLMESH_LIMITS__MAX_IN_FLIGHT        256  beyond: RESOURCE_EXHAUSTED / 429
  limits.ingest_concurrency  MLMESH_LIMITS__INGEST_CONCURRENCY   4    embedding calls in flight per Ingest
  limits.max_tensor_rows     MLMESH_LIMITS__MAX_TENSOR_ROWS      4096 first dimension of a client tensor
  limits.max_tensor_elements MLMESH_LIMITS__MAX_TENSOR_ELEMENTS  16777216 product of dimensions (0 counts as 1)
  rag.max_context_chars      MLMESH_RAG__MAX_CONTEXT_CHARS       4000
  rag.default_top_k          MLMESH_RAG__DEFAULT_TOP_K           5
  auth.mode                  MLMESH_AUTH__MODE                   auto (auto|required|none; auto on a
                             non-loopback address needs keys or JWT, or refuses to start)
  auth.keys_file             MLMESH_AUTH__KEYS_FILE              [[keys]] name, sha256, tier, scopes
  auth.jwt.jwks_url          MLMESH_AUTH__JWT__JWKS_URL          empty (no JWT); also issuer, audience (both
                             required unless allow_any_issuer / allow_any_audience), leeway_secs (30)
  auth.tiers.<tier>          (file)                              requests_per_second, burst, inputs_per_second, inputs_burst
  mcp.enabled                MLMESH_MCP__ENABLED                 true (POST /mcp on the HTTP port)
  mcp.allowed_hosts          MLMESH_MCP__ALLOWED_HOSTS           localhost,127.0.0.1,::1
  pipelines.<name>           (file)                              see the README, 'The front door'
  --config FILE              MLMESH_CONFIG                       the settings file

Trace export: OTEL_EXPORTER_OTLP_ENDPOINT (off when unset), OTEL_SERVICE_NAME.";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut settings = Settings::load(args.server.config.as_deref(), std::env::vars().collect())
        .context("loading settings")?;
    args.server.apply(&mut settings.server);
    if let Some(h) = args.http_listen {
        settings.http.listen = Some(h);
    }
    let _telemetry = mlmesh_runtime::telemetry::init("mlmesh-gateway", &settings.telemetry)?;
    tracing::info!(?settings, "starting");
    let app = Application::build(settings)
        .await
        .context("starting the gateway")?;
    app.run_until_stopped(mlmesh_runtime::shutdown::signal())
        .await?;
    Ok(())
}
