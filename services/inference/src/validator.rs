//! `mlmesh.validation.v1.Validator`: the validation job (`mlmesh-validator`)
//! over gRPC. The candidate and the champion are served by processes of
//! their own, started from this service's binary on loopback ports, never
//! by the models this service serves; at most `inference.max_validations`
//! run at once (more: RESOURCE_EXHAUSTED at once). Each check is streamed
//! as soon as it is decided; the outcome, recorded in the registry when
//! asked, ends the stream.

use std::{path::PathBuf, pin::Pin, sync::Arc};

use futures::Stream;
use mlmesh_proto::{
    registry::v1 as rpb,
    validation::v1::{self as pb, validate_event::Event, validator_server},
};
use mlmesh_registry_client::Client;
use mlmesh_validate::checks::CheckResult;
use mlmesh_validator::{Job, Progress};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Events queued for a slow reader before the run waits for it: a run
/// sends a note, one event per check (a suite has at most 64) and the
/// outcome.
const EVENTS: usize = 128;

/// The Validator service of one inference service.
pub struct ValidatorApi {
    registry: Option<Client>,
    slots: Arc<Semaphore>,
    max: usize,
    job: Job,
}

impl ValidatorApi {
    /// `registry`: the client of `inference.registry_addr` (none: every
    /// call is FAILED_PRECONDITION); `max` validations at once.
    /// `ort_dylib`: the ONNX Runtime library this service loads, given to
    /// the processes it starts.
    pub fn new(
        registry: Option<Client>,
        max: usize,
        inference_bin: PathBuf,
        ort_dylib: &std::path::Path,
    ) -> Self {
        Self {
            registry,
            slots: Arc::new(Semaphore::new(max)),
            max,
            job: Job {
                // Embedding suites need the embedding service's binary;
                // in the images it is beside this one.
                embedding_bin: inference_bin.with_file_name("mlmesh-embedding"),
                inference_bin,
                env: vec![("ORT_DYLIB_PATH".into(), ort_dylib.display().to_string())],
            },
        }
    }
}

fn check_event(c: &CheckResult, against: i64) -> pb::ValidateEvent {
    pb::ValidateEvent {
        event: Some(Event::Check(mlmesh_validator::evidence_check(c, against))),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ValidateEvent, Status>> + Send>>;

/// A job's failure as a status: the registry's own when it refused,
/// otherwise FAILED_PRECONDITION with the whole chain of causes.
fn status_of(e: &anyhow::Error) -> Status {
    if let Some(s) = e.chain().find_map(|c| c.downcast_ref::<Status>()) {
        return Status::new(s.code(), format!("{e:#}"));
    }
    Status::failed_precondition(format!("{e:#}"))
}

#[tonic::async_trait]
impl validator_server::Validator for ValidatorApi {
    type ValidateStream = EventStream;

    async fn validate(
        &self,
        req: Request<pb::ValidateRequest>,
    ) -> Result<Response<Self::ValidateStream>, Status> {
        let r = req.into_inner();
        for (field, value) in [("model", &r.model), ("version", &r.version)] {
            if value.is_empty() {
                return Err(Status::invalid_argument(format!("{field}: required")));
            }
        }
        if mlmesh_registry_client::Source::parse(&r.suite).is_err() {
            return Err(Status::invalid_argument(format!(
                "suite: {:?} is not registry://<model>@<alias|version> (a service reads suites from the registry only)",
                r.suite
            )));
        }
        let Some(registry) = self.registry.clone() else {
            return Err(Status::failed_precondition(
                "this inference service follows no registry: set inference.registry_addr",
            ));
        };
        let permit = Arc::clone(&self.slots).try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{} validation(s) already running, the most at once (inference.max_validations)",
                self.max
            ))
        })?;
        let (tx, rx) = mpsc::channel(EVENTS);
        let job = self.job.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut reg = registry;
            let against = (!r.against.is_empty()).then_some(r.against.as_str());
            let mut champion = 0;
            let progress_tx = tx.clone();
            let mut progress = |p: Progress<'_>| {
                let event = match p {
                    Progress::Note(n) => pb::ValidateEvent {
                        event: Some(Event::Note(n)),
                    },
                    Progress::Champion(v) => {
                        champion = v;
                        return;
                    }
                    Progress::Check(c) => check_event(c, champion),
                };
                // The queue holds a whole run; a reader gone is no error.
                let _ = progress_tx.try_send(Ok(event));
            };
            let run = job
                .run(
                    &mut reg,
                    &r.model,
                    &r.version,
                    &r.suite,
                    against,
                    &mut progress,
                )
                .await;
            let last = match run {
                Err(e) => Err(status_of(&e)),
                Ok(out) if r.record => mlmesh_validator::record(&mut reg, out.evidence)
                    .await
                    .map(|e| outcome(e, true))
                    .map_err(|e| status_of(&e)),
                Ok(out) => Ok(outcome(out.evidence, false)),
            };
            let _ = tx.send(last).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn outcome(evidence: rpb::Evidence, recorded: bool) -> pb::ValidateEvent {
    pb::ValidateEvent {
        event: Some(Event::Outcome(pb::Outcome {
            evidence: Some(evidence),
            recorded,
        })),
    }
}
