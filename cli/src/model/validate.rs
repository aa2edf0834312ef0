//! `mlmesh model validate <model> <version|@alias> --suite FILE [--against
//! @alias|N]`: the validator as a job. Each version is pulled from the
//! registry (verified) into a model repository of its own and served by
//! the real inference service binary on a loopback port of its own, so
//! the candidate runs exactly as it would in production and nothing that
//! serves traffic is touched. Every example of the suite goes to both;
//! the answers are judged by `mlmesh_validate` (contract, tolerances,
//! accuracy with a paired interval against the champion), robustness
//! probes generated from the candidate's signature run against it
//! (`robustness`), and each check is printed as it is decided. The exit status is 1 when any check fails.

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
use clap::Args;
use mlmesh_proto::{
    inference::{self as inf, grpc_inference_service_client::GrpcInferenceServiceClient},
    registry::v1 as pb,
};
use mlmesh_registry_client::{Selector, layout::Layout};
use mlmesh_runtime::client::{H2Channel, H2Settings};
use mlmesh_tensor::{DataType, json::flatten};
use mlmesh_validate::{
    checks::{Answers, CheckResult, contract, evaluate},
    suite::{Signature, Suite, TensorSpec},
};

#[derive(Args, Debug)]
pub struct Validate {
    /// The registered model.
    model: String,
    /// The candidate: a version number or @alias.
    version: String,
    /// The suite: a JSON file, or `registry://<model>@<alias|version>`, a
    /// registry version holding `suite.json` (content-addressed, reusable
    /// across the versions it validates).
    #[arg(long)]
    suite: String,
    /// Also write the outcome as a JSON record (versions and manifest
    /// digests, the suite's digest, the runner, every check with its
    /// figures) to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// The champion to compare with: a version number or @alias.
    #[arg(long)]
    against: Option<String>,
    /// Store the outcome in the registry as evidence of the version (what
    /// alias policies demand before a move).
    #[arg(long)]
    record: bool,
    #[command(flatten)]
    conn: crate::registry::RegistryConn,
}

/// A finished run: every check, and the evidence record it makes.
pub struct Outcome {
    pub results: Vec<CheckResult>,
    pub evidence: pb::Evidence,
    pub report: serde_json::Value,
}

pub async fn validate(v: Validate) -> anyhow::Result<()> {
    let mut reg = v.conn.connect()?;
    let out = run(
        &mut reg,
        &v.model,
        &v.version,
        &v.suite,
        v.against.as_deref(),
    )
    .await?;
    if let Some(path) = &v.report {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&out.report)?)
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if v.record {
        let e = record(&mut reg, out.evidence.clone()).await?;
        println!(
            "recorded as evidence {} of {} v{}",
            e.id, e.model, e.version
        );
    }
    verdict(&out.results)
}

/// Stores `e` in the registry.
pub async fn record(
    reg: &mut mlmesh_registry_client::Client,
    e: pb::Evidence,
) -> anyhow::Result<pb::Evidence> {
    Ok(reg
        .record_evidence(pb::RecordEvidenceRequest { evidence: Some(e) })
        .await
        .context("recording the evidence")?
        .into_inner())
}

/// Ok when every check passed; otherwise the failed checks, named.
pub fn verdict(results: &[CheckResult]) -> anyhow::Result<()> {
    let failed: Vec<&str> = results
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.check.as_str())
        .collect();
    if failed.is_empty() {
        println!("passed: {} checks", results.len());
        Ok(())
    } else {
        bail!(
            "validation failed: {} of {} checks ({})",
            failed.len(),
            results.len(),
            failed.join(", ")
        )
    }
}

