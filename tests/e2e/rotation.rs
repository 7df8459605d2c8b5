//! Emergency rotation: under load from many workers no request fails for lack of a token, new
//! deposits are preferred at once, refreshed tokens stay, and no deprecated token is leased
//! after its sunset; cancel rolls it back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use vault_core::auth::Scope;

use crate::fakes::{Fake, Mode};
use crate::harness::{eventually, ms, now_ms, one, wait_json, Api};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn emergency_rotation_under_load() {
    let idp = Fake::start(Mode::Ok {
        rotate: true,
        expires_in: 3600,
    })
    .await;
    let t = one(&[]).await;
    t.api
        .put(
            "/v1/pools/p",
            json!({"max_leases_per_token": 50, "lease_ttl_s": 2}),
        )
        .await;
    let mut toks: Vec<Value> = (0..6)
        .map(|i| json!({"id": format!("r{i}"), "secret": format!("sr{i}"), "refresh": {"kind": "oauth2_refresh_token",
            "token_url": idp.url("/token"), "refresh_token": format!("rt{i}")}}))
        .collect();
    toks.extend((0..4).map(|i| json!({"id": format!("n{i}"), "secret": format!("sn{i}")})));
    t.api
        .post("/v1/pools/p/tokens", json!({ "tokens": toks }))
        .await;
    let _janitor = t.dep.janitor(100);
    let worker = Api::new(&t.api.base).with_token(&t.dep.token("w", &[Scope::Lease], None));
    let grants: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = vec![];
    for _ in 0..20 {
        let (w, grants, failures) = (worker.clone(), grants.clone(), failures.clone());
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let l = w.post("/v1/pools/p/leases", json!({})).await;
                if l.status != 201 {
                    failures.lock().unwrap().push(format!("{l:?}"));
                    continue;
                }
                grants
                    .lock()
                    .unwrap()
                    .push((l.str("token_id"), ms(&l.body, "lease_expires_at") - 2000));
                tokio::time::sleep(Duration::from_millis(5)).await;
                w.post(
                    &format!("/v1/pools/p/leases/{}/release", l.str("lease_id")),
                    json!({"used": 0}),
                )
                .await;
            }
        }));
    }
    // The rotation starts under load.
    assert!(
        eventually(Duration::from_secs(60), async || grants
            .lock()
            .unwrap()
            .len()
            >= 20)
        .await
    );
    let r = t
        .api
        .post(
            "/v1/pools/p/rotate",
            json!({"sunset_s": 2, "reason": "breach"}),
        )
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.body["tokens"], 10);
    let sunset = ms(&r.body, "sunset_at");
    t.api
        .post("/v1/pools/p/rotate", json!({"sunset_s": 2}))
        .await
        .problem(409, "conflict");
    // Fresh credentials deposited meanwhile are preferred at once.
    t.api
        .post(
            "/v1/pools/p/tokens",
            json!({"tokens": [{"id": "fresh0", "secret": "f0"}, {"id": "fresh1", "secret": "f1"}]}),
        )
        .await;
    let deposited = now_ms();
    let _refresher = t.dep.refresher(&[]);
    // Load goes on past the sunset, until fresh tokens were leased after their deposit.
    let ran = eventually(Duration::from_secs(60), async || {
        let g = grants.lock().unwrap();
        now_ms() > sunset + 500
            && g.len() > 200
            && g.iter()
                .any(|(tk, at)| tk.starts_with("fresh") && *at > deposited)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert!(ran, "the load did not run past the sunset");
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "requests failed during the rotation: {:?}",
        &failures[..failures.len().min(3)]
    );
    let grants = grants.lock().unwrap().clone();
    assert!(grants.len() > 200, "load ran: {}", grants.len());
    for (token, at) in &grants {
        if token.starts_with('n') {
            assert!(*at <= deposited, "deprecated {token} leased at {at} although fresh tokens were there since {deposited}");
            assert!(*at < sunset, "deprecated {token} leased after its sunset");
        }
    }
    assert!(grants
        .iter()
        .any(|(tk, at)| tk.starts_with("fresh") && *at > deposited));

    for i in 0..4 {
        wait_json(
            &t.api,
            &format!("/v1/pools/p/tokens/n{i}"),
            crate::harness::PATIENCE,
            |m| m["state"] == "revoked",
        )
        .await;
    }
    for i in 0..6 {
        let m = t.api.get(&format!("/v1/pools/p/tokens/r{i}")).await.body;
        assert!(
            m["state"] == "active" || m["state"] == "leased",
            "r{i}: {m}"
        );
        assert!(
            m["generation"].as_u64() >= Some(2) && m["sunset_at"].is_null(),
            "r{i}: {m}"
        );
    }
    let st = t.api.get("/v1/pools/p/status").await.body;
    let rot = &st["rotation"];
    assert_eq!(
        (
            rot["tokens"].as_u64(),
            rot["refreshed"].as_u64(),
            rot["deprecated_remaining"].as_u64(),
            rot["done"].as_bool()
        ),
        (Some(10), Some(6), Some(0), Some(true)),
        "{st}"
    );
    let trail = t.api.get("/v1/audit?pool=p").await.body.to_string();
    assert!(trail.contains("pool.rotate") && trail.contains("\"janitor\""));
}

