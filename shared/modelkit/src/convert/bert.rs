//! The BERT encoder as an ONNX graph (opset 17), operation for operation
//! what Hugging Face's `BertModel` computes in inference mode: embeddings
//! (word + position + token type, layer-normalized), then per layer
//! self-attention with the padding mask and a feed-forward block, each
//! followed by a residual add and layer normalization. Output:
//! `last_hidden_state` `[batch, sequence, hidden]`, which the embedding
//! service pools.
//!
//! Linear weights are stored transposed (`[in, out]`) so each projection is
//! one `MatMul` + `Add`, the shape the quantizer recognizes and ONNX Runtime
//! fuses; the GELU is written with `Erf` (exact), which ONNX Runtime fuses
//! into its `Gelu` kernel.

use super::{
    ConvertError,
    checkpoint::Checkpoint,
    config::{Activation, BertConfig},
};
use crate::onnx::{
    self, GraphBuilder, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, attr_float,
    attr_int, attr_ints, dtype, tensor_f32, tensor_i64, tensor_type, value_info,
};

/// The opset written: `LayerNormalization` is a standard operator from 17.
pub const OPSET: i64 = 17;

/// The graph of `config` with the weights of `ck`.
pub fn build(config: &BertConfig, ck: &Checkpoint<'_>) -> Result<ModelProto, ConvertError> {
    if let Some(extra) = ck.extra_layer(config.layers) {
        return Err(ConvertError::Tensor(
            extra,
            format!(
                "belongs to a layer the config does not have (num_hidden_layers = {})",
                config.layers
            ),
        ));
    }
    let h = config.hidden;
    let mut g = GraphBuilder::default();

    // Constants shared by every layer.
    let zero = g.init(tensor_i64("const/zero", &[], &[0]));
    let one_i = g.init(tensor_i64("const/one_i64", &[], &[1]));
    let one_f = g.init(tensor_f32("const/one", &[], &[1.0]));
    let seq_axis = g.init(tensor_i64("const/seq_axis", &[], &[1]));
    let mask_axes = g.init(tensor_i64("const/mask_axes", &[2], &[1, 2]));
    let mask_fill = g.init(tensor_f32("const/mask_fill", &[], &[f32::MIN]));
    let heads_shape = g.init(tensor_i64(
        "const/heads_shape",
        &[4],
        &[0, 0, config.heads as i64, config.head_size() as i64],
    ));
    let hidden_shape = g.init(tensor_i64("const/hidden_shape", &[3], &[0, 0, h as i64]));
    let scale = g.init(tensor_f32(
        "const/attention_scale",
        &[],
        &[(config.head_size() as f32).sqrt()],
    ));

    // Embeddings.
    let word = weight(
        &mut g,
        ck,
        "embeddings.word_embeddings.weight",
        &[config.vocab, h],
    )?;
    let pos = weight(
        &mut g,
        ck,
        "embeddings.position_embeddings.weight",
        &[config.positions, h],
    )?;
    let types = weight(
        &mut g,
        ck,
        "embeddings.token_type_embeddings.weight",
        &[config.type_vocab, h],
    )?;
    let e_word = g.op("Gather", &[&word, "input_ids"], "embeddings/word");
    let shape = g.op("Shape", &["input_ids"], "embeddings/position");
    let seq_len = g.op_with(
        "Gather",
        &[&shape, &seq_axis],
        "embeddings/position",
        vec![attr_int("axis", 0)],
    );
    let ids = g.op("Range", &[&zero, &seq_len, &one_i], "embeddings/position");
    let e_pos = g.op("Gather", &[&pos, &ids], "embeddings/position");
    let e_type = g.op(
        "Gather",
        &[&types, "token_type_ids"],
        "embeddings/token_type",
    );
    let sum = g.op("Add", &[&e_word, &e_pos], "embeddings");
    let sum = g.op("Add", &[&sum, &e_type], "embeddings");
    let mut x = layer_norm(&mut g, ck, config, "embeddings.LayerNorm", &sum)?;

    // The additive mask: 0 where attended, the lowest float where padded
    // (as `BertModel` builds it), shaped [batch, 1, 1, sequence].
    let m = g.op_with(
        "Cast",
        &["attention_mask"],
        "mask",
        vec![attr_int("to", dtype::FLOAT as i64)],
    );
    let inv = g.op("Sub", &[&one_f, &m], "mask");
    let fill = g.op("Mul", &[&inv, &mask_fill], "mask");
    let mask = g.op("Unsqueeze", &[&fill, &mask_axes], "mask");

    for l in 0..config.layers {
        let p = format!("encoder.layer.{l}");
        let heads = |g: &mut GraphBuilder, t: &str, perm: &[i64]| {
            let r = g.op("Reshape", &[t, &heads_shape], &p);
            g.op_with("Transpose", &[&r], &p, vec![attr_ints("perm", perm)])
        };
        let q = linear(&mut g, ck, &format!("{p}.attention.self.query"), &x, h, h)?;
        let k = linear(&mut g, ck, &format!("{p}.attention.self.key"), &x, h, h)?;
        let v = linear(&mut g, ck, &format!("{p}.attention.self.value"), &x, h, h)?;
        let q = heads(&mut g, &q, &[0, 2, 1, 3]);
        let k = heads(&mut g, &k, &[0, 2, 3, 1]);
        let v = heads(&mut g, &v, &[0, 2, 1, 3]);
        let s = g.op("MatMul", &[&q, &k], &p);
        let s = g.op("Div", &[&s, &scale], &p);
        let s = g.op("Add", &[&s, &mask], &p);
        let probs = g.op_with("Softmax", &[&s], &p, vec![attr_int("axis", -1)]);
        let ctx = g.op("MatMul", &[&probs, &v], &p);
        let ctx = g.op_with(
            "Transpose",
            &[&ctx],
            &p,
            vec![attr_ints("perm", &[0, 2, 1, 3])],
        );
        let ctx = g.op("Reshape", &[&ctx, &hidden_shape], &p);
        let out = linear(
            &mut g,
            ck,
            &format!("{p}.attention.output.dense"),
            &ctx,
            h,
            h,
        )?;
        let res = g.op("Add", &[&out, &x], &p);
        let x1 = layer_norm(
            &mut g,
            ck,
            config,
            &format!("{p}.attention.output.LayerNorm"),
            &res,
        )?;
        let inter = linear(
            &mut g,
            ck,
            &format!("{p}.intermediate.dense"),
            &x1,
            h,
            config.intermediate,
        )?;
        let act = activation(&mut g, config.activation, &inter, &p, &one_f);
        let out = linear(
            &mut g,
            ck,
            &format!("{p}.output.dense"),
            &act,
            config.intermediate,
            h,
        )?;
        let res = g.op("Add", &[&out, &x1], &p);
        x = layer_norm(&mut g, ck, config, &format!("{p}.output.LayerNorm"), &res)?;
    }
    // The graph's output keeps the name the embedding service looks for.
    g.nodes.push(NodeProto {
        input: vec![x],
        output: vec!["last_hidden_state".into()],
        name: "output/Identity".into(),
        op_type: "Identity".into(),
        ..Default::default()
    });

    let ids_type = || tensor_type(dtype::INT64, &[Err("batch"), Err("sequence")]);
    Ok(ModelProto {
        ir_version: onnx::IR_VERSION,
        producer_name: "mlmesh-convert".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        graph: Some(GraphProto {
            name: "bert".into(),
            node: g.nodes,
            initializer: g.initializers,
            input: vec![
                value_info("input_ids", ids_type()),
                value_info("attention_mask", ids_type()),
                value_info("token_type_ids", ids_type()),
            ],
            output: vec![value_info(
                "last_hidden_state",
                tensor_type(dtype::FLOAT, &[Err("batch"), Err("sequence"), Ok(h as i64)]),
            )],
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The tensor `name` as an initializer of the same name.
fn weight(
    g: &mut GraphBuilder,
    ck: &Checkpoint<'_>,
    name: &str,
    shape: &[usize],
) -> Result<String, ConvertError> {
    let v = ck.f32(name, shape)?;
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    Ok(g.init(tensor_f32(name, &dims, &v)))
}

/// `x · Wᵀ + b` of a PyTorch `Linear` (`weight` `[out, in]`), the weight
/// stored transposed.
fn linear(
    g: &mut GraphBuilder,
    ck: &Checkpoint<'_>,
    prefix: &str,
    x: &str,
    inp: usize,
    out: usize,
) -> Result<String, ConvertError> {
    let w = ck.f32(&format!("{prefix}.weight"), &[out, inp])?;
    let mut t = vec![0f32; w.len()];
    for o in 0..out {
        for i in 0..inp {
            t[i * out + o] = w[o * inp + i];
        }
    }
    let w = g.init(tensor_f32(
        &format!("{prefix}.weight"),
        &[inp as i64, out as i64],
        &t,
    ));
    let b = weight(g, ck, &format!("{prefix}.bias"), &[out])?;
    let y = g.op("MatMul", &[x, &w], prefix);
    Ok(g.op("Add", &[&y, &b], prefix))
}

fn layer_norm(
    g: &mut GraphBuilder,
    ck: &Checkpoint<'_>,
    config: &BertConfig,
    prefix: &str,
    x: &str,
) -> Result<String, ConvertError> {
    let gamma = weight(g, ck, &format!("{prefix}.weight"), &[config.hidden])?;
    let beta = weight(g, ck, &format!("{prefix}.bias"), &[config.hidden])?;
    Ok(g.op_with(
        "LayerNormalization",
        &[x, &gamma, &beta],
        prefix,
        vec![attr_int("axis", -1), attr_float("epsilon", config.eps)],
    ))
}

fn activation(g: &mut GraphBuilder, a: Activation, x: &str, p: &str, one: &str) -> String {
    let c = |g: &mut GraphBuilder, name: &str, v: f32| {
        g.init(tensor_f32(&format!("const/{name}"), &[], &[v]))
    };
    match a {
        Activation::Relu => g.op("Relu", &[x], p),
        // x · ½ · (1 + erf(x / √2))
        Activation::Gelu => {
            let sqrt2 = c(g, &format!("{p}/sqrt2"), std::f32::consts::SQRT_2);
            let half = c(g, &format!("{p}/half"), 0.5);
            let d = g.op("Div", &[x, &sqrt2], p);
            let e = g.op("Erf", &[&d], p);
            let s = g.op("Add", &[&e, one], p);
            let m = g.op("Mul", &[x, &s], p);
            g.op("Mul", &[&m, &half], p)
        }
        // ½ · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))
        Activation::GeluTanh => {
            let k = c(
                g,
                &format!("{p}/sqrt_2_over_pi"),
                (2.0 / std::f32::consts::PI).sqrt(),
            );
            let a3 = c(g, &format!("{p}/gelu_cubic"), 0.044715);
            let three = c(g, &format!("{p}/three"), 3.0);
            let half = c(g, &format!("{p}/half"), 0.5);
            let x3 = g.op("Pow", &[x, &three], p);
            let t = g.op("Mul", &[&x3, &a3], p);
            let t = g.op("Add", &[x, &t], p);
            let t = g.op("Mul", &[&t, &k], p);
            let t = g.op("Tanh", &[&t], p);
            let t = g.op("Add", &[&t, one], p);
            let t = g.op("Mul", &[x, &t], p);
            g.op("Mul", &[&t, &half], p)
        }
    }
}
