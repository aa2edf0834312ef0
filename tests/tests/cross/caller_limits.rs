//! One caller cannot starve another, with real processes: a key whose tier
//! allows three calls in flight opens three idle `ModelStreamInfer`
//! streams through the gateway; its fourth stream and its unary calls are
//! refused RESOURCE_EXHAUSTED while another key's calls are all served
//! beside it; closing one stream gives the slot back. And a stream counts
//! each message against its caller's rate, not only its opening: a key
//! with a burst of three gets three answers, then RESOURCE_EXHAUSTED.

use std::time::{Duration, Instant};

use mlmesh_proto::inference::{
    self as ipb, grpc_inference_service_client::GrpcInferenceServiceClient,
};
use mlmesh_tests::TempDir;
use sha2::{Digest as _, Sha256};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, transport::Channel};

use crate::attacks::{inference_behind_gateway, iris_row};

const HOLDER: &str = "mlm_test_key_holder_5a1f0c";
const NEIGHBOUR: &str = "mlm_test_key_neighbour_93be77";
const CHATTY: &str = "mlm_test_key_chatty_0d4e21";

fn keyed<T>(msg: T, key: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("ascii"),
    );
    r
}

type Client = GrpcInferenceServiceClient<Channel>;

/// Opens a stream as `key` that sends nothing until `tx` does.
async fn open_stream(
    c: &mut Client,
    key: &str,
) -> Result<
    (
        tokio::sync::mpsc::Sender<ipb::ModelInferRequest>,
        tonic::Streaming<ipb::ModelStreamInferResponse>,
    ),
    tonic::Status,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let answers = c
        .model_stream_infer(keyed(ReceiverStream::new(rx), key))
        .await?
        .into_inner();
    Ok((tx, answers))
}

#[test]
fn one_caller_holding_idle_streams_starves_nobody_and_stream_messages_are_charged() {
    let _serial = mlmesh_tests::serial();
    let dir = TempDir::new("caller-limits");
    let sha = |k: &str| hex::encode(Sha256::digest(k.as_bytes()));
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        format!(
            "[[keys]]\nname = \"holder\"\nsha256 = \"{}\"\ntier = \"narrow\"\nscopes = [\"predict\"]\n\n\
             [[keys]]\nname = \"neighbour\"\nsha256 = \"{}\"\nscopes = [\"predict\"]\n\n\
             [[keys]]\nname = \"chatty\"\nsha256 = \"{}\"\ntier = \"tiny\"\nscopes = [\"predict\"]\n",
            sha(HOLDER),
            sha(NEIGHBOUR),
            sha(CHATTY),
        ),
    )
    .expect("keys file");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nkeys_file = \"{}\"\n\n\
             [auth.tiers.narrow]\nrequests_per_second = 1.0\nburst = 100\nmax_concurrent = 3\n\n\
             [auth.tiers.tiny]\nrequests_per_second = 0.01\nburst = 3\nmax_concurrent = 0\n",
            keys.display()
        ),
    )
    .expect("settings");
    let (_inference, gateway) =
        inference_behind_gateway(&[("MLMESH_CONFIG", config.display().to_string())]);
    let rt = crate::registry_follow::runtime();
    rt.block_on(async {
        let mut c = Client::connect(format!("http://{}", gateway.addr))
            .await
            .expect("gateway");
        // Three idle streams hold the holder's three slots.
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(
                open_stream(&mut c, HOLDER)
                    .await
                    .expect("within max_concurrent"),
            );
        }
        let e = open_stream(&mut c, HOLDER)
            .await
            .expect_err("a fourth stream is over max_concurrent");
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        let e = c
            .model_infer(keyed(iris_row(), HOLDER))
            .await
            .expect_err("so is a unary call");
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        // Beside them, another caller is served every time.
        for _ in 0..10 {
            c.model_infer(keyed(iris_row(), NEIGHBOUR))
                .await
                .expect("the neighbour is not starved");
        }
        // A held stream still works, and closing one frees its slot.
        let (tx, mut answers) = held.pop().expect("held");
        tx.send(iris_row()).await.expect("send");
        let a = answers.message().await.expect("answer").expect("one");
        assert!(a.error_message.is_empty(), "{a:?}");
        drop((tx, answers));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match c.model_infer(keyed(iris_row(), HOLDER)).await {
                Ok(_) => break,
                Err(e) if e.code() == Code::ResourceExhausted => {
                    assert!(Instant::now() < deadline, "the slot never came back: {e:?}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        drop(held);

        // Charged per message: a burst of three is three answers.
        let (tx, mut answers) = open_stream(&mut c, CHATTY).await.expect("opens");
        for _ in 0..6 {
            let _ = tx.send(iris_row()).await;
        }
        drop(tx);
        let mut ok = 0;
        let end = loop {
            match answers.message().await {
                Ok(Some(a)) if a.error_message.is_empty() => ok += 1,
                Ok(Some(a)) => panic!("an answer failed: {a:?}"),
                Ok(None) => panic!("the stream ended OK after {ok} answers: not charged"),
                Err(e) => break e,
            }
        };
        assert_eq!(ok, 3, "the opening and two more messages fit the burst");
        assert_eq!(end.code(), Code::ResourceExhausted, "{end:?}");
    });
}