#[tokio::test]
async fn rotation_can_be_cancelled() {
    let t = one(&[]).await;
    t.api.put("/v1/pools/p", json!({})).await;
    t.api.post("/v1/pools/p/tokens", json!({"tokens": [{"id": "a", "secret": "sa", "refresh": {"kind": "external"}}, {"id": "b", "secret": "sb"}]})).await;
    t.api
        .post("/v1/pools/p/rotate", json!({}))
        .await
        .problem(400, "invalid_request");
    Api::new(&t.api.base)
        .with_token(&t.dep.token("w", &[Scope::Lease], None))
        .post("/v1/pools/p/rotate", json!({"sunset_s": 60}))
        .await
        .problem(403, "forbidden");
    t.api
        .post("/v1/pools/p/rotate/cancel", json!({}))
        .await
        .problem(409, "conflict");
    assert_eq!(
        t.api
            .post("/v1/pools/p/rotate", json!({"sunset_s": 60}))
            .await
            .status,
        202
    );
    assert_eq!(
        t.api.get("/v1/pools/p/tokens/a").await.str("state"),
        "deprecated"
    );
    assert!(t.api.get("/v1/pools/p/tokens/b").await.body["sunset_at"].is_string());
    let c = t.api.post("/v1/pools/p/rotate/cancel", json!({})).await;
    assert_eq!(c.body["restored"], 2);
    for id in ["a", "b"] {
        let m = t.api.get(&format!("/v1/pools/p/tokens/{id}")).await.body;
        assert_eq!(
            (m["state"].as_str(), m["sunset_at"].is_null()),
            (Some("active"), true),
            "{m}"
        );
    }
    assert_eq!(
        t.api
            .post("/v1/pools/p/refresh-jobs/claim", json!({}))
            .await
            .status,
        204,
        "its refresh jobs are gone"
    );
    assert!(t.api.get("/v1/pools/p/status").await.body["rotation"].is_null());
}

