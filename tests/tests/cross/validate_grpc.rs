//! The validator over gRPC (`mlmesh.validation.v1.Validator`), served by
//! an inference service that knows the registry.

use mlmesh_proto::{
    registry::v1 as rpb,
    validation::v1::{self as vpb, validate_event::Event, validator_client::ValidatorClient},
};
use mlmesh_tests::{Service, TempDir, repo_root};

use crate::registry_cli::RegistryCli;

/// The same job over gRPC (`mlmesh.validation.v1.Validator`, served by an
/// inference service that knows the registry): each check streamed as it
/// is decided, the outcome recorded as evidence; a file suite refused, a
/// second run while one runs refused at once.
#[test]
fn the_validator_runs_over_grpc_and_records_evidence() {
    let _serial = mlmesh_tests::serial();
    let cli = RegistryCli::start("validator-registry");
    let addr = cli.addr();
    let suites = TempDir::new("validator-suite");
    std::fs::copy(
        repo_root().join("tests/data/validation/iris-suite.json"),
        suites.path().join("suite.json"),
    )
    .expect("copy suite");
    let suite_dir = suites.path().display().to_string();
    cli.all_ok(&[
        &["registry", "create", "iris-logreg"][..],
        &[
            "registry",
            "push",
            "iris-logreg",
            "services/inference/models/iris-logreg",
        ],
        &[
            "registry",
            "push",
            "iris-logreg",
            "tests/data/validation/iris-tree",
        ],
        &["registry", "create", "iris-suites"],
        &["registry", "push", "iris-suites", &suite_dir],
    ]);
    let repo = TempDir::new("validator-repo");
    let inference = Service::start(
        "mlmesh-inference",
        &[
            (
                "MLMESH_INFERENCE__MODEL_REPOSITORY",
                repo.path().display().to_string(),
            ),
            ("MLMESH_INFERENCE__REGISTRY_ADDR", addr.clone()),
        ],
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut v = ValidatorClient::connect(format!("http://{}", inference.addr))
            .await
            .expect("connect");
        let request = |suite: &str| vpb::ValidateRequest {
            model: "iris-logreg".into(),
            version: "2".into(),
            suite: suite.into(),
            against: "1".into(),
            record: true,
        };
        let e = v
            .validate(request("tests/data/validation/iris-suite.json"))
            .await
            .expect_err("a file suite");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("suite"), "{e:?}");

        let mut stream = v
            .validate(request("registry://iris-suites@1"))
            .await
            .expect("validate")
            .into_inner();
        let busy = v
            .validate(request("registry://iris-suites@1"))
            .await
            .expect_err("a second run at once");
        assert_eq!(busy.code(), tonic::Code::ResourceExhausted, "{busy:?}");
        let (mut notes, mut checks, mut outcome) = (Vec::new(), Vec::<rpb::Check>::new(), None);
        while let Some(ev) = stream.message().await.expect("event") {
            match ev.event.expect("event") {
                Event::Note(n) => notes.push(n),
                Event::Check(c) => checks.push(c),
                Event::Outcome(o) => outcome = Some(o),
            }
        }
        assert!(notes[0].contains("against v1"), "{notes:?}");
        let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["contract", "accuracy probabilities", "robustness"],
            "{checks:?}"
        );
        let acc = &checks[1];
        assert!(!acc.passed, "{acc:?}");
        let ni = acc.non_inferiority.as_ref().expect("compared with v1");
        assert!(
            ni.against_version == 1 && ni.samples == 150 && ni.upper < 0.0,
            "{ni:?}"
        );
        let o = outcome.expect("an outcome");
        let e = o.evidence.expect("evidence");
        assert!(o.recorded && e.id > 0 && !e.passed, "{e:?}");
        // The registry holds it.
        let mut reg = rpb::registry_client::RegistryClient::connect(format!("http://{addr}"))
            .await
            .expect("registry");
        let listed = reg
            .list_evidence(rpb::ListEvidenceRequest {
                model: "iris-logreg".into(),
                version: 2,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .evidence;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, e.id);
        assert_eq!(listed[0].checks.len(), 3);
    });
}
