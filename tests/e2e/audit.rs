//! The audit trail, and the promise that secrets appear nowhere but in the lease answer: a whole
//! scenario runs with every process at RUST_LOG=trace, then logs, the audit trail, Redis and
//! every API answer other than leases are searched for the secrets.

use serde_json::{json, Value};
use vault_core::auth::Scope;

use crate::fakes::{Fake, Mode};
use crate::harness::{one, wait_json, Api};

fn actions(events: &Value) -> Vec<String> {
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn audit_trail_records_actions_and_outcomes() {
    let t = one(&[]).await;
    let api = &t.api;
    api.put(
        "/v1/pools/p",
        json!({"quarantine_after_strikes": 1, "max_leases_per_token": 5}),
    )
    .await;
    api.post(
        "/v1/pools/p/tokens",
        json!({"tokens": [
        {"id": "a", "secret": "TOPSECRET-a"}, {"id": "b", "secret": "TOPSECRET-b"},
        {"id": "x", "secret": "TOPSECRET-x", "refresh": {"kind": "external"}}]}),
    )
    .await;
    api.post("/v1/pools/p/tokens/b/revoke", json!({"reason": "leaked"}))
        .await;
    api.post("/v1/pools/p/freeze", json!({"reason": "drill"}))
        .await;
    api.post("/v1/pools/p/unfreeze", json!({})).await;
    let worker = Api::new(&api.base).with_token(&t.dep.token("scraper-1", &[Scope::Lease], None));
    let l = worker.post("/v1/pools/p/leases", json!({})).await;
    worker
        .post(
            &format!("/v1/pools/p/leases/{}/release", l.str("lease_id")),
            json!({"outcome": "ok"}),
        )
        .await;
    let l = worker.post("/v1/pools/p/leases", json!({})).await;
    worker
        .post(
            &format!("/v1/pools/p/leases/{}/release", l.str("lease_id")),
            json!({"outcome": "forbidden", "detail": "403 from target"}),
        )
        .await;
    api.post("/v1/pools/p/tokens/x/refresh", json!({})).await;
    let j = api.post("/v1/pools/p/refresh-jobs/claim", json!({})).await;
    api.post(
        &format!("/v1/pools/p/refresh-jobs/{}/complete", j.str("job_id")),
        json!({"secret": "TOPSECRET-new"}),
    )
    .await;
    let m = api
        .post("/v1/clients", json!({"sub": "bot", "scopes": ["lease"]}))
        .await;
    api.post("/v1/clients/revoke", json!({"jti": m.str("jti")}))
        .await;

    let auditor = Api::new(&api.base).with_token(&t.dep.token("auditor", &[Scope::Audit], None));
    let trail = auditor.get("/v1/audit?pool=p").await;
    assert_eq!(trail.status, 200, "{trail:?}");
    let got = actions(&trail.body);
    for want in [
        "pool.create",
        "token.deposit",
        "token.revoke",
        "pool.freeze",
        "pool.unfreeze",
        "lease.outcome",
        "token.quarantine",
        "token.refresh_requested",
        "token.refresh",
    ] {
        assert!(
            got.contains(&want.to_string()),
            "{want} missing from {got:?}"
        );
    }
    assert_eq!(
        got.iter().filter(|a| *a == "lease.outcome").count(),
        1,
        "a plain ok is not audited"
    );
    let events = trail.body["events"].as_array().unwrap();
    let outcome = events
        .iter()
        .find(|e| e["action"] == "lease.outcome")
        .unwrap();
    assert_eq!(
        (outcome["actor"].as_str(), outcome["outcome"].as_str()),
        (Some("scraper-1"), Some("forbidden"))
    );
    assert!(outcome["lease_id"].is_string() && outcome["at"].is_string());
    let deposit = events
        .iter()
        .find(|e| e["action"] == "token.deposit")
        .unwrap();
    assert_eq!(deposit["actor"], "test-admin");
    assert!(deposit["detail"].as_str().unwrap().starts_with("sha256:"));
    let global = actions(&auditor.get("/v1/audit").await.body);
    assert_eq!(global, ["client.mint", "client.revoke"]);
    let all = format!("{} {}", trail.body, auditor.get("/v1/audit").await.body);
    assert!(
        !all.contains("TOPSECRET") && !all.contains(&m.str("token")),
        "no secret in the audit trail"
    );

    // Pages, filters and permissions.
    let page = auditor.get("/v1/audit?pool=p&limit=2").await;
    assert_eq!(page.body["events"].as_array().unwrap().len(), 2);
    let next = page.str("next");
    let page2 = auditor
        .get(&format!("/v1/audit?pool=p&limit=2&after={next}"))
        .await;
    assert_ne!(page2.body["events"][0]["id"], page.body["events"][1]["id"]);
    // newest: the latest entries, still oldest first, in one read.
    let ids = |page: &Value| -> Vec<Value> {
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].clone())
            .collect()
    };
    let whole = ids(&trail.body);
    assert!(whole.len() > 3 && whole.len() < 100, "{whole:?}");
    let latest = auditor.get("/v1/audit?pool=p&newest=true&limit=3").await;
    assert_eq!(ids(&latest.body), whole[whole.len() - 3..]);
    assert_eq!(latest.body["next"], Value::Null);
    let first_id = whole[0].as_str().unwrap();
    let after_first = auditor
        .get(&format!(
            "/v1/audit?pool=p&newest=true&limit=1000&after={first_id}"
        ))
        .await;
    assert_eq!(ids(&after_first.body), whole[1..]);
    auditor
        .get("/v1/audit?pool=p&newest=maybe")
        .await
        .problem(400, "invalid_request");
    assert_eq!(
        auditor
            .get("/v1/audit?pool=p&since=2099-01-01T00:00:00Z")
            .await
            .body["events"],
        json!([])
    );
    auditor
        .get("/v1/audit?pool=p&after=garbage")
        .await
        .problem(400, "invalid_request");
    worker
        .get("/v1/audit?pool=p")
        .await
        .problem(403, "forbidden");
    let limited = Api::new(&api.base).with_token(&t.dep.token(
        "a2",
        &[Scope::Audit],
        Some(vec!["other".into()]),
    ));
    limited
        .get("/v1/audit?pool=p")
        .await
        .problem(403, "forbidden");
    limited.get("/v1/audit").await.problem(403, "forbidden");
}

