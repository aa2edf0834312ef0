//! A gRPC codec that leaves messages as the bytes they are on the wire.
//!
//! The gateway forwards `inference.GRPCInferenceService` calls without
//! decoding them: a `ModelInferRequest` carrying megabytes of raw tensor
//! bytes is copied once into the downstream frame instead of being parsed
//! into a message and encoded again. Decoding still happens where the
//! gateway itself needs the contents (the HTTP face, pipelines).

use bytes::{Buf as _, BufMut as _, Bytes};
use tonic::{
    Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

/// Messages as undecoded bytes, both ways.
#[derive(Clone, Copy, Debug, Default)]
pub struct Passthrough;

impl Codec for Passthrough {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Passthrough;
    type Decoder = Passthrough;

    fn encoder(&mut self) -> Self::Encoder {
        Passthrough
    }

    fn decoder(&mut self) -> Self::Decoder {
        Passthrough
    }
}

impl Encoder for Passthrough {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Passthrough {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
