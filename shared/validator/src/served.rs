//! One version served for validation: pulled from the registry (verified)
//! into a repository of its own and served by its own `mlmesh-inference`
//! process on a loopback port; the suite's examples as requests; the
//! temporary folder it all lives in.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use mlmesh_proto::{
    inference::{self as inf, grpc_inference_service_client::GrpcInferenceServiceClient},
    registry::v1 as pb,
};
use mlmesh_registry_client::{Selector, layout::Layout};
use mlmesh_runtime::client::{H2Channel, H2Settings};
use mlmesh_tensor::{DataType, json::flatten};
use mlmesh_validate::{
    checks::Answers,
    suite::{Signature, Suite, TensorSpec},
};

/// A folder removed when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

pub(crate) fn tempdir() -> anyhow::Result<TempDir> {
    let p = std::env::temp_dir().join(format!(
        "mlmesh-validate-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
    Ok(TempDir(p))
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The budgets' view of an inference version and the suite's requests.
pub(crate) struct InferCost<'a> {
    pub served: &'a Served,
    pub requests: &'a [inf::ModelInferRequest],
}

impl crate::budgets::Costed for InferCost<'_> {
    fn load_time(&self) -> Duration {
        self.served.load_time
    }

    fn rss_mb(&self) -> Option<f64> {
        self.served.rss_mb()
    }

    fn call(&self, i: usize) -> futures::future::BoxFuture<'_, Result<(), tonic::Status>> {
        let mut client = self.served.client.clone();
        let rq = self.requests[i % self.requests.len().max(1)].clone();
        Box::pin(async move { client.model_infer(rq).await.map(|_| ()) })
    }
}

/// One version, pulled and served by its own inference process.
pub struct Served {
    pub version: pb::Version,
    child: Child,
    pub client: GrpcInferenceServiceClient<H2Channel>,
    /// From starting the process to the model answering ready.
    pub load_time: Duration,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    pub async fn start(
        reg: &mut mlmesh_registry_client::Client,
        model: &str,
        which: &str,
        repo: &Path,
        bin: &Path,
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let version = resolve(reg, model, which).await?;
        // `<repo>/<model>/1/`: the version's files, config.pbtxt beside.
        let model_dir = repo.join(model);
        let layout = Layout::of(&version.files);
        let dest = model_dir.join("1");
        std::fs::create_dir_all(&model_dir)?;
        mlmesh_registry_client::pull(reg, &version, &dest, move |p| layout.place(p), |_| {})
            .await
            .with_context(|| format!("pulling {model} v{}", version.version))?;
        let config = dest.join("config.pbtxt");
        if config.is_file() {
            std::fs::rename(&config, model_dir.join("config.pbtxt"))?;
        }
        let spawned = std::time::Instant::now();
        let (child, addr) = spawn_inference(bin, repo, env)?;
        let uri = format!("http://{addr}").parse()?;
        let channel =
            H2Channel::lazy(uri, H2Settings::default(), None).map_err(anyhow::Error::msg)?;
        let mut served = Self {
            version,
            child,
            client: GrpcInferenceServiceClient::new(channel).max_decoding_message_size(256 << 20),
            load_time: Duration::ZERO,
        };
        // Loaded at start; ready once the model answers ModelReady.
        for _ in 0..600 {
            let ready = served
                .client
                .model_ready(inf::ModelReadyRequest {
                    name: model.to_owned(),
                    version: String::new(),
                })
                .await
                .map(|r| r.into_inner().ready)
                .unwrap_or(false);
            if ready {
                served.load_time = spawned.elapsed();
                return Ok(served);
            }
            if let Some(reason) = served.load_failure(model).await {
                bail!(
                    "{model} v{} does not load: {reason}",
                    served.version.version
                );
            }
            if let Ok(Some(status)) = served.child.try_wait() {
                bail!(
                    "the inference service serving {model} v{} exited ({status})",
                    served.version.version
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "{model} v{} was not ready within 60 s",
            served.version.version
        )
    }

    /// Why the model failed to load, when the service says it did.
    async fn load_failure(&self, model: &str) -> Option<String> {
        let index = self
            .client
            .clone()
            .repository_index(inf::RepositoryIndexRequest::default())
            .await
            .ok()?
            .into_inner();
        index
            .models
            .into_iter()
            .find(|m| m.name == model && m.state == "UNAVAILABLE" && !m.reason.is_empty())
            .map(|m| m.reason)
    }

    /// The serving process's resident memory, in MB (Linux).
    pub fn rss_mb(&self) -> Option<f64> {
        rss_mb(&self.child)
    }

    fn model(&self) -> &str {
        &self.version.model
    }

    pub async fn signature(&self) -> anyhow::Result<Signature> {
        let m = self
            .client
            .clone()
            .model_metadata(inf::ModelMetadataRequest {
                name: self.model().to_owned(),
                version: String::new(),
            })
            .await?
            .into_inner();
        let spec = |t: &inf::model_metadata_response::TensorMetadata| TensorSpec {
            name: t.name.clone(),
            datatype: t.datatype.clone(),
            shape: t.shape.clone(),
        };
        Ok(Signature {
            inputs: m.inputs.iter().map(spec).collect(),
            outputs: m.outputs.iter().map(spec).collect(),
        })
    }

    /// The model's `max_batch_size` (0: no batch axis).
    pub async fn max_batch(&self) -> anyhow::Result<i32> {
        let c = self
            .client
            .clone()
            .model_config(inf::ModelConfigRequest {
                name: self.model().to_owned(),
                version: String::new(),
            })
            .await?
            .into_inner();
        Ok(c.config.map_or(0, |c| c.max_batch_size))
    }

    /// Every example's outputs, flattened to numbers.
    pub async fn answers(&self, requests: &[inf::ModelInferRequest]) -> anyhow::Result<Answers> {
        let mut out = Vec::with_capacity(requests.len());
        let mut client = self.client.clone();
        for (i, rq) in requests.iter().enumerate() {
            let r = client
                .model_infer(rq.clone())
                .await
                .with_context(|| {
                    format!("example {i} on {} v{}", self.model(), self.version.version)
                })?
                .into_inner();
            let mut answer = BTreeMap::new();
            for (o, raw) in r.outputs.iter().zip(&r.raw_output_contents) {
                answer.insert(o.name.clone(), crate::numbers(o, raw)?);
            }
            out.push(answer);
        }
        Ok(out)
    }
}

/// `which` version (a number or @alias) of `model`, as the registry has it.
pub(crate) async fn resolve(
    reg: &mut mlmesh_registry_client::Client,
    model: &str,
    which: &str,
) -> anyhow::Result<pb::Version> {
    let selector = Selector::from_arg(which).map_err(anyhow::Error::msg)?;
    Ok(reg
        .get_version(pb::GetVersionRequest {
            model: model.to_owned(),
            selector: Some(selector.to_get()),
        })
        .await
        .with_context(|| format!("{model} {which}"))?
        .into_inner())
}

/// A process's resident memory, in MB (Linux).
pub(crate) fn rss_mb(child: &Child) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// The suite's examples as inference requests for `model` (every input
/// raw), each field named in errors.
pub fn requests(suite: &Suite, model: &str) -> anyhow::Result<Vec<inf::ModelInferRequest>> {
    suite
        .examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut rq = inf::ModelInferRequest {
                model_name: model.to_owned(),
                ..Default::default()
            };
            for (name, t) in &e.inputs {
                let field = format!("examples[{i}].inputs.{name}");
                let dt = t["datatype"]
                    .as_str()
                    .and_then(DataType::parse)
                    .with_context(|| format!("{field}.datatype"))?;
                let shape: Vec<i64> = t["shape"]
                    .as_array()
                    .and_then(|a| a.iter().map(serde_json::Value::as_i64).collect())
                    .with_context(|| format!("{field}.shape"))?;
                let raw = mlmesh_tensor::json::to_raw(
                    dt,
                    &flatten(&t["data"]),
                    &format!("{field}.data"),
                )?;
                rq.inputs.push(inf::model_infer_request::InferInputTensor {
                    name: name.clone(),
                    datatype: dt.name().to_owned(),
                    shape,
                    ..Default::default()
                });
                rq.raw_input_contents.push(raw.into());
            }
            Ok(rq)
        })
        .collect()
}