#[tokio::test]
async fn no_secret_in_logs_audit_redis_or_answers_at_trace_level() {
    let idp = Fake::start(Mode::Ok {
        rotate: true,
        expires_in: 3600,
    })
    .await;
    let t = one(&[("RUST_LOG", "trace")]).await;
    let refresher = t.dep.refresher(&[("RUST_LOG", "trace")]);
    let janitor = t.dep.janitor_with(100, &[("RUST_LOG", "trace")]);
    let api = &t.api;
    let mut answers = vec![];
    let mut keep = |a: crate::harness::Answer| answers.push(a.body.to_string());
    keep(api.put("/v1/pools/p", json!({})).await);
    keep(api.post("/v1/pools/p/tokens", json!({"tokens": [
        {"id": "r", "secret": "TOPSECRET-access-1", "refresh": {"kind": "oauth2_refresh_token", "token_url": idp.url("/token"),
            "refresh_token": "TOPSECRET-refresh-1", "client_id": "cid", "client_secret": "TOPSECRET-client-1"}},
        {"id": "e", "secret": "TOPSECRET-access-2", "refresh": {"kind": "external"}},
        {"id": "h", "secret": "TOPSECRET-access-3"}]})).await);
    // A worker leases, gets a 401 and rotates; the refresher refreshes through the token endpoint.
    let worker_token = t.dep.token("w", &[Scope::Lease], None);
    let worker = Api::new(&api.base).with_token(&worker_token);
    let l = worker.post("/v1/pools/p/leases", json!({})).await;
    let r = worker
        .post(
            &format!("/v1/pools/p/leases/{}/rotate", l.str("lease_id")),
            json!({"outcome": "unauthorized", "detail": "401"}),
        )
        .await;
    keep(
        worker
            .post(
                &format!("/v1/pools/p/leases/{}/release", r.str("lease_id")),
                json!({"outcome": "rate_limited", "retry_after_s": 1}),
            )
            .await,
    );
    api.post("/v1/pools/p/tokens/r/refresh", json!({})).await;
    wait_json(api, "/v1/pools/p/tokens/r", crate::harness::PATIENCE, |m| {
        m["generation"].as_u64() >= Some(2)
    })
    .await;
    // An external worker completes a job with a new secret.
    keep(api.post("/v1/pools/p/tokens/e/refresh", json!({})).await);
    let j = api.post("/v1/pools/p/refresh-jobs/claim", json!({})).await;
    keep(
        api.post(
            &format!("/v1/pools/p/refresh-jobs/{}/complete", j.str("job_id")),
            json!({"secret": "TOPSECRET-access-4", "refresh_token": "TOPSECRET-refresh-2"}),
        )
        .await,
    );
    keep(j);
    let m = api
        .post("/v1/clients", json!({"sub": "bot", "scopes": ["lease"]}))
        .await;
    keep(
        api.post("/v1/introspect", json!({"token": m.str("token")}))
            .await,
    );
    keep(api.get("/v1/pools/p/tokens").await);
    for id in ["r", "e", "h"] {
        keep(api.get(&format!("/v1/pools/p/tokens/{id}")).await);
    }
    keep(api.get("/v1/pools/p/status").await);
    keep(api.get("/v1/pools").await);
    keep(api.get("/v1/audit?pool=p").await);
    keep(api.get("/v1/audit").await);
    // Bad input echoing a secret back must not either.
    keep(
        api.post(
            "/v1/pools/p/tokens",
            json!({"secret": "TOPSECRET-bad", "unknown": 1}),
        )
        .await,
    );

    let mut secrets: Vec<String> = vec![
        "TOPSECRET".into(),
        worker_token.clone(),
        t.dep.admin.clone(),
        m.str("token"),
        t.dep.master_key.clone(),
    ];
    secrets.extend(idp.issued());
    let logs = format!(
        "{}\n{}\n{}",
        t.vault.child.output(),
        refresher.output(),
        janitor.output()
    );
    let (traces, debugs) = (logs.matches("TRACE").count(), logs.matches("DEBUG").count());
    assert!(
        traces > 0 && debugs >= 20,
        "verbose logging was on: {traces} TRACE, {debugs} DEBUG lines"
    );
    let redis_dump = t.redis.cli(&["--no-raw", "KEYS", "*"]);
    for s in &secrets {
        for (place, text) in [
            ("logs", &logs),
            ("answers", &answers.join("\n")),
            ("redis keys", &redis_dump),
        ] {
            if let Some(i) = text.find(s.as_str()) {
                let from = i.saturating_sub(200);
                panic!(
                    "a secret appears in the {place}: ...{}...",
                    &text[from..(i + 40).min(text.len())]
                );
            }
        }
    }
}

