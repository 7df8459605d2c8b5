//! The Python-driven tests (clients/python/tests, pytest): they start a redis-server and the
//! vault-api binary of this build themselves, plus a target API and a forward proxy, and run the
//! sync and async clients, the lease-bound HTTP clients, the events stream, a real Scrapy crawl,
//! and the dashboard in headless chromium (selenium) against them. scripts/setup.sh installs the
//! package, its pinned test requirements into `.venv-tests`, and chromium with its driver.

use std::time::Duration;

use testkit::Child;

use crate::harness::installed;

/// How many tests clients/python/tests holds (with their parameters): a test that silently stops
/// being collected fails this one.
const PYTHON_TESTS: u32 = 47;

#[test]
fn the_python_client_scrapy_middleware_and_dashboard_pass_their_tests() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let pytest = installed(".venv-tests/bin/pytest");
    let bins = testkit::bin_path("vault-api");
    let bin_dir = bins.parent().unwrap();
    let tests = root.join("clients/python/tests");
    let mut run = Child::spawn(
        &pytest,
        &[
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=-ra",
            tests.to_str().unwrap(),
        ],
        &[
            ("TV_BIN_DIR", bin_dir.display().to_string()),
            ("PYTHONDONTWRITEBYTECODE", "1".into()),
        ],
    );
    let status = run.wait_exit(Duration::from_secs(600));
    let out = run.output();
    assert!(status.success(), "pytest failed:\n{out}");
    // Every test ran: none was skipped or deselected on the way.
    let passed = out
        .lines()
        .rev()
        .find_map(|l| {
            let l = l.trim_matches(|c| c == '=' || c == ' ');
            l.split_once(" passed")
                .and_then(|(n, _)| n.rsplit(' ').next()?.parse::<u32>().ok())
        })
        .unwrap_or(0);
    assert!(
        passed == PYTHON_TESTS && !out.contains("skipped"),
        "expected all {PYTHON_TESTS} Python tests to pass, {passed} did:\n{out}"
    );
}

/// The package is typed (`py.typed`), and its types hold: `mypy --strict` finds nothing.
#[test]
fn the_python_client_passes_mypy_strict() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mypy = installed(".venv-tests/bin/mypy");
    let out = std::process::Command::new(mypy)
        .args(["--strict", "--no-incremental", "src/tokenvault"])
        .current_dir(root.join("clients/python"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("no issues found"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
