//! vaultctl as the operator's tool, every command against a running vault (the real binary, with
//! `TV_URL` and `TV_TOKEN`): pools, token deposits from JSON lines (batched, run again safely,
//! resumed), token metadata and transitions, the audit trail, the events stream, client tokens,
//! clear errors and shell completions.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::one;

struct Ctl {
    url: String,
    token: String,
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }
}

impl Ctl {
    /// Run vaultctl with `args` (and `stdin`), off the async runtime.
    async fn run_with(&self, args: &[&str], stdin: Option<String>) -> Out {
        let (url, token) = (self.url.clone(), self.token.clone());
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let mut child = Command::new(testkit::bin_path("vaultctl"))
                .args(&args)
                .env("TV_URL", url)
                .env("TV_TOKEN", token)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut input = child.stdin.take().unwrap();
            if let Some(text) = stdin {
                input.write_all(text.as_bytes()).unwrap();
            }
            drop(input);
            let out = child.wait_with_output().unwrap();
            Out {
                ok: out.status.success(),
                stdout: String::from_utf8_lossy(&out.stdout).into(),
                stderr: String::from_utf8_lossy(&out.stderr).into(),
            }
        })
        .await
        .unwrap()
    }

    async fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, None).await
    }

    async fn ok(&self, args: &[&str]) -> Out {
        let o = self.run(args).await;
        assert!(
            o.ok,
            "vaultctl {args:?} failed:\n{}\n{}",
            o.stdout, o.stderr
        );
        o
    }
}

