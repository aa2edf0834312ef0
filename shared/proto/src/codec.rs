//! The codec of every generated client and server: prost's, after a walk
//! of the wire bytes that bounds what decoding will allocate.
//!
//! A message's size is bounded before it is read (`server.max_request_bytes`),
//! but not what it inflates to: a repeated message field whose elements are
//! empty costs two bytes each on the wire and a whole struct (hundreds of
//! bytes) each once decoded, so 16 MiB of them would become gigabytes. The
//! walk counts the elements decoding would create (messages, repeated
//! values, map entries), following the schema from the descriptor set, and
//! refuses a message with more than [`max_elements`] before prost
//! allocates any of them: RESOURCE_EXHAUSTED naming the field that holds
//! the most and the setting. It reads each byte once and skips over
//! `bytes`/`string` payloads, so its cost is small next to decoding.
//! Bytes that are not valid protobuf are left to prost to refuse.

use std::{
    collections::HashMap,
    marker::PhantomData,
    sync::{
        OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
};

use prost::{Message, Name};
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// The default bound on decoded elements per message.
pub const DEFAULT_MAX_ELEMENTS: usize = 1 << 20;

/// Nesting followed; deeper messages are refused (prost itself stops at
/// 100).
const MAX_DEPTH: usize = 64;

static MAX_ELEMENTS: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_ELEMENTS);

/// Sets the bound for every codec of this process (the server does, from
/// `server.max_request_elements`).
pub fn set_max_elements(n: usize) {
    MAX_ELEMENTS.store(n.max(1), Ordering::Relaxed);
}

/// The bound in force.
pub fn max_elements() -> usize {
    MAX_ELEMENTS.load(Ordering::Relaxed)
}

/// prost's codec with the element walk in front of its decoder.
#[derive(Debug, Clone)]
pub struct BoundedCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for BoundedCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Name + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder(ProstDecoder::default())
    }
}

/// prost's decoder after the walk.
#[derive(Debug, Clone)]
pub struct BoundedDecoder<U>(ProstDecoder<U>);

impl<U: Message + Name + Default> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        use bytes::Buf as _;
        // tonic hands over one whole message, contiguous.
        let wire = buf.chunk();
        if wire.len() == buf.remaining() {
            check(wire, &U::full_name(), max_elements())?;
        }
        self.0.decode(buf)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// What the walk needs of a field: its name, and the message type of its
/// values (for message and map fields).
#[derive(Debug)]
struct Field {
    name: String,
    message: Option<String>,
}

/// Fields by number, of every message type, by full name.
type Schema = HashMap<String, HashMap<u32, Field>>;

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let mut all = Schema::new();
        let Ok(fds) = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET) else {
            return all;
        };
        fn add(all: &mut Schema, scope: &str, m: &prost_types::DescriptorProto) {
            let full = format!("{scope}.{}", m.name());
            let fields = m
                .field
                .iter()
                .map(|f| {
                    let message = (f.r#type()
                        == prost_types::field_descriptor_proto::Type::Message)
                        .then(|| f.type_name().trim_start_matches('.').to_owned());
                    (
                        f.number() as u32,
                        Field {
                            name: f.name().to_owned(),
                            message,
                        },
                    )
                })
                .collect();
            for nested in &m.nested_type {
                add(all, &full, nested);
            }
            all.insert(full, fields);
        }
        for file in &fds.file {
            for m in &file.message_type {
                add(&mut all, file.package(), m);
            }
        }
        all
    })
}

/// Counts the elements of a `message` (full name) in `wire`; too many is
/// RESOURCE_EXHAUSTED naming the busiest field and the setting.
pub fn check(wire: &[u8], message: &str, max: usize) -> Result<(), Status> {
    let mut walk = Walk {
        schema: schema(),
        left: max,
        counts: HashMap::new(),
    };
    match walk.message(wire, message, 0) {
        Ok(()) | Err(Stop::Malformed) => Ok(()),
        Err(Stop::TooMany) => {
            let (field, n) = walk
                .counts
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(f, n)| (f.clone(), *n))
                .unwrap_or_default();
            Err(Status::resource_exhausted(format!(
                "the {message} holds more than {max} elements (messages, repeated values and map entries; the last {n} counted were mostly `{field}`): at most server.max_request_elements"
            )))
        }
        Err(Stop::TooDeep) => Err(Status::resource_exhausted(format!(
            "the {message} nests messages deeper than {MAX_DEPTH}"
        ))),
    }
}

