//! `mlmesh-bench codec`: what the element walk in front of every decoder
//! (`mlmesh_proto::codec`) costs, next to prost's decode of the same bytes,
//! for the messages of the hot paths. Both sides run in this process, in
//! alternating rounds, and the report gives medians and their ratio.

use std::time::Instant;

use clap::Parser;
use mlmesh_proto::{
    codec,
    embedding::v1::EmbedRequest,
    inference::{ModelInferRequest, model_infer_request::InferInputTensor},
    vector::v1::{Point, PointId, UpsertRequest, point_id},
};
use prost::{Message, Name};

#[derive(Parser)]
pub struct CodecArgs {
    /// Decodes per round and side.
    #[arg(long, default_value_t = 20_000)]
    iterations: usize,
    /// Rounds (alternating sides); the medians are reported.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time<T: Message + Name + Default>(wire: &[u8], n: usize, walk: bool) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        if walk && codec::check(wire, &T::full_name(), codec::max_elements()).is_err() {
            panic!("refused a valid message");
        }
        let m = T::decode(wire).expect("decodes");
        std::hint::black_box(m);
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

fn row<T: Message + Name + Default>(what: &str, msg: &T, args: &CodecArgs) {
    let wire = msg.encode_to_vec();
    let (mut plain, mut walked) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        plain.push(time::<T>(&wire, args.iterations, false));
        walked.push(time::<T>(&wire, args.iterations, true));
    }
    let (p, w) = (median(plain), median(walked));
    println!(
        "| {what} | {} | {p:.0} | {w:.0} | {:.2}× |",
        wire.len(),
        w / p
    );
}

pub fn run(args: CodecArgs) {
    println!("| message | wire bytes | prost decode ns (median) | walk + decode ns | ratio |");
    println!("|---|---|---|---|---|");
    let texts = |n: usize| {
        (0..n)
            .map(|i| format!("sentence number {i} about the mesh"))
            .collect()
    };
    row(
        "EmbedRequest, 1 text",
        &EmbedRequest {
            inputs: texts(1),
            ..Default::default()
        },
        &args,
    );
    row(
        "EmbedRequest, 32 texts",
        &EmbedRequest {
            inputs: texts(32),
            ..Default::default()
        },
        &args,
    );
    let infer = |rows: usize| ModelInferRequest {
        model_name: "iris-logreg".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![rows as i64, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![vec![0u8; rows * 16].into()],
        ..Default::default()
    };
    row("ModelInferRequest, 1 row raw", &infer(1), &args);
    row("ModelInferRequest, 1024 rows raw", &infer(1024), &args);
    let points = (0..100u64)
        .map(|i| Point {
            id: Some(PointId {
                kind: Some(point_id::Kind::Num(i)),
            }),
            vector: vec![0.5; 384],
            ..Default::default()
        })
        .collect();
    row(
        "UpsertRequest, 100 points × 384",
        &UpsertRequest {
            collection: "c".into(),
            points,
        },
        &args,
    );
}
