//! ONNX models through ONNX Runtime (`ort`, the library `make models`
//! fetches): inputs, outputs, datatypes and shapes are read from the model.

use std::path::Path;

use ort::{
    session::{Session, builder::GraphOptimizationLevel},
    value::{DynValue, TensorElementType, ValueType},
};

use super::{Loaded, OrtOptions, Runner, Signature, TensorSpec};
use crate::{
    error::LoadError,
    tensor::{Data, DataType, Tensor},
};

/// Loads ONNX Runtime once per process (see `mlmesh_onnx`).
pub fn init_runtime(dylib: &Path) -> Result<ort::environment::Environment, LoadError> {
    Ok(mlmesh_onnx::init_runtime(dylib)?)
}

fn dtype(t: TensorElementType) -> Option<DataType> {
    Some(match t {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::U8,
        TensorElementType::Uint16 => DataType::U16,
        TensorElementType::Uint32 => DataType::U32,
        TensorElementType::Uint64 => DataType::U64,
        TensorElementType::Int8 => DataType::I8,
        TensorElementType::Int16 => DataType::I16,
        TensorElementType::Int32 => DataType::I32,
        TensorElementType::Int64 => DataType::I64,
        TensorElementType::Float16 => DataType::F16,
        TensorElementType::Float32 => DataType::F32,
        TensorElementType::Float64 => DataType::F64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

fn spec(name: &str, ty: &ValueType, path: &Path) -> Result<TensorSpec, LoadError> {
    match ty {
        ValueType::Tensor { ty, shape, .. } => {
            let dt = dtype(*ty).ok_or_else(|| {
                LoadError::file(
                    path,
                    format!(
                        "tensor {name:?} has element type {ty:?}, which the protocol cannot carry"
                    ),
                )
            })?;
            if dt == DataType::F16 {
                // ort is built without its `half` feature (pinned features).
                return Err(LoadError::file(
                    path,
                    format!(
                        "tensor {name:?} is float16; FP16 ONNX tensors are not supported (FP16 works with .npz models)"
                    ),
                ));
            }
            Ok(TensorSpec {
                name: name.to_owned(),
                dtype: dt,
                shape: shape.iter().map(|&d| if d < 0 { -1 } else { d }).collect(),
            })
        }
        other => Err(LoadError::file(
            path,
            format!(
                "{name:?} is a {other:?}, not a tensor; export classifiers without ZipMap (skl2onnx: options={{'zipmap': False}})"
            ),
        )),
    }
}

struct OnnxRunner {
    session: Session,
}

pub fn load(file: &Path, instances: usize, opts: &OrtOptions) -> Result<Loaded, LoadError> {
    let env = init_runtime(&opts.dylib)?;
    let bytes = std::fs::read(file).map_err(|e| LoadError::file(file, e))?;
    let fail = |e: String| LoadError::file(file, format!("ONNX Runtime refused the model: {e}"));
    let mut runners: Vec<Box<dyn Runner>> = Vec::new();
    let mut signature = Signature::default();
    for i in 0..instances.max(1) {
        let session = Session::builder(&env)
            .map_err(|e| fail(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| fail(e.to_string()))?
            .with_intra_threads(opts.intra_op_threads)
            .map_err(|e| fail(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| fail(e.to_string()))?
            .with_intra_op_spinning(opts.allow_spinning)
            .map_err(|e| fail(e.to_string()))?
            .commit_from_memory(&bytes)
            .map_err(|e| fail(e.to_string()))?;
        if i == 0 {
            signature.inputs = session
                .inputs()
                .iter()
                .map(|o| spec(o.name(), o.dtype(), file))
                .collect::<Result<_, _>>()?;
            signature.outputs = session
                .outputs()
                .iter()
                .map(|o| spec(o.name(), o.dtype(), file))
                .collect::<Result<_, _>>()?;
            // Skipped when not a tensor the protocol carries: they keep
            // their default and are simply not offered.
            signature.overridable = session
                .overridable_initializers()
                .iter()
                .filter_map(|o| spec(o.name(), o.dtype(), file).ok())
                .collect();
        }
        runners.push(Box::new(OnnxRunner { session }));
    }
    Ok(Loaded {
        signature,
        runners,
        memory_bytes: None,
    })
}

fn to_value(t: Tensor) -> Result<DynValue, String> {
    use ort::value::Tensor as T;
    let shape = t.shape;
    let e = |e: ort::Error| format!("input {:?}: {e}", t.name);
    Ok(match t.data {
        Data::Bool(v) => T::from_array((shape, v)).map_err(e)?.into_dyn(),
        Data::U8(v) => T::from_array((shape, v)).map_err(e)?.into_dyn(),
        Data::U16(v) => T::from_array((shape, v)).map_err(e)?.into_dyn(),
        Data::U32(v) => T::from_array((shape, v)).map_err(e)?.into_dyn(),
        Data::U64(v) => T::from_array((shape, v)).map_err(e)?.into_dyn(),
        Data::I8(v) => T::from_array((shape, v)).map_err(e)?.into_dyn(),
        Data::I16(v) => T::from_array((shape, v)).map_err(e)?.into_dyn(),
        Data::I32(v) => T::from_array((shape, v)).map_err(e)?.into_dyn(),
        Data::I64(v) => T::from_array((shape, v)).map_err(e)?.into_dyn(),
        Data::F32(v) => T::from_array((shape, v)).map_err(e)?.into_dyn(),
        Data::F64(v) => T::from_array((shape, v)).map_err(e)?.into_dyn(),
        half @ (Data::F16(_) | Data::Bf16(_)) => {
            return Err(format!(
                "input {:?}: {} is not supported for ONNX models",
                t.name,
                half.dtype()
            ));
        }
        Data::Bytes(v) => {
            let strings = v
                .into_iter()
                .enumerate()
                .map(|(i, b)| {
                    String::from_utf8(b).map_err(|_| {
                        format!("input {:?}: BYTES element {i} is not UTF-8, which ONNX string tensors require", t.name)
                    })
                })
                .collect::<Result<Vec<String>, String>>()?;
            T::from_string_array((shape, strings.as_slice()))
                .map_err(e)?
                .into_dyn()
        }
    })
}

fn from_value(name: &str, v: &DynValue) -> Result<Tensor, String> {
    let e = |e: ort::Error| format!("output {name:?}: {e}");
    let ValueType::Tensor { ty, .. } = v.dtype() else {
        return Err(format!("output {name:?} is not a tensor"));
    };
    macro_rules! ext {
        ($t:ty, $var:ident) => {{
            let (shape, data) = v.try_extract_tensor::<$t>().map_err(e)?;
            (shape.to_vec(), Data::$var(data.to_vec()))
        }};
    }
    let (shape, data) = match ty {
        TensorElementType::Bool => ext!(bool, Bool),
        TensorElementType::Uint8 => ext!(u8, U8),
        TensorElementType::Uint16 => ext!(u16, U16),
        TensorElementType::Uint32 => ext!(u32, U32),
        TensorElementType::Uint64 => ext!(u64, U64),
        TensorElementType::Int8 => ext!(i8, I8),
        TensorElementType::Int16 => ext!(i16, I16),
        TensorElementType::Int32 => ext!(i32, I32),
        TensorElementType::Int64 => ext!(i64, I64),
        TensorElementType::Float32 => ext!(f32, F32),
        TensorElementType::Float64 => ext!(f64, F64),
        TensorElementType::String => {
            let (shape, strings) = v.try_extract_strings().map_err(e)?;
            (
                shape.to_vec(),
                Data::Bytes(strings.into_iter().map(String::into_bytes).collect()),
            )
        }
        other => return Err(format!("output {name:?} has unsupported type {other:?}")),
    };
    Ok(Tensor {
        name: name.to_owned(),
        shape,
        data,
    })
}

impl Runner for OnnxRunner {
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        let mut feed: Vec<(String, DynValue)> = Vec::with_capacity(inputs.len());
        for t in inputs {
            feed.push((t.name.clone(), to_value(t)?));
        }
        let outputs = self.session.run(feed).map_err(|e| e.to_string())?;
        outputs
            .iter()
            .map(|(name, v)| from_value(name, &v))
            .collect()
    }
}