/// Runs `suite` against `version` of `model` (and `against`), printing each
/// check as it is decided.
pub async fn run(
    reg: &mut mlmesh_registry_client::Client,
    model: &str,
    version: &str,
    suite_source: &str,
    against: Option<&str>,
) -> anyhow::Result<Outcome> {
    let started = std::time::Instant::now();
    let started_ms = now_ms();
    let work = tempdir()?;
    let (bytes, suite_digest) =
        super::suite::fetch(reg, suite_source, &work.0.join("suite")).await?;
    let suite = Suite::parse(&bytes)?;
    let candidate = Served::start(reg, model, version, &work.0.join("candidate")).await?;
    let champion = match against {
        Some(a) => Some(Served::start(reg, model, a, &work.0.join("champion")).await?),
        None => None,
    };
    println!(
        "validating {} v{} with suite {:?} ({} examples){}",
        model,
        candidate.version.version,
        suite.name,
        suite.examples.len(),
        champion
            .as_ref()
            .map(|c| format!(" against v{}", c.version.version))
            .unwrap_or_default()
    );
    let mut results = vec![contract(
        suite.signature.as_ref(),
        &candidate.signature().await?,
        match &champion {
            Some(c) => Some(c.signature().await?),
            None => None,
        }
        .as_ref(),
    )];
    print_check(&results[0]);
    let requests = requests(&suite, model)?;
    let ours = candidate.answers(&requests).await?;
    let theirs = match &champion {
        Some(c) => Some(c.answers(&requests).await?),
        None => None,
    };
    let report = evaluate(&suite, &ours, theirs.as_ref())?;
    for c in &report.checks {
        print_check(c);
    }
    results.extend(report.checks);
    let robust = super::robustness::probe(
        &mut candidate.client.clone(),
        model,
        candidate.max_batch().await?,
        &requests,
        &ours,
    )
    .await;
    print_check(&robust);
    results.push(robust);
    if let Some(b) = &suite.budgets {
        for c in super::budgets::measure(b, &candidate, champion.as_ref(), &requests).await {
            print_check(&c);
            results.push(c);
        }
    }
    let runner = runner();
    let evidence = pb::Evidence {
        model: model.to_owned(),
        version: candidate.version.version,
        manifest_digest: candidate.version.manifest_digest.clone(),
        suite_digest: suite_digest.clone(),
        suite_source: suite_source.to_owned(),
        passed: results.iter().all(|c| c.passed),
        against_version: champion.as_ref().map_or(0, |c| c.version.version),
        against_manifest_digest: champion
            .as_ref()
            .map(|c| c.version.manifest_digest.clone())
            .unwrap_or_default(),
        checks: results
            .iter()
            .map(|c| evidence_check(c, champion.as_ref().map_or(0, |c| c.version.version)))
            .collect(),
        runner: Some(runner.clone()),
        recorded_at: None,
        duration_ms: started.elapsed().as_millis() as u64,
        kind: "validation".into(),
        id: 0,
    };
    let report = serde_json::json!({
        "model": model,
        "candidate": version_json(&candidate.version),
        "champion": champion.as_ref().map(|c| version_json(&c.version)),
        "suite": {"name": suite.name, "source": suite_source, "digest": suite_digest, "examples": suite.examples.len()},
        "runner": {"cpu": runner.cpu, "cores": runner.cores, "os": runner.os, "mlmesh": runner.mlmesh},
        "checks": results.iter().map(check_json).collect::<Vec<_>>(),
        "passed": evidence.passed,
        "started_ms": started_ms,
        "finished_ms": now_ms(),
    });
    Ok(Outcome {
        results,
        evidence,
        report,
    })
}

