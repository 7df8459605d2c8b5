//! The API fuzzed from outside: schemathesis (installed by scripts/setup.sh into `.venv-tests`)
//! reads `/openapi.json` and sends generated requests — valid, invalid and hostile — to every
//! operation with an admin token. No answer may be a server error (a 503 only as
//! `pool_exhausted`), and every answer must match what the document says: status code, content
//! type and body schema. Settings and the extra check: `tests/schemathesis/`.

use std::time::Duration;

use serde_json::json;
use testkit::Child;

use crate::harness::{installed, one};

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_and_no_undocumented_answer() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let st = installed(".venv-tests/bin/st");
    let t = one(&[]).await;
    assert_eq!(t.api.put("/v1/pools/fuzz", json!({})).await.status, 201);
    let d = t
        .api
        .post(
            "/v1/pools/fuzz/tokens",
            json!({"tokens": [{"id": "t1", "secret": "s1"}, {"id": "t2", "secret": "s2"}]}),
        )
        .await;
    assert_eq!(d.status, 201);
    let dir = root.join("tests/schemathesis");
    let auth = format!("Authorization: Bearer {}", t.dep.admin);
    let schema = format!("{}/openapi.json", t.vault.base);
    let mut run = Child::spawn(
        &st,
        &[
            "--config-file",
            dir.join("schemathesis.toml").to_str().unwrap(),
            "run",
            &schema,
            "-H",
            &auth,
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,only_documented_503,schema_valid_requests_are_accepted",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "10",
            // One worker: CPython 3.11 can fail inside schemathesis with several ("AST
            // constructor recursion depth mismatch", a thread-safety bug of `compile`).
            "--workers",
            "1",
            "--seed",
            "1",

        ],
        &[
            ("SCHEMATHESIS_HOOKS", "hooks".into()),
            ("PYTHONPATH", dir.display().to_string()),
            ("NO_COLOR", "1".into()),
        ],
    );
    let (status, run) =
        tokio::task::spawn_blocking(move || (run.wait_exit(Duration::from_secs(600)), run))
            .await
            .unwrap();
    let out = run.output();
    assert!(status.success(), "schemathesis found failures:\n{out}");
    // It really tested every operation of the document.
    let number = |label: &str| -> Option<u64> {
        let line = out.lines().find(|l| l.trim_start().starts_with(label))?;
        let v = line.split(':').nth(1)?.trim();
        v.split('/').next_back()?.trim().parse().ok()
    };
    let (selected, tested) = (number("Selected:"), number("Tested:"));
    assert!(
        selected.is_some_and(|n| n >= 30) && tested == selected,
        "selected {selected:?}, tested {tested:?}:\n{out}"
    );
}
