//! A registry process and the `mlmesh` CLI pointed at it (run from the
//! repository root), shared by the cross tests of validation, promotion
//! and shadows.

use mlmesh_tests::OutputWithin as _;
use std::process::{Command, Output};

use mlmesh_tests::{Service, TempDir, binary, repo_root};

pub struct RegistryCli {
    pub registry: Service,
    _data: TempDir,
}

impl RegistryCli {
    /// A registry on a data folder of its own (`label` names it).
    pub fn start(label: &str) -> Self {
        let data = TempDir::new(label);
        let registry = Service::start(
            "mlmesh-registry",
            &[(
                "MLMESH_REGISTRY__DATA_DIR",
                data.path().display().to_string(),
            )],
        );
        Self {
            registry,
            _data: data,
        }
    }

    pub fn addr(&self) -> String {
        self.registry.addr.to_string()
    }

    /// `mlmesh <args>` against this registry.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(binary("mlmesh"))
            .current_dir(repo_root())
            .env("MLMESH_REGISTRY", self.addr())
            .args(args)
            .output_within(mlmesh_tests::CHILD_LIMIT)
            .expect("run mlmesh")
    }

    /// `mlmesh <args>`, which must succeed; what it printed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Each command in turn, each of which must succeed.
    pub fn all_ok(&self, commands: &[&[&str]]) {
        for args in commands {
            self.ok(args);
        }
    }
}
