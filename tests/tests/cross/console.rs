//! The console in a real browser: headless Chromium driven by Selenium
//! (`tests/data/console_check.py`) against the real mesh — embedding,
//! vector-search and a gateway with API keys, served under an ingress-like
//! path prefix (`console.path_prefix`). Signed out, the page asks for a
//! key; a key without the `observe` scope is refused in plain words; with
//! it the overview shows every service live while calls flow; the metrics
//! page draws its charts and offers the PromQL; the keyboard alone gets
//! there; no page logs a console error. Screenshots go to a temp folder
//! (printed), for a person to look at.
//!
//! `make test` installs the browser (`scripts/install-browser.sh`); without
//! it the test says so and passes without running.

use mlmesh_tests::OutputWithin as _;
use std::{
    path::PathBuf,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use mlmesh_tests::{HttpClient, MeshProcesses, TempDir, repo_root};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const OBSERVER: &str = "mlm_console_observer_5b1e";
const WEAK: &str = "mlm_console_search_only_93ad";
const CALLER: &str = "mlm_console_caller_c04f";

pub(crate) fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
}

/// Selenium's site and the browser, or `None` with the reason printed.
pub(crate) fn browser() -> Option<(PathBuf, PathBuf, PathBuf)> {
    let site = repo_root().join(".cache/mlmesh/py/browser");
    let (chromium, driver) = (which("chromium"), which("chromedriver"));
    match (site.join(".mlmesh-stamp").is_file(), chromium, driver) {
        (true, Some(c), Some(d)) => Some((site, c, d)),
        _ => {
            eprintln!(
                "skipped: the browser test needs chromium, chromedriver and Selenium in {}; \
                 run scripts/install-browser.sh (make test does)",
                site.display()
            );
            None
        }
    }
}

#[test]
fn the_console_works_in_a_real_browser() {
    let _serial = mlmesh_tests::serial();
    let Some((site, chromium, driver)) = browser() else {
        return;
    };
    let dir = TempDir::new("console");
    let sha = |k: &str| hex::encode(Sha256::digest(k.as_bytes()));
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        format!(
            "[[keys]]\nname = \"ops\"\nsha256 = \"{}\"\nscopes = [\"observe\"]\n\n\
             [[keys]]\nname = \"reader\"\nsha256 = \"{}\"\nscopes = [\"search\"]\n\n\
             [[keys]]\nname = \"app\"\nsha256 = \"{}\"\nscopes = [\"embed\"]\n",
            sha(OBSERVER),
            sha(WEAK),
            sha(CALLER),
        ),
    )
    .expect("keys file");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nkeys_file = \"{}\"\n\n[console]\npath_prefix = \"/mlmesh\"\nsample_interval_ms = 500\n",
            keys.display()
        ),
    )
    .expect("settings");
    let mesh = MeshProcesses::start_with(&[], &[("MLMESH_CONFIG", config.display().to_string())]);
    let http = mesh.gateway.http_addr.expect("http");

    // Calls flowing meanwhile, so rates are not zero.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut c = HttpClient::new(http);
            let body = json!({"input": "the console shows this call", "model": "all-MiniLM-L6-v2"})
                .to_string();
            let auth = format!("Bearer {CALLER}");
            let mut ok = 0u32;
            while !stop.load(Ordering::Relaxed) {
                if let Ok((200, _)) = c.request(
                    "POST",
                    "/mlmesh/v1/embeddings",
                    &[
                        ("content-type", "application/json"),
                        ("authorization", &auth),
                    ],
                    body.as_bytes(),
                ) {
                    ok += 1;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            ok
        })
    };

    let shots = std::env::temp_dir().join(format!("mlmesh-console-shots-{}", std::process::id()));
    let cfg = dir.path().join("check.json");
    std::fs::write(
        &cfg,
        json!({
            "url": format!("http://{http}/mlmesh/ui/"),
            "key": OBSERVER,
            "weak_key": WEAK,
            "shots": shots,
            "chromium": chromium,
            "chromedriver": driver,
        })
        .to_string(),
    )
    .expect("config");
    let out = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(repo_root().join("tests/data/console_check.py"))
        .arg(&cfg)
        .env("PYTHONPATH", &site)
        .env("SE_OFFLINE", "true")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .output_within(mlmesh_tests::CHILD_LIMIT)
        .expect("python3");
    stop.store(true, Ordering::Relaxed);
    let calls = traffic.join().expect("traffic");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let result: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON from the check ({e}); stderr:\n{stderr}"));
    println!(
        "screenshots: {}\nfirst contentful paint: {} ms\n{}",
        shots.display(),
        result["first_paint_ms"],
        serde_json::to_string_pretty(&result["checks"]).unwrap_or_default()
    );
    assert!(
        result.get("exception").is_none(),
        "the check failed: {}\nbrowser log: {}\nearlier: {} {}",
        result["exception"],
        result["log_at_failure"],
        result["signed_out_log"],
        result["refused_log"]
    );
    assert!(calls > 0, "the traffic thread made no call");
    let checks = result["checks"].as_object().expect("checks");
    for name in [
        "signed_out_asks_for_key",
        "missing_scope_is_refused",
        "overview_lists_services",
        "every_replica_serving",
        "overview_updates_live",
        "gateway_rate_shown",
        "gateway_errors_zero",
        "overview_without_console_errors",
        "first_tab_is_skip_link",
        "skip_link_moves_focus_to_main",
        "metrics_link_reachable_by_tab",
        "metrics_charts_drawn",
        "metrics_page_is_current",
        "promql_offered",
        "metrics_without_console_errors",
        "controls_have_names",
    ] {
        let c = &checks
            .get(name)
            .unwrap_or_else(|| panic!("check {name} did not run"));
        assert_eq!(c["ok"], true, "{name}: saw {}", c["seen"]);
    }
    mesh.stop();
}
