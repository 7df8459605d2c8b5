//! The Prometheus alert rules and the Grafana dashboard in `deploy/`: the rules pass
//! `promtool check rules` and their unit tests (`promtool test rules`), every dashboard query is
//! valid PromQL, and every metric either names is one the vault exports.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// promtool: the one scripts/setup.sh put in `.tools/bin`, else the one on PATH.
fn promtool() -> PathBuf {
    let local = root().join(".tools/bin/promtool");
    if local.is_file() {
        return local;
    }
    let on_path = Command::new("promtool").arg("--version").output();
    assert!(
        on_path.is_ok_and(|o| o.status.success()),
        "promtool is missing: run scripts/setup.sh"
    );
    PathBuf::from("promtool")
}

fn run(args: &[&str], dir: &Path) -> String {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// Every `expr` of the dashboard's panels.
fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("deploy/grafana/tokenvault.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    exprs
}

/// The `tv_*` metric names a text refers to (histogram series names map to their metric).
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("tv_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        // `tv_pool_*` in a comment is a family, not a name.
        if !base.ends_with('_') {
            names.push(base.to_string());
        }
        rest = &tail[end..];
    }
    names.sort();
    names.dedup();
    names
}

/// The Rust sources of the workspace, concatenated.
fn sources() -> String {
    fn walk(dir: &Path, out: &mut String) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push_str(&std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let mut s = String::new();
    walk(&root().join("crates"), &mut s);
    s
}

#[test]
fn the_alert_rules_are_valid_and_their_unit_tests_pass() {
    let dir = root().join("deploy/prometheus");
    let checked = run(&["check", "rules", "alerts.yml"], &dir);
    assert!(checked.contains("SUCCESS: 13 rules found"), "{checked}");
    let tested = run(&["test", "rules", "alerts_test.yml"], &dir);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 15, "{exprs:?}");
    // promtool parses rules: make each query a recording rule (the `$pool` variable becomes a
    // regex, as Grafana substitutes it).
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e.replace("$pool", ".*");
        let quoted = serde_json::to_string(&e).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard:q{i}\n        expr: {quoted}\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dashboard.yml"), rules).unwrap();
    let checked = run(&["check", "rules", "dashboard.yml"], dir.path());
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{checked}"
    );
}

#[test]
fn every_metric_the_rules_and_dashboard_use_is_exported() {
    let src = sources();
    let alerts = std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml")).unwrap();
    let used = metric_names(&format!("{alerts}\n{}", dashboard_exprs().join("\n")));
    assert!(used.len() >= 12, "{used:?}");
    for name in used {
        assert!(
            src.contains(&format!("\"{name}\"")),
            "{name} is used by deploy/ but no crate exports it"
        );
    }
}