/// A check as the registry keeps it (bounded as the registry demands:
/// finite figures, text within its limit).
fn evidence_check(c: &CheckResult, against: i64) -> pb::Check {
    let mut detail = c.detail.clone();
    if detail.len() > 4000 {
        let mut end = 4000;
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        detail.truncate(end);
    }
    pb::Check {
        name: c.check.clone(),
        passed: c.passed,
        detail,
        figures: c
            .figures
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        non_inferiority: c
            .interval
            .filter(|_| against != 0)
            .map(|i| pb::NonInferiority {
                metric: c.check.clone(),
                against_version: against,
                difference: i.estimate,
                lower: i.low,
                upper: i.high,
                confidence: i.confidence,
                margin: c.margin.unwrap_or(0.0),
                samples: i.n as u64,
                detectable: c.min_detectable.filter(|m| m.is_finite()).unwrap_or(0.0),
                mcnemar_p: c.mcnemar.map_or(-1.0, |m| m.p_value),
            }),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn version_json(v: &pb::Version) -> serde_json::Value {
    serde_json::json!({"version": v.version, "manifest_digest": v.manifest_digest})
}

/// Where the validation ran: what makes its figures comparable.
pub fn runner() -> pb::Runner {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_default();
    pb::Runner {
        cpu,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get() as u32),
        os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        onnxruntime: String::new(),
        mlmesh: env!("CARGO_PKG_VERSION").to_owned(),
        host: std::env::var("HOSTNAME").unwrap_or_default(),
    }
}

fn check_json(c: &CheckResult) -> serde_json::Value {
    serde_json::json!({
        "check": c.check,
        "passed": c.passed,
        "detail": c.detail,
        "figures": c.figures,
        "interval": c.interval.map(|i| serde_json::json!({
            "estimate": i.estimate, "low": i.low, "high": i.high, "confidence": i.confidence, "n": i.n,
        })),
        "mcnemar": c.mcnemar.map(|m| serde_json::json!({"b": m.b, "c": m.c, "p_value": m.p_value})),
        "min_detectable": c.min_detectable,
    })
}

fn print_check(c: &CheckResult) {
    println!(
        "{} {}: {}",
        if c.passed { "PASS" } else { "FAIL" },
        c.check,
        c.detail
    );
}

/// A folder removed when dropped.
struct TempDir(PathBuf);

fn tempdir() -> anyhow::Result<TempDir> {
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
    async fn start(
        reg: &mut mlmesh_registry_client::Client,
        model: &str,
        which: &str,
        repo: &Path,
    ) -> anyhow::Result<Self> {
        let selector = Selector::from_arg(which).map_err(anyhow::Error::msg)?;
        let version = reg
            .get_version(pb::GetVersionRequest {
                model: model.to_owned(),
                selector: Some(selector.to_get()),
            })
            .await
            .with_context(|| format!("{model} {which}"))?
            .into_inner();
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
        let (child, addr) = spawn_inference(repo)?;
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
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }

    fn model(&self) -> &str {
        &self.version.model
    }

    async fn signature(&self) -> anyhow::Result<Signature> {
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
    async fn max_batch(&self) -> anyhow::Result<i32> {
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
    async fn answers(&self, requests: &[inf::ModelInferRequest]) -> anyhow::Result<Answers> {
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
                answer.insert(o.name.clone(), super::numbers(o, raw)?);
            }
            out.push(answer);
        }
        Ok(out)
    }
}

/// The suite's examples as inference requests for `model` (every input
/// raw), each field named in errors.
fn requests(suite: &Suite, model: &str) -> anyhow::Result<Vec<inf::ModelInferRequest>> {
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

/// The inference service binary beside this one, serving `repo` on a free
/// loopback port; its address from the log line that announces it.
fn spawn_inference(repo: &Path) -> anyhow::Result<(Child, SocketAddr)> {
    let exe = std::env::current_exe().context("locating the mlmesh binary")?;
    let bin = exe.with_file_name("mlmesh-inference");
    if !bin.is_file() {
        bail!(
            "{} not found: build the services first (make build)",
            bin.display()
        );
    }
    let mut child = Command::new(&bin)
        .args(["--listen", "127.0.0.1:0"])
        .arg("--model-repository")
        .arg(repo)
        .env("MLMESH_SERVER__METRICS_LISTEN", "off")
        .env("MLMESH_TELEMETRY__LOG_FORMAT", "json")
        .env("MLMESH_INFERENCE__POLL_INTERVAL_SECS", "0")
        .env_remove("MLMESH_INFERENCE__REGISTRY_MODELS")
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