/// `bin` serving `repo` (a model repository) on a free loopback port; its
/// address from the log line that announces it.
fn spawn_inference(
    bin: &Path,
    repo: &Path,
    env: &[(String, String)],
) -> anyhow::Result<(Child, SocketAddr)> {
    let args = [std::ffi::OsString::from("--model-repository"), repo.into()];
    let settings = [
        ("MLMESH_INFERENCE__POLL_INTERVAL_SECS", "0".to_owned()),
        ("MLMESH_INFERENCE__MAX_VALIDATIONS", "0".to_owned()),
    ];
    spawn_service(bin, &args, &settings, env)
}

/// `bin` (a mesh service) on a free loopback port with `args` and
/// `settings`; its address from the log line that announces it.
///
/// The process gets none of this process's `MLMESH_*` settings (a TLS
/// certificate, a registry to follow or a config file meant for the
/// caller must not shape the process under test), only `settings`, `env`
/// (the ONNX Runtime library, for one) and what it needs to be found and
/// read.
pub(crate) fn spawn_service(
    bin: &Path,
    args: &[std::ffi::OsString],
    settings: &[(&str, String)],
    env: &[(String, String)],
) -> anyhow::Result<(Child, SocketAddr)> {
    if !bin.is_file() {
        bail!(
            "{} not found: build the services first (make build)",
            bin.display()
        );
    }
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MLMESH_") {
            cmd.env_remove(&k);
        }
    }
    let mut child = cmd
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("MLMESH_SERVER__METRICS_LISTEN", "off")
        .env("MLMESH_TELEMETRY__LOG_FORMAT", "json")
        .env("MLMESH_TELEMETRY__LOG_LEVEL", "warn,mlmesh_runtime=info")
        .envs(settings.iter().map(|(k, v)| (k, v)))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().context("the service's output")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["message"] == "gRPC server listening"
                && let Some(addr) = v["addr"]
                    .as_str()
                    .and_then(|a| a.parse::<SocketAddr>().ok())
            {
                let _ = tx.send(addr);
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => Ok((child, addr)),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{} did not start listening within 60 s", bin.display())
        }
    }
}