fn lines(range: std::ops::Range<usize>, with_id: bool) -> String {
    range
        .map(|i| {
            if with_id {
                format!("{{\"id\": \"t{i}\", \"secret\": \"secret-{i}\"}}\n")
            } else {
                format!("{{\"secret\": \"anon-{i}\"}}\n")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_vaultctl_command_works_against_a_running_vault() {
    let t = one(&[]).await;
    let ctl = Ctl {
        url: t.vault.base.clone(),
        token: t.dep.admin.clone(),
    };
    let dir = tempfile::tempdir().unwrap();

    // pool create: flags, and a JSON config with flags over it.
    let o = ctl
        .ok(&[
            "pool",
            "create",
            "ops",
            "--quota-limit",
            "100",
            "--max-leases-per-token",
            "2",
        ])
        .await;
    assert!(o.stdout.contains("quota_limit") && o.stdout.contains("100"));
    let o = ctl
        .ok(&[
            "pool",
            "create",
            "side",
            "--config",
            r#"{"lease_ttl_s": 30, "quarantine_after_strikes": 1}"#,
            "--strategy",
            "pack",
            "--json",
        ])
        .await;
    let cfg = o.json();
    assert_eq!(
        (cfg["lease_ttl_s"].as_u64(), cfg["strategy"].as_str()),
        (Some(30), Some("pack"))
    );

    // token deposit: 250 lines with ids, 50 without, a comment and a blank line, in batches of 100.
    let file = dir.path().join("tokens.jsonl");
    let text = format!(
        "# exported from the old vault\n{}\n{}",
        lines(0..250, true),
        lines(0..50, false)
    );
    std::fs::write(&file, &text).unwrap();
    let f = file.to_str().unwrap();
    let o = ctl
        .ok(&["token", "deposit", "ops", f, "--batch", "100", "--json"])
        .await;
    assert_eq!(o.json()["deposited"], 300, "{}", o.stdout);
    // The same file again: everything is already there, nothing twice.
    let o = ctl
        .ok(&["token", "deposit", "ops", f, "--batch", "100", "--json"])
        .await;
    assert_eq!(
        (
            o.json()["deposited"].as_u64(),
            o.json()["already_there"].as_u64()
        ),
        (Some(0), Some(300))
    );
    // A bad line stops the run with where to resume; fixed, the rest goes in.
    let bad = dir.path().join("bad.jsonl");
    let mut text = lines(300..420, true);
    text.push_str("{not json\n");
    text.push_str(&lines(420..440, true));
    std::fs::write(&bad, &text).unwrap();
    let o = ctl
        .run(&[
            "token",
            "deposit",
            "ops",
            bad.to_str().unwrap(),
            "--batch",
            "50",
        ])
        .await;
    assert!(
        !o.ok && o.stderr.contains("line 121") && o.stderr.contains("--skip 120"),
        "{}",
        o.stderr
    );
    // Resumed past the bad line (skipping it too).
    let o = ctl
        .ok(&[
            "token",
            "deposit",
            "ops",
            bad.to_str().unwrap(),
            "--skip",
            "121",
            "--json",
        ])
        .await;
    assert_eq!(o.json()["deposited"], 20, "{}", o.stdout);
    // From stdin.
    let o = ctl
        .run_with(
            &["token", "deposit", "side", "--json"],
            Some(lines(0..3, true)),
        )
        .await;
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(o.json()["deposited"], 3);
    let status = t.api.get("/v1/pools/ops/status").await.body;
    // 300, the 120 lines before the bad one, the 20 after it.
    assert_eq!(status["tokens"]["active"], 440, "{status}");

    // token list / get / revoke / restore.
    let o = ctl
        .ok(&["token", "list", "ops", "--limit", "5", "--json"])
        .await;
    assert_eq!(o.json().as_array().unwrap().len(), 5);
    let o = ctl.ok(&["token", "list", "side"]).await;
    assert!(
        o.stdout.contains("fingerprint") && o.stdout.contains("t2"),
        "{}",
        o.stdout
    );
    let o = ctl.ok(&["token", "get", "ops", "t1", "--json"]).await;
    assert!(o.json()["fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    let o = ctl
        .ok(&["token", "revoke", "ops", "t1", "--reason", "leaked"])
        .await;
    assert!(o.stdout.contains("revoked"));
    assert_eq!(
        ctl.ok(&["token", "get", "ops", "t1", "--json"])
            .await
            .json()["state"],
        "revoked"
    );
    // A strike quarantines a token of `side` (one strike is enough there); restore brings it back.
    let l = t.api.post("/v1/pools/side/leases", json!({})).await;
    let id = l.str("token_id");
    t.api
        .post(
            &format!("/v1/pools/side/leases/{}/release", l.str("lease_id")),
            json!({"outcome": "forbidden"}),
        )
        .await;
    let o = ctl.ok(&["token", "restore", "side", &id]).await;
    assert!(o.stdout.contains("active"), "{}", o.stdout);

    // pool list / status / freeze / unfreeze / rotate.
    let o = ctl.ok(&["pool", "list"]).await;
    assert!(o.stdout.contains("ops") && o.stdout.contains("side"));
    let o = ctl.ok(&["pool", "list", "--json"]).await;
    assert_eq!(o.json().as_array().unwrap().len(), 2);
    let o = ctl.ok(&["pool", "status", "ops", "--json"]).await;
    assert_eq!(o.json()["tokens"]["revoked"], 1);
    assert!(ctl
        .ok(&["pool", "status", "ops"])
        .await
        .stdout
        .contains("sizing.tokens_needed"));
    ctl.ok(&["pool", "freeze", "ops", "--reason", "incident"])
        .await;
    assert_eq!(t.api.get("/v1/pools/ops/status").await.body["frozen"], true);
    ctl.ok(&["pool", "unfreeze", "ops"]).await;
    assert_eq!(
        t.api.get("/v1/pools/ops/status").await.body["frozen"],
        false
    );
    let o = ctl
        .ok(&[
            "pool", "rotate", "side", "--sunset", "30m", "--reason", "drill",
        ])
        .await;
    assert!(o.stdout.contains("deprecated"), "{}", o.stdout);

    // audit tail: the latest entries, as JSON lines.
    let o = ctl
        .ok(&["audit", "tail", "--pool", "ops", "-n", "3", "--json"])
        .await;
    let entries: Vec<Value> = o
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let trail = t.api.get("/v1/audit?pool=ops&limit=1000").await.body["events"].clone();
    let trail = trail.as_array().unwrap();
    assert!(trail.len() > 3, "{trail:?}");
    assert_eq!(entries, trail[trail.len() - 3..], "{}", o.stdout);
    assert!(
        entries.iter().any(|e| e["action"] == "pool.unfreeze"),
        "{}",
        o.stdout
    );
    let o = ctl.ok(&["audit", "tail", "--pool", "ops"]).await;
    assert!(o.stdout.contains("token.revoke"), "{}", o.stdout);
    // -f: what happens next is printed as it happens.
    let mut follow = Command::new(testkit::bin_path("vaultctl"))
        .args(["audit", "tail", "--pool", "ops", "-n", "1", "-f", "--json"])
        .env("TV_URL", &ctl.url)
        .env("TV_TOKEN", &ctl.token)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The latest entry first, then the freeze made after the follow started.
    let first = rx
        .recv_timeout(crate::harness::PATIENCE)
        .expect("the latest entry");
    assert!(first.contains("\"action\""), "{first}");
    ctl.ok(&["pool", "freeze", "ops", "--reason", "followed"])
        .await;
    let end = Instant::now() + crate::harness::PATIENCE;
    loop {
        let line = rx
            .recv_timeout(end.saturating_duration_since(Instant::now()))
            .expect("the freeze was not followed");
        if line.contains("pool.freeze") && line.contains("followed") {
            break;
        }
    }
    follow.kill().unwrap();
    let _ = follow.wait();
    ctl.ok(&["pool", "unfreeze", "ops"]).await;

    // events tail: prints what happens, and stops after --count.
    let (url, token) = (ctl.url.clone(), ctl.token.clone());
    let tail = std::thread::spawn(move || {
        Command::new(testkit::bin_path("vaultctl"))
            .args(["events", "tail", "--pools", "ops", "--count", "1"])
            .env("TV_URL", url)
            .env("TV_TOKEN", token)
            .output()
            .unwrap()
    });
    // Revoke until the tail has seen one (it may connect after the first).
    let end = Instant::now() + crate::harness::PATIENCE;
    let mut i = 10;
    while !tail.is_finished() {
        assert!(Instant::now() < end, "events tail saw nothing");
        t.api
            .post(&format!("/v1/pools/ops/tokens/t{i}/revoke"), json!({}))
            .await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = tail.join().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && printed.contains("token.revoked"),
        "{printed}"
    );

    // client mint (through the vault) / introspect / revoke.
    let o = ctl
        .ok(&[
            "client", "mint", "--sub", "worker-1", "--scopes", "lease", "--pools", "ops", "--ttl",
            "1h", "--json",
        ])
        .await;
    let minted = o.json();
    let worker = minted["token"].as_str().unwrap().to_string();
    let o = ctl.ok(&["client", "introspect", &worker, "--json"]).await;
    assert_eq!(
        (o.json()["active"].as_bool(), o.json()["sub"].as_str()),
        (Some(true), Some("worker-1"))
    );
    ctl.ok(&["client", "revoke", minted["jti"].as_str().unwrap()])
        .await;
    let o = ctl
        .run_with(&["client", "introspect", "-", "--json"], Some(worker))
        .await;
    assert_eq!(o.json()["active"], false);
    // Offline, with the signing key (no server), and the older spelling of it.
    let key = std::fs::read_dir(t.dep.keys_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "pem"))
        .unwrap();
    for cmd in ["client", "token"] {
        let o = ctl
            .ok(&[
                cmd,
                "mint",
                "--signing-key",
                key.to_str().unwrap(),
                "--sub",
                "offline",
                "--scopes",
                "audit",
            ])
            .await;
        let offline = o.stdout.trim().to_string();
        let o = ctl.ok(&["client", "introspect", &offline, "--json"]).await;
        assert_eq!(o.json()["sub"], "offline");
    }

    // Clear errors: the problem's code and detail, no token, no server.
    let o = ctl.run(&["pool", "status", "nope"]).await;
    assert!(
        !o.ok && o.stderr.contains("pool_not_found (404)"),
        "{}",
        o.stderr
    );
    let anonymous = Ctl {
        url: ctl.url.clone(),
        token: String::new(),
    };
    let o = anonymous.run(&["pool", "list"]).await;
    assert!(!o.ok && o.stderr.contains("TV_TOKEN"), "{}", o.stderr);
    let nowhere = Ctl {
        url: "http://127.0.0.1:9".into(),
        token: "x".into(),
    };
    let o = nowhere.run(&["pool", "list"]).await;
    assert!(
        !o.ok && o.stderr.contains("cannot reach the vault"),
        "{}",
        o.stderr
    );
    let o = ctl.ok(&["completions", "bash"]).await;
    assert!(o.stdout.contains("vaultctl") && o.stdout.contains("deposit"));
}

/// A pool with several quotas: vaultctl shows each one, by name, in pool status, token get and
/// the token list.
#[tokio::test]
async fn vaultctl_shows_every_quota() {
    let t = one(&[]).await;
    let ctl = Ctl {
        url: t.vault.base.clone(),
        token: t.dep.admin.clone(),
    };
    ctl.ok(&[
        "pool",
        "create",
        "llm",
        "--quota-limit",
        "1000",
        "--config",
        r#"{"quotas": [{"name": "rpm", "limit": 60, "window_s": 60, "kind": "sliding"},
                       {"name": "tpm", "limit": 90000, "window_s": 60, "cost": "llm_tokens"}],
            "cost_estimates": {"llm_tokens": 1500}}"#,
    ])
    .await;
    t.api
        .post("/v1/pools/llm/tokens", json!({"id": "k1", "secret": "s1"}))
        .await;
    let l = t.api.post("/v1/pools/llm/leases", json!({})).await;
    assert_eq!(l.status, 201, "{l:?}");
    let lid = l.body["lease_id"].as_str().unwrap();
    let r = t
        .api
        .post(
            &format!("/v1/pools/llm/leases/{lid}/release"),
            json!({"outcome": "ok", "costs": {"llm_tokens": 700}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let status = ctl.ok(&["pool", "status", "llm"]).await.stdout;
    for row in [
        "quotas.default.used_ratio",
        "quotas.rpm.binds",
        "quotas.tpm.cost",
    ] {
        assert!(status.contains(row), "{row} missing from:\n{status}");
    }
    let get = ctl.ok(&["token", "get", "llm", "k1"]).await.stdout;
    assert!(
        get.contains("quotas.tpm.used") && get.contains("700"),
        "{get}"
    );
    let list = ctl.ok(&["token", "list", "llm"]).await.stdout;
    assert!(
        list.contains("1 / 1000, rpm 1 / 60, tpm 700 / 90000"),
        "{list}"
    );
}

/// `vaultctl pipeline create|status|end`, and the shortfall in words.
#[tokio::test]
async fn vaultctl_creates_shows_and_ends_a_pipeline() {
    let t = one(&[]).await;
    let ctl = Ctl {
        url: t.vault.base.clone(),
        token: t.dep.admin.clone(),
    };
    ctl.ok(&["pool", "create", "p", "--quota-limit", "100"])
        .await;
    let toks: Vec<_> = (0..4)
        .map(|i| json!({"id": format!("t{i}"), "secret": format!("s{i}")}))
        .collect();
    t.api
        .post("/v1/pools/p/tokens", json!({ "tokens": toks }))
        .await;
    // 5 requests/s for 40 s at 100 a token: 2 tokens.
    let made = ctl
        .ok(&[
            "pipeline",
            "create",
            "p",
            "job",
            "--rps",
            "5",
            "--duration",
            "40",
        ])
        .await
        .stdout;
    assert!(made.contains("live (2 of 2 tokens"), "{made}");
    let dry = ctl
        .ok(&[
            "--json",
            "pipeline",
            "create",
            "p",
            "other",
            "--tokens",
            "2",
            "--duration",
            "1h",
            "--dry-run",
        ])
        .await
        .json();
    assert_eq!(dry["would_assign"], 2, "{dry}");
    let short = ctl
        .run(&[
            "pipeline",
            "create",
            "p",
            "big",
            "--tokens",
            "3",
            "--duration",
            "1h",
        ])
        .await;
    assert!(!short.ok, "{}", short.stdout);
    assert!(
        short.stderr.contains("insufficient_capacity") && short.stderr.contains("1 missing"),
        "{}",
        short.stderr
    );
    let list = ctl.ok(&["pipeline", "status", "p"]).await.stdout;
    assert!(list.contains("job") && list.contains("live"), "{list}");
    let one = ctl
        .ok(&["--json", "pipeline", "status", "p", "job"])
        .await
        .json();
    assert_eq!(one["tokens"], 2, "{one}");
    let ended = ctl.ok(&["pipeline", "end", "p", "job"]).await.stdout;
    assert!(ended.contains("2 tokens back"), "{ended}");
}

/// A credential revoked by vaultctl, by fingerprint or by one of its tokens, in every pool
/// holding it; `--global` without the global plane is refused with the vault's reason.
#[tokio::test(flavor = "multi_thread")]
async fn vaultctl_revokes_a_credential_in_every_pool() {
    let t = one(&[]).await;
    let ctl = Ctl {
        url: t.vault.base.clone(),
        token: t.dep.admin.clone(),
    };
    for p in ["a", "b"] {
        ctl.ok(&["pool", "create", p]).await;
        t.api
            .post(
                &format!("/v1/pools/{p}/tokens"),
                json!({"tokens": [{"id": "leaked", "secret": "same-secret"}, {"id": "fine", "secret": format!("own-{p}")}]}),
            )
            .await;
    }
    let o = ctl
        .ok(&[
            "token",
            "revoke-credential",
            "a",
            "leaked",
            "--reason",
            "in a log",
        ])
        .await;
    assert!(
        o.stdout.contains("revoked: 2 tokens (a/leaked, b/leaked)"),
        "{}",
        o.stdout
    );
    for p in ["a", "b"] {
        let m = t.api.get(&format!("/v1/pools/{p}/tokens/leaked")).await;
        assert_eq!(m.body["state"], "revoked");
        let m = t.api.get(&format!("/v1/pools/{p}/tokens/fine")).await;
        assert_ne!(m.body["state"], "revoked");
    }
    let fp = vault_core::crypto::Secret::new("own-a").fingerprint();
    let o = ctl
        .ok(&[
            "token",
            "revoke-credential",
            "--fingerprint",
            &fp,
            "--reason",
            "x",
        ])
        .await;
    assert!(
        o.stdout.contains("revoked: 1 tokens (a/fine)"),
        "{}",
        o.stdout
    );
    let o = ctl.run(&["pool", "freeze", "a", "--global"]).await;
    assert!(
        !o.ok && o.stderr.contains("TV_GLOBAL_REDIS_URL"),
        "{}",
        o.stderr
    );
}
