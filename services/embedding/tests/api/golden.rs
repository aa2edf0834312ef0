//! Accuracy against sentence-transformers' own output for 60 texts.

use serde_json::Value;

use crate::helpers::{cosine, spawn_app};

struct Golden {
    text: String,
    embedding: Vec<f32>,
}

fn golden() -> Vec<Golden> {
    let raw = include_str!("../data/minilm-golden.json");
    let v: Value = serde_json::from_str(raw).expect("golden json");
    assert_eq!(v["max_seq_length"], 256);
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|it| Golden {
            text: it["text"].as_str().expect("text").to_owned(),
            embedding: it["embedding"]
                .as_array()
                .expect("embedding")
                .iter()
                .map(|x| x.as_f64().expect("float") as f32)
                .collect(),
        })
        .collect()
}

#[tokio::test]
async fn every_golden_text_matches_sentence_transformers() {
    let app = spawn_app().await;
    let items = golden();
    assert_eq!(items.len(), 60);
    let texts: Vec<&str> = items.iter().map(|g| g.text.as_str()).collect();

    // All at once (batched, padded) and each alone (no padding).
    let batched = app.embed(&texts).await;
    let mut worst = (1.0f32, String::new());
    for (i, g) in items.iter().enumerate() {
        let alone = app.embed(&[&g.text]).await.remove(0);
        for (how, v) in [("batched", &batched[i]), ("alone", &alone)] {
            assert_eq!(v.len(), 384);
            let c = cosine(v, &g.embedding);
            if c < worst.0 {
                worst = (
                    c,
                    format!("{how}: {:?}", g.text.chars().take(40).collect::<String>()),
                );
            }
            assert!(
                c >= 0.999,
                "{how} item {i} {:?}: cosine {c} < 0.999",
                g.text
            );
        }
    }
    eprintln!("golden: worst cosine {} ({})", worst.0, worst.1);
    app.stop().await;
}