/// Scheduled rotation through the real binaries: the calendar over REST and vaultctl, the
/// janitor rotating at most `max_in_flight` at once, a login worker replacing tokens that have
/// no grant, the events and audit entries, and the metric.
#[tokio::test]
async fn scheduled_rotation_follows_its_calendar_through_the_binaries() {
    let t = one(&[("TV_POOL_METRICS_INTERVAL_S", "1")]).await;
    let a = t
        .api
        .put(
            "/v1/pools/p",
            json!({"rotation": {"max_age_s": 3, "overlap_s": 600, "max_in_flight": 1}}),
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    t.api
        .post(
            "/v1/pools/p/tokens",
            json!({"tokens": [{"id": "a", "secret": "sa"}, {"id": "b", "secret": "sb"}, {"id": "c", "secret": "sc"}]}),
        )
        .await;
    assert_eq!(t.api.get("/v1/pools/p/tokens/a").await.body["age_s"], 0);
    // The calendar: three tokens due within seconds (today, or tomorrow just before midnight).
    let cal = t.api.get("/v1/pools/p/rotations?days=2").await;
    assert_eq!(cal.status, 200, "{cal:?}");
    let due: u64 = cal.body["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["due"].as_u64().unwrap())
        .sum();
    assert_eq!((due, &cal.body["overdue"]), (3, &json!(0)), "{cal:?}");
    assert_eq!(cal.body["schedule"]["max_in_flight"], 1);
    t.api
        .get("/v1/pools/p/rotations?days=0")
        .await
        .problem(400, "invalid_request");
    let vaultctl = |args: &[&str]| {
        let out = std::process::Command::new(testkit::bin_path("vaultctl"))
            .args(args)
            .env("TV_URL", &t.vault.base)
            .env("TV_TOKEN", &t.dep.admin)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let shown = vaultctl(&["pool", "rotations", "p", "--days", "2"]);
    assert!(shown.contains("at most 1 at once"), "{shown}");
    let json_out: Value =
        serde_json::from_str(&vaultctl(&["pool", "rotations", "p", "--json"])).unwrap();
    assert_eq!(json_out["days"].as_array().unwrap().len(), 30);

    // The janitor starts one rotation at a time; the others wait their turn. (Status reads its
    // parts one after another, so a sweep may fall between them: wait for one that agrees.)
    let _janitor = t.dep.janitor(100);
    wait_json(&t.api, "/v1/pools/p/status", Duration::from_secs(60), |s| {
        s["rotation_schedule"]["in_flight"] == 1
            && s["rotation_schedule"]["overdue"] == 2
            && s["tokens"]["deprecated"] == 1
    })
    .await;
    let m = wait_metric(&t.vault.base, "tv_tokens_rotation_due", 3.0).await;
    assert!(m, "tv_tokens_rotation_due never showed 3");
    // A login worker replaces each token as its turn comes (none has a grant).
    let mut replaced = std::collections::HashSet::new();
    let done = eventually(Duration::from_secs(120), async || {
        let j = t
            .api
            .post("/v1/pools/p/refresh-jobs/claim", json!({}))
            .await;
        if j.status == 200 {
            let id = j.str("token_id");
            let c = t
                .api
                .post(
                    &format!("/v1/pools/p/refresh-jobs/{}/complete", j.str("job_id")),
                    json!({"secret": format!("new-{id}-{}", now_ms())}),
                )
                .await;
            assert_eq!(c.status, 200, "{c:?}");
            assert_eq!(c.body["state"], "active", "{c:?}");
            replaced.insert(id);
        }
        replaced.len() == 3
    })
    .await;
    assert!(done, "replaced only {replaced:?}");
    // Announced and audited: each start and each replacement.
    let mut events = vault_client::Client::new(&t.vault.base, &t.dep.admin)
        .events(&["p"], Some("0"))
        .await
        .expect("subscribed");
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 6 {
        let e = tokio::time::timeout(crate::harness::PATIENCE, events.next())
            .await
            .expect("an event")
            .expect("stream open")
            .expect("readable");
        if let ("token.rotation_due" | "token.rotated", Some(id)) =
            (e.kind.as_str(), e.data.token_id)
        {
            seen.insert((e.kind, id));
        }
    }
    let trail = t.api.get("/v1/audit?pool=p&limit=1000").await.body;
    for action in ["token.rotation_due", "token.rotated"] {
        let n = trail["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == action)
            .count();
        assert!(n >= 3, "{action}: {n} in {trail}");
    }
}

/// Wait until the replica's `/metrics` shows `name` for pool `p` at `value`.
async fn wait_metric(base: &str, name: &str, value: f64) -> bool {
    eventually(Duration::from_secs(60), async || {
        let m = crate::harness::metrics_text(base).await;
        crate::harness::sample(&m, name, &["pool=\"p\""]) == Some(value)
    })
    .await
}