#[tokio::test]
async fn janitor_sunset_revocations_are_audited() {
    let t = one(&[]).await;
    t.api.put("/v1/pools/p", json!({})).await;
    t.api
        .post("/v1/pools/p/tokens", json!({"id": "old", "secret": "s"}))
        .await;
    let sunset = crate::harness::now_ms() + 300;
    t.api
        .post(
            "/v1/pools/p/tokens/old/deprecate",
            json!({"sunset_at": sunset}),
        )
        .await;
    let _janitor = t.dep.janitor(100);
    wait_json(
        &t.api,
        "/v1/pools/p/tokens/old",
        crate::harness::PATIENCE,
        |m| m["state"] == "revoked",
    )
    .await;
    // The entry is written right after the state changes (by the same operation, in a call of
    // its own): wait for it too.
    let revoke = |trail: &serde_json::Value| {
        trail["events"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["action"] == "token.revoke").cloned())
    };
    let trail = wait_json(
        &t.api,
        "/v1/audit?pool=p",
        crate::harness::PATIENCE,
        |trail| revoke(trail).is_some(),
    )
    .await;
    let e = revoke(&trail).unwrap();
    assert_eq!(
        (e["actor"].as_str(), e["token_id"].as_str()),
        (Some("janitor"), Some("old"))
    );
    assert!(actions(&trail).contains(&"token.deprecate".to_string()));
}
