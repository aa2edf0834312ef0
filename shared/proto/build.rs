//! Compiles `proto/` with protox (a pure-Rust protobuf compiler, so no
//! `protoc` is needed on the build machine) and generates tonic clients and
//! servers plus one file descriptor set for gRPC reflection.

use std::path::PathBuf;

use prost::Message as _;

const PROTOS: &[&str] = &[
    "mlmesh/embedding/v1/embedding.proto",
    "mlmesh/vector/v1/vector.proto",
    "mlmesh/gateway/v1/gateway.proto",
    "inference/grpc_service.proto",
    "mlmesh/registry/v1/registry.proto",
    "mlmesh/validation/v1/validation.proto",
    "mlmesh/mesh/v1/status.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", root.display());

    let fds = protox::compile(PROTOS, [&root])?;
    std::fs::write(out.join("mlmesh_descriptor.bin"), fds.encode_to_vec())?;
    // Type names let the codec find each message's schema for its
    // element walk (src/codec.rs).
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::BoundedCodec")
        // Tensor payloads: `Bytes` slices of the received buffer, no copy.
        .bytes(".inference")
        // Artifact chunks, likewise.
        .bytes(".mlmesh.registry")
        .compile_fds_with_config(fds, config)?;
    Ok(())
}
