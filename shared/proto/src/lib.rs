//! Generated gRPC code for every mlmesh protocol in `proto/`: message types,
//! tonic clients and servers, and the descriptor set served by reflection.
//!
//! The generated code is not written by hand; change the `.proto` files
//! instead. [`json`] converts the `google.protobuf.Struct` payloads they
//! carry to and from JSON.

pub mod codec;
pub mod json;

/// `mlmesh.embedding.v1`: the embedding service contract.
pub mod embedding {
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("mlmesh.embedding.v1");
    }
}

/// `mlmesh.vector.v1`: the vector-search service contract.
pub mod vector {
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("mlmesh.vector.v1");
    }
}

/// `mlmesh.gateway.v1`: the gateway, the mesh's front door.
pub mod gateway {
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("mlmesh.gateway.v1");
    }
}

/// `mlmesh.registry.v1`: the model registry.
pub mod registry {
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("mlmesh.registry.v1");
    }
}

/// `mlmesh.validation.v1`: the validator over gRPC (served by the inference
/// service).
pub mod validation {
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("mlmesh.validation.v1");
    }
}

/// `mlmesh.mesh.v1`: what every mlmesh server says about itself (served by
/// the service kit, read by the gateway's console).
pub mod mesh {
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("mlmesh.mesh.v1");
    }
}

/// `inference`: the Open Inference Protocol (KServe v2) as Triton publishes
/// it, served by the inference service and called by tritonclient.
pub mod inference {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("inference");
}

/// Encoded `FileDescriptorSet` of all mlmesh protos, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/mlmesh_descriptor.bin"));