enum Stop {
    TooMany,
    TooDeep,
    /// Not valid protobuf: prost reports it.
    Malformed,
}

struct Walk<'s> {
    schema: &'s Schema,
    left: usize,
    /// Elements per field (`Message.field`), for the error.
    counts: HashMap<String, usize>,
}

impl Walk<'_> {
    fn message(&mut self, mut wire: &[u8], name: &str, depth: usize) -> Result<(), Stop> {
        if depth > MAX_DEPTH {
            return Err(Stop::TooDeep);
        }
        let fields = self.schema.get(name);
        while !wire.is_empty() {
            let key = varint(&mut wire)?;
            let (number, kind) = ((key >> 3) as u32, key & 7);
            let field = fields.and_then(|f| f.get(&number));
            match kind {
                0 => {
                    varint(&mut wire)?;
                }
                1 => wire = wire.get(8..).ok_or(Stop::Malformed)?,
                5 => wire = wire.get(4..).ok_or(Stop::Malformed)?,
                2 => {
                    let len = usize::try_from(varint(&mut wire)?).map_err(|_| Stop::Malformed)?;
                    let payload = wire.get(..len).ok_or(Stop::Malformed)?;
                    wire = &wire[len..];
                    if let Some(nested) = field.and_then(|f| f.message.as_deref()) {
                        self.message(payload, nested, depth + 1)?;
                    }
                }
                _ => return Err(Stop::Malformed),
            }
            // Every field occurrence is at most one decoded element (a
            // packed run is one, a repeated or map field one per entry).
            // Near the bound, remember where the elements are, for the
            // error.
            if self.left < 1024 {
                let key = match field {
                    Some(f) => format!("{name}.{}", f.name),
                    None => format!("{name}.#{number}"),
                };
                *self.counts.entry(key).or_default() += 1;
            }
            if self.left == 0 {
                return Err(Stop::TooMany);
            }
            self.left -= 1;
        }
        Ok(())
    }
}

fn varint(wire: &mut &[u8]) -> Result<u64, Stop> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = wire.split_first().ok_or(Stop::Malformed)?;
        *wire = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(Stop::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::{ModelInferRequest, model_infer_request::InferInputTensor};

    #[test]
    fn many_empty_elements_are_refused_before_decoding_naming_the_field() {
        let req = ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![InferInputTensor::default(); 5000],
            ..Default::default()
        };
        let wire = req.encode_to_vec();
        assert!(wire.len() < 12_000, "two bytes per element on the wire");
        let e = check(&wire, &ModelInferRequest::full_name(), 4096).expect_err("too many");
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(
            e.message().contains("ModelInferRequest.inputs")
                && e.message().contains("server.max_request_elements"),
            "{}",
            e.message()
        );
        check(&wire, &ModelInferRequest::full_name(), 6000).expect("within the bound");
    }

    #[test]
    fn nested_elements_count_and_bytes_are_skipped() {
        let input = InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            ..Default::default()
        };
        let req = ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![input; 3],
            raw_input_contents: vec![vec![0u8; 1 << 20].into()],
            ..Default::default()
        };
        let wire = req.encode_to_vec();
        // model_name, 3 inputs × (itself, name, datatype, shape), one raw
        // contents: 14 elements; a megabyte of bytes is one.
        check(&wire, &ModelInferRequest::full_name(), 14).expect("14 fit");
        assert!(check(&wire, &ModelInferRequest::full_name(), 13).is_err());
    }

    #[test]
    fn malformed_bytes_are_left_to_prost() {
        for junk in [&[0xffu8; 11][..], &[0x0a, 0x05, 0x01], &[0x0f]] {
            check(junk, &ModelInferRequest::full_name(), 10).expect("prost reports it");
        }
    }

    #[test]
    fn every_generated_message_type_is_in_the_schema() {
        for name in [
            ModelInferRequest::full_name(),
            crate::embedding::v1::EmbedRequest::full_name(),
            crate::vector::v1::UpsertRequest::full_name(),
            crate::registry::v1::StartUploadRequest::full_name(),
            crate::gateway::v1::IngestRequest::full_name(),
        ] {
            assert!(schema().contains_key(&name), "{name}");
        }
    }
}
