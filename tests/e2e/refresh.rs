//! The refresher against a real local token endpoint: each grant, rotation of refresh tokens,
//! permanent and transient failures, crash safety, stale completions, the external login
//! worker API, the 401-mid-job path end to end, and health probes through the bound proxy.

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::fakes::{Fake, Mode};
use crate::harness::{eventually, now_ms, one, wait_json, One};

const T: Duration = crate::harness::PATIENCE;

fn rt_token(id: &str, idp: &Fake, extra: Value) -> Value {
    let mut t = json!({"id": id, "secret": format!("old-{id}"), "refresh": {
        "kind": "oauth2_refresh_token", "token_url": idp.url("/token"), "refresh_token": format!("rt-{id}"),
        "client_id": "cid", "client_secret": "csecret"}});
    if let (Some(o), Some(e)) = (t.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    t
}

async fn setup(pool: Value, tokens: Vec<Value>) -> One {
    let t = one(&[]).await;
    assert_eq!(t.api.put("/v1/pools/p", pool).await.status, 201);
    let a = t
        .api
        .post("/v1/pools/p/tokens", json!({ "tokens": tokens }))
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    t
}

async fn lease_secret(t: &One) -> (String, Value) {
    let l = t.api.post("/v1/pools/p/leases", json!({})).await;
    assert_eq!(l.status, 201, "{l:?}");
    t.api
        .post(
            &format!("/v1/pools/p/leases/{}/release", l.str("lease_id")),
            json!({"used": 0}),
        )
        .await;
    (l.str("secret"), l.body)
}

#[tokio::test]
async fn refresh_token_grant_rotates_and_leaves_through_the_bound_proxy() {
    let idp = Fake::start(Mode::Ok {
        rotate: true,
        expires_in: 3600,
    })
    .await;
    // The token URL's host does not resolve: only the bound proxy (the fake) can reach it.
    let mut tok = rt_token("a", &idp, json!({"binding": {"proxy": idp.url("")}}));
    tok["refresh"]["token_url"] = json!("http://idp.invalid/token");
    let t = setup(json!({}), vec![tok]).await;
    let _r = t.dep.refresher(&[]);
    assert_eq!(
        t.api
            .post("/v1/pools/p/tokens/a/refresh", json!({}))
            .await
            .status,
        202
    );
    wait_json(&t.api, "/v1/pools/p/tokens/a", T, |m| {
        m["generation"] == 2 && m["state"] == "active"
    })
    .await;
    let calls = idp.calls();
    assert_eq!(calls[0].form["grant_type"], "refresh_token");
    assert_eq!(calls[0].form["refresh_token"], "rt-a");
    assert!(
        calls[0].via_proxy,
        "the call must leave through the token's proxy"
    );
    let basic = base64::engine::general_purpose::STANDARD.encode("cid:csecret");
    assert_eq!(
        calls[0].authorization.as_deref(),
        Some(format!("Basic {basic}").as_str())
    );
    let (secret, lease) = lease_secret(&t).await;
    assert_eq!(secret, idp.issued()[0]);
    let exp = crate::harness::ms(&lease, "token_expires_at");
    assert!(
        (exp - now_ms() - 3_600_000).abs() < 60_000,
        "expires_in applied"
    );

    // The rotated refresh token was stored: the next refresh presents it.
    t.api.post("/v1/pools/p/tokens/a/refresh", json!({})).await;
    wait_json(&t.api, "/v1/pools/p/tokens/a", T, |m| m["generation"] == 3).await;
    assert_eq!(idp.calls()[1].form["refresh_token"], "rt-a-r1");
    assert_eq!(lease_secret(&t).await.0, idp.issued()[1]);
    let meta = t.api.get("/v1/pools/p/tokens/a").await.body;
    assert!(
        !meta.to_string().contains("rt-a"),
        "refresh credentials are never answered"
    );
}

#[tokio::test]
async fn client_credentials_preemptively_before_expiry() {
    let idp = Fake::start(Mode::Ok {
        rotate: false,
        expires_in: 7200,
    })
    .await;
    // lease_ttl_s 1: min_token_ttl_s 31, refresh margin 61 s: a token with 40 s left is due now
    // but still leasable.
    let tok = json!({"id": "c", "secret": "old-c", "expires_at": now_ms() + 40_000, "refresh": {
        "kind": "oauth2_client_credentials", "token_url": idp.url("/token"), "client_id": "svc",
        "client_secret": "svc-secret", "scope": "read write", "client_auth": "body"}});
    let t = setup(json!({"lease_ttl_s": 1}), vec![tok]).await;
    assert_eq!(
        t.api.get("/v1/pools/p/tokens/c").await.str("state"),
        "active"
    );
    let _r = t.dep.refresher(&[]);
    wait_json(&t.api, "/v1/pools/p/tokens/c", T, |m| m["generation"] == 2).await;
    let c = &idp.calls()[0];
    assert_eq!(c.form["grant_type"], "client_credentials");
    assert_eq!(
        (
            c.form["client_id"].as_str(),
            c.form["client_secret"].as_str()
        ),
        ("svc", "svc-secret")
    );
    assert_eq!(c.form["scope"], "read write");
    assert!(c.authorization.is_none());
    let (secret, lease) = lease_secret(&t).await;
    assert_eq!(secret, idp.issued()[0]);
    assert!(crate::harness::ms(&lease, "token_expires_at") > now_ms() + 7_000_000);
}

#[tokio::test]
async fn invalid_grant_quarantines_without_leaking() {
    let idp = Fake::start(Mode::InvalidGrant).await;
    let t = setup(json!({}), vec![rt_token("a", &idp, json!({}))]).await;
    let _r = t.dep.refresher(&[]);
    t.api.post("/v1/pools/p/tokens/a/refresh", json!({})).await;
    let m = wait_json(&t.api, "/v1/pools/p/tokens/a", T, |m| {
        m["state"] == "quarantined"
    })
    .await;
    let err = m["last_error"].as_str().unwrap();
    assert!(err.contains("invalid_grant"), "{err}");
    assert!(!m.to_string().contains("rt-a") && !m.to_string().contains("csecret"));
    assert_eq!(idp.calls().len(), 1, "a permanent failure is not retried");
    let st = t.api.get("/v1/pools/p/status").await.body;
    assert_eq!(st["refresh_success_rate"], 0.0);
    assert_eq!(st["tokens"]["quarantined"], 1);
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    let idp = Fake::start(Mode::FailFirst(2)).await;
    let t = setup(json!({}), vec![rt_token("a", &idp, json!({}))]).await;
    let _r = t.dep.refresher(&[]);
    t.api.post("/v1/pools/p/tokens/a/refresh", json!({})).await;
    let m = wait_json(&t.api, "/v1/pools/p/tokens/a", T, |m| m["generation"] == 2).await;
    assert_eq!(m["state"], "active");
    assert_eq!(m["refresh_attempts"], 0);
    let calls = idp.calls();
    assert_eq!(calls.len(), 3);
    // Backoff: 100 ms base, doubling, jitter in [d/2, d].
    assert!(calls[1].at_ms - calls[0].at_ms >= 50, "{:?}", calls);
    assert!(calls[2].at_ms - calls[1].at_ms >= 100, "{:?}", calls);
    let rate = t.api.get("/v1/pools/p/status").await.body["refresh_success_rate"]
        .as_f64()
        .unwrap();
    assert!((rate - 1.0 / 3.0).abs() < 1e-9, "{rate}");
}

#[tokio::test]
async fn slow_endpoint_times_out_and_is_retried() {
    let idp = Fake::start(Mode::SlowFirst(Duration::from_secs(3))).await;
    let t = setup(json!({}), vec![rt_token("a", &idp, json!({}))]).await;
    let _r = t.dep.refresher(&[
        ("TV_REFRESH_HTTP_TIMEOUT_MS", "500"),
        ("TV_REFRESH_VISIBILITY_MS", "2000"),
    ]);
    t.api.post("/v1/pools/p/tokens/a/refresh", json!({})).await;
    let m = wait_json(&t.api, "/v1/pools/p/tokens/a", T, |m| m["generation"] == 2).await;
    assert_eq!(m["state"], "active");
    let calls = idp.calls();
    assert!(calls.len() >= 2);
    assert!(
        calls[1].at_ms - calls[0].at_ms >= 500,
        "the second call came after the timeout"
    );
}

#[tokio::test]
async fn a_killed_refresher_loses_nothing_and_the_token_is_refreshed_once() {
    let idp = Fake::start(Mode::HoldFirst).await;
    let t = setup(json!({}), vec![rt_token("a", &idp, json!({}))]).await;
    let env = [
        ("TV_REFRESH_VISIBILITY_MS", "3000"),
        ("TV_REFRESH_HTTP_TIMEOUT_MS", "1500"),
    ];
    let mut a = t.dep.refresher(&env);
    t.api.post("/v1/pools/p/tokens/a/refresh", json!({})).await;
    // Refresher A is mid-job: its request is held by the endpoint.
    assert!(eventually(T, async || idp.calls().len() == 1).await);
    a.kill();
    let _b = t.dep.refresher(&env);
    let m = wait_json(&t.api, "/v1/pools/p/tokens/a", T, |m| m["generation"] == 2).await;
    assert_eq!(m["state"], "active");
    assert_eq!(
        idp.calls().len(),
        2,
        "B took the job after the visibility timeout"
    );
    // Exactly one refresh landed, and the vault holds the only token the endpoint delivered.
    assert_eq!(idp.issued().len(), 1);
    assert_eq!(lease_secret(&t).await.0, idp.issued()[0]);
    idp.release();
}

#[tokio::test]
async fn stale_completions_are_refused() {
    let t = setup(
        json!({}),
        vec![json!({"id": "x", "secret": "s0", "refresh": {"kind": "external"}})],
    )
    .await;
    let api = &t.api;
    assert_eq!(
        api.post("/v1/pools/p/refresh-jobs/claim", json!({}))
            .await
            .status,
        204
    );
    api.post("/v1/pools/p/tokens/x/refresh", json!({})).await;
    let j1 = api
        .post("/v1/pools/p/refresh-jobs/claim", json!({"visibility_s": 1}))
        .await;
    assert_eq!(j1.status, 200);
    // After the visibility timeout the job reappears under a new id.
    let deadline = std::time::Instant::now() + T;
    let j2 = loop {
        let j = api
            .post(
                "/v1/pools/p/refresh-jobs/claim",
                json!({"visibility_s": 60}),
            )
            .await;
        if j.status == 200 {
            break j;
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(j1.str("job_id"), j2.str("job_id"));
    let done = api
        .post(
            &format!("/v1/pools/p/refresh-jobs/{}/complete", j2.str("job_id")),
            json!({"secret": "s2"}),
        )
        .await;
    assert_eq!(done.status, 200, "{done:?}");
    let late = api
        .post(
            &format!("/v1/pools/p/refresh-jobs/{}/complete", j1.str("job_id")),
            json!({"secret": "s1"}),
        )
        .await;
    late.problem(409, "stale_job");
    let again = api
        .post(
            &format!("/v1/pools/p/refresh-jobs/{}/complete", j2.str("job_id")),
            json!({"secret": "s3"}),
        )
        .await;
    again.problem(410, "job_gone");
    assert_eq!(
        lease_secret(&t).await.0,
        "s2",
        "the late completion overwrote nothing"
    );

    // A revoked token is not revived by a completion.
    api.post("/v1/pools/p/tokens/x/refresh", json!({})).await;
    let j3 = api.post("/v1/pools/p/refresh-jobs/claim", json!({})).await;
    api.post("/v1/pools/p/tokens/x/revoke", json!({"reason": "leak"}))
        .await;
    api.post(
        &format!("/v1/pools/p/refresh-jobs/{}/complete", j3.str("job_id")),
        json!({"secret": "s4"}),
    )
    .await
    .problem(409, "stale_job");
    let m = api.get("/v1/pools/p/tokens/x").await.body;
    assert_eq!(
        (m["state"].as_str(), m["generation"].as_u64()),
        (Some("revoked"), Some(2))
    );
}

#[tokio::test]
async fn external_login_workers_claim_complete_and_fail() {
    let t = setup(
        json!({}),
        vec![json!({"id": "e", "secret": "s0", "labels": {"account": "acct-9"},
            "binding": {"proxy": "socks5://10.1.2.3:1080", "fingerprint": "ff-115"}, "refresh": {"kind": "external"}})],
    )
    .await;
    let api = &t.api;
    api.post("/v1/pools/p/tokens/e/refresh", json!({})).await;
    let j = api.post("/v1/pools/p/refresh-jobs/claim", json!({})).await;
    assert_eq!(j.status, 200);
    assert_eq!(j.body["token_id"], "e");
    assert_eq!(j.body["binding"]["proxy"], "socks5://10.1.2.3:1080");
    assert_eq!(j.body["labels"]["account"], "acct-9");
    assert!(!j.body.to_string().contains("s0"));
    assert_eq!(
        api.post("/v1/pools/p/refresh-jobs/claim", json!({}))
            .await
            .status,
        204,
        "hidden while claimed"
    );
    let f = api
        .post(
            &format!("/v1/pools/p/refresh-jobs/{}/fail", j.str("job_id")),
            json!({"error": "captcha", "retry_after_s": 1}),
        )
        .await;
    assert_eq!(f.str("state"), "refreshing");
    let deadline = std::time::Instant::now() + T;
    let j2 = loop {
        let j = api.post("/v1/pools/p/refresh-jobs/claim", json!({})).await;
        if j.status == 200 {
            break j;
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(j2.body["attempts"], 1);
    let exp = now_ms() + 3_600_000;
    let c = api
        .post(
            &format!("/v1/pools/p/refresh-jobs/{}/complete", j2.str("job_id")),
            json!({"secret": "s-new", "expires_at": exp}),
        )
        .await;
    assert_eq!(c.status, 200, "{c:?}");
    assert_eq!(lease_secret(&t).await.0, "s-new");
    api.post(
        &format!("/v1/pools/p/refresh-jobs/{}/complete", "nope"),
        json!({"secret": "x"}),
    )
    .await
    .problem(410, "job_gone");
    api.post("/v1/pools/p/refresh-jobs/x/complete", json!({}))
        .await
        .problem(400, "invalid_request");

    api.post("/v1/pools/p/tokens/e/refresh", json!({})).await;
    let j3 = api.post("/v1/pools/p/refresh-jobs/claim", json!({})).await;
    let f = api
        .post(
            &format!("/v1/pools/p/refresh-jobs/{}/fail", j3.str("job_id")),
            json!({"error": "account banned"}),
        )
        .await;
    assert_eq!(f.str("state"), "quarantined");
    assert_eq!(
        api.get("/v1/pools/p/tokens/e").await.str("last_error"),
        "account banned"
    );
}

#[tokio::test]
async fn unauthorized_mid_job_rotates_at_once_and_refreshes_in_the_background() {
    let fake = Fake::start(Mode::Ok {
        rotate: false,
        expires_in: 3600,
    })
    .await;
    let burned = rt_token("b", &fake, json!({"secret": "burned-secret"}));
    // pack: the worker gets the burned token first, deterministically.
    let t = setup(
        json!({"strategy": "pack"}),
        vec![burned, json!({"id": "h", "secret": "healthy"})],
    )
    .await;
    fake.burn("burned-secret");
    let _r = t.dep.refresher(&[]);
    let http = reqwest::Client::new();
    let call = |secret: String| {
        let http = http.clone();
        let url = fake.url("/api");
        async move {
            http.get(url)
                .bearer_auth(secret)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };

    let l = t
        .api
        .post("/v1/pools/p/leases", json!({"worker": "scraper"}))
        .await;
    assert_eq!(l.str("token_id"), "b");
    assert_eq!(call(l.str("secret")).await, 401);
    let r = t
        .api
        .post(
            &format!("/v1/pools/p/leases/{}/rotate", l.str("lease_id")),
            json!({"outcome": "unauthorized"}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.str("token_id"), "h", "a different, healthy token at once");
    assert_eq!(
        call(r.str("secret")).await,
        200,
        "the retried request succeeds"
    );
    t.api
        .post(
            &format!("/v1/pools/p/leases/{}/release", r.str("lease_id")),
            json!({}),
        )
        .await;

    // The burned token comes back refreshed, and works.
    let m = wait_json(&t.api, "/v1/pools/p/tokens/b", T, |m| {
        m["state"] == "active" && m["generation"] == 2
    })
    .await;
    assert!(m["last_error"].is_null());
    let l = t.api.post("/v1/pools/p/leases", json!({})).await;
    assert_eq!(l.str("token_id"), "b");
    assert_eq!(call(l.str("secret")).await, 200);
}

#[tokio::test]
async fn probes_use_the_bound_proxy_and_strike_dead_tokens() {
    let fake = Fake::start(Mode::Ok {
        rotate: false,
        expires_in: 3600,
    })
    .await;
    let proxy = fake.url("");
    let t = setup(
        json!({"quarantine_after_strikes": 1, "probe": {"url": "http://target.invalid/probe", "expect_status": 200, "interval_s": 1}}),
        vec![
            json!({"id": "good", "secret": "alive", "binding": {"proxy": proxy}}),
            json!({"id": "dead", "secret": "shadow-banned", "binding": {"proxy": proxy}}),
        ],
    )
    .await;
    fake.burn("shadow-banned");
    let _r = t.dep.refresher(&[]);
    wait_json(&t.api, "/v1/pools/p/tokens/dead", T, |m| {
        m["state"] == "quarantined"
    })
    .await;
    assert_eq!(
        t.api.get("/v1/pools/p/tokens/good").await.str("state"),
        "active"
    );
    // A strike from a probe is recorded like a worker's report: the outcome and the quarantine
    // are audited, and the quarantine is announced.
    let audit = t.api.get("/v1/audit?pool=p").await.body;
    let entries = audit["events"].as_array().unwrap();
    let by = |action: &str| {
        entries
            .iter()
            .any(|e| e["action"] == action && e["actor"] == "refresher" && e["token_id"] == "dead")
    };
    assert!(by("lease.outcome") && by("token.quarantine"), "{audit}");
    let events = t
        .redis
        .cli(&["XRANGE", &format!("{}:events", t.dep.prefix), "-", "+"]);
    assert!(
        events.contains("token.quarantined") && events.contains("\"dead\""),
        "{events}"
    );
    let calls = fake.state.target_calls.lock().unwrap().clone();
    assert!(calls.iter().any(|(b, _)| b == "shadow-banned"));
    assert!(
        calls.iter().all(|(_, via_proxy)| *via_proxy),
        "every probe left through the bound proxy"
    );
}

/// Refresh storm: 1,000 tokens whose life ends within the same minute, two refreshers, workers
/// leasing all the while. Every token is refreshed before it expires, no lease ever carries a
/// token with less than `min_token_ttl_s` left, and the pool's refresh concurrency holds across
/// both refreshers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refresh_storm() {
    const N: usize = 1000;
    const MIN_TTL_MS: i64 = 3000;
    let idp = Fake::start(Mode::Ok {
        rotate: false,
        expires_in: 3600,
    })
    .await;
    let t = one(&[]).await;
    let cfg = json!({"lease_ttl_s": 1, "min_token_ttl_s": 3, "refresh_margin_s": 10,
        "refresh_concurrency": 4, "max_leases_per_token": 2});
    assert_eq!(t.api.put("/v1/pools/p", cfg).await.status, 201);
    let start = now_ms();
    let mut expiry = std::collections::HashMap::new();
    for chunk in (0..N).collect::<Vec<_>>().chunks(500) {
        let toks: Vec<Value> = chunk
            .iter()
            .map(|i| {
                // Expiries spread over 12-20 s from now: refresh due 2-10 s from now.
                let exp = start + 12_000 + (*i as i64) * 8;
                expiry.insert(format!("s{i}"), exp);
                let mut tok = rt_token(&format!("s{i}"), &idp, json!({}));
                tok["expires_at"] = json!(exp);
                tok
            })
            .collect();
        assert_eq!(
            t.api
                .post("/v1/pools/p/tokens", json!({ "tokens": toks }))
                .await
                .status,
            201
        );
    }
    let _janitor = t.dep.janitor(200);
    let _r1 = t.dep.refresher(&[("TV_REFRESHER_CONCURRENCY", "16")]);
    let _r2 = t.dep.refresher(&[("TV_REFRESHER_CONCURRENCY", "16")]);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = vec![];
    for _ in 0..20 {
        let api = t.api.clone();
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let mut leases = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let l = api.post("/v1/pools/p/leases", json!({})).await;
                if l.status != 201 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                let granted = crate::harness::ms(&l.body, "lease_expires_at") - 1000;
                let exp = crate::harness::ms(&l.body, "token_expires_at");
                assert!(
                    exp - granted >= MIN_TTL_MS,
                    "leased {} with {} ms left",
                    l.str("token_id"),
                    exp - granted
                );
                api.post(
                    &format!("/v1/pools/p/leases/{}/release", l.str("lease_id")),
                    json!({"used": 0}),
                )
                .await;
                leases += 1;
            }
            leases
        }));
    }

    let deadline = std::time::Instant::now() + crate::harness::PATIENCE;
    let tokens = loop {
        let page = t.api.get("/v1/pools/p/tokens?limit=1000").await;
        assert_eq!(page.status, 200, "{page:?}");
        let tokens = page.body["tokens"].as_array().unwrap().clone();
        if tokens.len() == N && tokens.iter().all(|m| m["generation"].as_u64() >= Some(2)) {
            break tokens;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not every token was refreshed in time"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut leases = 0;
    for w in workers {
        leases += w
            .await
            .expect("a worker saw a lease with too little life left");
    }
    assert!(
        leases > 100,
        "workers kept leasing during the storm: {leases}"
    );
    for m in &tokens {
        let id = m["id"].as_str().unwrap();
        let refreshed = crate::harness::ms(m, "refreshed_at");
        assert!(refreshed < expiry[id], "{id} refreshed after it expired");
        // Workers were still leasing when the page was read.
        assert!(
            m["state"] == "active" || m["state"] == "leased",
            "{id}: {}",
            m["state"]
        );
    }
    let max = idp
        .state
        .max_inflight
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        max <= 4,
        "the pool's refresh_concurrency (4) was exceeded: {max} at once"
    );
    assert!(max >= 2, "refreshes ran concurrently: {max}");
    eprintln!(
        "storm: {N} tokens refreshed, {leases} leases meanwhile, at most {max} refreshes at once"
    );
}

/// RFC 6749 §2.3.1: the client id and secret are each form-urlencoded before they are joined
/// and base64-encoded, so a compliant server decodes a secret with `+ / = %` and non-ASCII.
#[tokio::test]
async fn basic_client_credentials_are_form_encoded() {
    let idp = Fake::start(Mode::Ok {
        rotate: false,
        expires_in: 3600,
    })
    .await;
    let (id, secret) = ("my client:1", "p+s/w=r%d é");
    let mut tok = rt_token("a", &idp, json!({}));
    tok["refresh"]["client_id"] = json!(id);
    tok["refresh"]["client_secret"] = json!(secret);
    let t = setup(json!({}), vec![tok]).await;
    let _r = t.dep.refresher(&[]);
    t.api.post("/v1/pools/p/tokens/a/refresh", json!({})).await;
    wait_json(&t.api, "/v1/pools/p/tokens/a", T, |m| m["generation"] == 2).await;
    assert_eq!(
        basic_credentials(&idp.calls()[0]),
        (id.into(), secret.into())
    );
}

/// A refused connection is named in `last_error`, and the attempt that reaches the limit says
/// it quarantines instead of "will retry".
#[tokio::test]
async fn a_refused_connection_is_named_and_the_last_attempt_quarantines() {
    let idp = Fake::start(Mode::Ok {
        rotate: false,
        expires_in: 3600,
    })
    .await;
    let mut tok = rt_token("a", &idp, json!({}));
    tok["refresh"]["token_url"] = json!(format!("http://127.0.0.1:{}/token", testkit::free_port()));
    let t = setup(json!({}), vec![tok]).await;
    let r = t.dep.refresher(&[("TV_REFRESH_MAX_ATTEMPTS", "2")]);
    t.api.post("/v1/pools/p/tokens/a/refresh", json!({})).await;
    let m = wait_json(&t.api, "/v1/pools/p/tokens/a", T, |m| {
        m["state"] == "quarantined"
    })
    .await;
    let err = m["last_error"].as_str().unwrap().to_lowercase();
    assert!(err.contains("connection refused"), "{err}");
    let out = r.output();
    assert!(out.contains("last attempt: quarantining"), "{out}");
    assert_eq!(out.matches("will retry").count(), 1, "{out}");
}

/// An identity provider that issues tokens shorter-lived than the pool needs (60 s against the
/// default 90 s) is called a bounded number of times, backed off, and the token ends
/// quarantined with the reason, visible in its metadata, the pool's status, audit and metrics.
#[tokio::test]
async fn tokens_issued_shorter_than_the_pool_needs_are_not_refreshed_in_a_loop() {
    let idp = Fake::start(Mode::Ok {
        rotate: true,
        expires_in: 60,
    })
    .await;
    let t = setup(json!({}), vec![rt_token("a", &idp, json!({}))]).await;
    let metrics_port = testkit::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let _r = t.dep.refresher(&[
        ("TV_REFRESH_MAX_ATTEMPTS", "3"),
        ("TV_REFRESH_BACKOFF_MS", "400"),
        ("TV_REFRESHER_METRICS_ADDR", &metrics_addr),
    ]);
    t.api.post("/v1/pools/p/tokens/a/refresh", json!({})).await;
    let m = wait_json(&t.api, "/v1/pools/p/tokens/a", T, |m| {
        m["state"] == "quarantined"
    })
    .await;
    let reason = "issued token lives 60 s, pool needs 90 s";
    assert_eq!(m["last_error"], reason, "{m}");
    assert_eq!(
        (m["refresh_attempts"].as_u64(), m["generation"].as_u64()),
        (Some(3), Some(4))
    );

    // Three calls, the second and third after the backoff (jittered: at least half of it).
    let calls = idp.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    for w in calls.windows(2) {
        assert!(w[1].at_ms - w[0].at_ms >= 200, "no backoff: {calls:?}");
    }
    // Each credential was stored, so each call used the refresh token the last one rotated.
    assert_eq!(calls[1].form["refresh_token"], "rt-a-r1");
    assert_eq!(calls[2].form["refresh_token"], "rt-a-r1-r2");

    let st = t.api.get("/v1/pools/p/status").await.body;
    assert_eq!(
        (
            st["refresh_failures"].as_u64(),
            st["refresh_short_lived"].as_u64()
        ),
        (Some(3), Some(3)),
        "{st}"
    );
    assert_eq!(st["tokens"]["quarantined"], 1);
    let warning = st["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains("live 60 s") && warning.contains("needs 90 s"),
        "{st}"
    );
    let pool = t.api.get("/v1/pools/p").await.body;
    assert_eq!(
        (pool["issued_ttl_s"].as_u64(), pool["warnings"][0].as_str()),
        (Some(60), Some(warning))
    );

    let audit = t.api.get("/v1/audit?pool=p").await;
    let outcomes: Vec<(&str, &str)> = audit.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "token.refresh_failed")
        .map(|e| {
            (
                e["outcome"].as_str().unwrap(),
                e["detail"].as_str().unwrap(),
            )
        })
        .collect();
    let mut sorted = outcomes.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            ("quarantined", reason),
            ("will_retry", reason),
            ("will_retry", reason)
        ],
        "{}",
        audit.body
    );
    let text = crate::harness::metrics_text(&format!("http://{metrics_addr}")).await;
    let n = |o: &str| crate::harness::sample(&text, "tv_refresh_results_total", &[o]);
    assert_eq!(
        (n("will_retry"), n("quarantined")),
        (Some(2.0), Some(1.0)),
        "{text}"
    );

    // Margins the provider can meet clear the warning.
    let fixed = t
        .api
        .put(
            "/v1/pools/p",
            json!({"lease_ttl_s": 10, "refresh_margin_s": 50}),
        )
        .await;
    assert_eq!(fixed.status, 200, "{fixed:?}");
    assert_eq!(fixed.body["warnings"], json!([]), "{}", fixed.body);
}

/// Decode HTTP Basic client credentials as a compliant server does (RFC 6749 §2.3.1): base64,
/// split at the first `:`, form-urldecode each half.
fn basic_credentials(call: &crate::fakes::Call) -> (String, String) {
    let header = call.authorization.clone().expect("Basic credentials");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(header.strip_prefix("Basic ").unwrap())
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (id, secret) = raw.split_once(':').unwrap();
    let decode = |s: &str| -> String {
        serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={s}")).unwrap()[0]
            .1
            .clone()
    };
    (decode(id), decode(secret))
}

/// A pool's `refresh` is the default of its tokens, for both grants: a token deposited without
/// (or with part of) its own settings is refreshed with the pool's, read at each refresh, so a
/// new pool client secret applies at once. The pool's client secret is sealed at rest and never
/// appears in Redis, answers, audit, events or logs: only its fingerprint.
#[tokio::test]
async fn pool_refresh_settings_are_inherited_and_their_secret_stays_sealed() {
    let idp = Fake::start(Mode::Ok {
        rotate: true,
        expires_in: 3600,
    })
    .await;
    let secrets = [
        "POOLSECRET+cc/1=%é",
        "POOLSECRET+rt/2=%ü",
        "POOLSECRET+cc/3=%ß",
    ];
    // Everything logged, so the scan of the logs below sees all there is.
    let t = one(&[("RUST_LOG", "debug")]).await;
    let cc = |secret: &str| {
        json!({"refresh": {"kind": "oauth2_client_credentials", "token_url": idp.url("/token"),
            "client_id": "pool-client", "client_secret": secret, "scope": "read"}})
    };
    let put = t.api.put("/v1/pools/cc", cc(secrets[0])).await;
    assert_eq!(put.status, 201, "{put:?}");
    let fp = |s: &str| vault_core::crypto::Secret::new(s).fingerprint();
    assert_eq!(
        put.body["refresh"]["client_secret_fingerprint"],
        fp(secrets[0])
    );
    assert_eq!(put.body["refresh"]["client_id"], "pool-client");
    let put = t
        .api
        .put(
            "/v1/pools/rt",
            json!({"refresh": {"kind": "oauth2_refresh_token", "token_url": idp.url("/token"),
                "client_id": "rt-client", "client_secret": secrets[1]}}),
        )
        .await;
    assert_eq!(put.status, 201, "{put:?}");
    // A refresh_token grant needs each token's refresh token: a token without is refused.
    let refused = t
        .api
        .post("/v1/pools/rt/tokens", json!({"id": "bare", "secret": "s"}))
        .await;
    refused.problem(400, "invalid_request");

    let dep = |pool: &str, body: Value| {
        let (api, pool) = (t.api.clone(), pool.to_string());
        async move {
            let a = api.post(&format!("/v1/pools/{pool}/tokens"), body).await;
            assert_eq!(a.status, 201, "{a:?}");
        }
    };
    dep("cc", json!({"id": "c1", "secret": "old-c1"})).await;
    dep(
        "rt",
        json!({"id": "r1", "secret": "old-r1", "refresh": {"refresh_token": "rt-r1"}}),
    )
    .await;
    let m = t.api.get("/v1/pools/cc/tokens/c1").await.body;
    assert_eq!(
        (
            m["refresh"]["kind"].as_str(),
            m["refresh"]["inherits_pool"].as_bool()
        ),
        (Some("oauth2_client_credentials"), Some(true)),
        "{m}"
    );

    let refresher = t.dep.refresher(&[("RUST_LOG", "debug")]);
    for (pool, id) in [("cc", "c1"), ("rt", "r1")] {
        t.api
            .post(&format!("/v1/pools/{pool}/tokens/{id}/refresh"), json!({}))
            .await;
        wait_json(&t.api, &format!("/v1/pools/{pool}/tokens/{id}"), T, |m| {
            m["generation"] == 2
        })
        .await;
    }
    let calls = idp.calls();
    let cc_call = calls
        .iter()
        .find(|c| c.form["grant_type"] == "client_credentials")
        .unwrap();
    assert_eq!(
        basic_credentials(cc_call),
        ("pool-client".into(), secrets[0].into())
    );
    assert_eq!(cc_call.form.get("scope").map(String::as_str), Some("read"));
    let rt_call = calls
        .iter()
        .find(|c| c.form["grant_type"] == "refresh_token")
        .unwrap();
    assert_eq!(rt_call.form["refresh_token"], "rt-r1");
    assert_eq!(
        basic_credentials(rt_call),
        ("rt-client".into(), secrets[1].into())
    );

    // A new pool client secret applies at the next refresh of every token that inherits it;
    // the rotated refresh token stays the token's own and the pool's secret is not copied in.
    assert_eq!(t.api.put("/v1/pools/cc", cc(secrets[2])).await.status, 200);
    t.api
        .post("/v1/pools/cc/tokens/c1/refresh", json!({}))
        .await;
    t.api
        .post("/v1/pools/rt/tokens/r1/refresh", json!({}))
        .await;
    for (pool, id) in [("cc", "c1"), ("rt", "r1")] {
        wait_json(&t.api, &format!("/v1/pools/{pool}/tokens/{id}"), T, |m| {
            m["generation"] == 3
        })
        .await;
    }
    let calls = idp.calls();
    assert_eq!(calls.len(), 4);
    let last_cc = calls
        .iter()
        .rfind(|c| c.form["grant_type"] == "client_credentials")
        .unwrap();
    assert_eq!(basic_credentials(last_cc).1, secrets[2]);
    let last_rt = calls
        .iter()
        .rfind(|c| c.form["grant_type"] == "refresh_token")
        .unwrap();
    assert_eq!(last_rt.form["refresh_token"], "rt-r1-r2");
    assert_eq!(basic_credentials(last_rt).1, secrets[1]);

    // Nowhere but sealed: Redis (every key, every type, serialized too), every answer that
    // describes pools or tokens, audit, events, and the processes' logs.
    let mut seen: Vec<(String, String)> = crate::secrets::dump_everything(&t.dep.redis_url).await;
    for path in [
        "/v1/pools",
        "/v1/pools/cc",
        "/v1/pools/rt",
        "/v1/pools/cc/status",
        "/v1/pools/cc/tokens",
        "/v1/pools/rt/tokens/r1",
        "/v1/audit?pool=cc",
        "/v1/audit?pool=rt",
        "/v1/audit",
    ] {
        let a = t.api.get(path).await;
        assert_eq!(a.status, 200, "{path}: {a:?}");
        seen.push((path.into(), a.body.to_string()));
    }
    seen.push(("refresher log".into(), refresher.output()));
    seen.push(("vault-api log".into(), t.vault.child.output()));
    assert!(seen.len() > 30, "the scan saw the data");
    assert!(
        seen.iter()
            .any(|(w, text)| w == "refresher log" && text.contains("token refreshed")),
        "the refresher's log was read"
    );
    for (where_, text) in &seen {
        for s in secrets {
            assert!(!text.contains(s), "a pool client secret in {where_}");
            // Nor its form-encoded or JSON-escaped spellings.
            let encoded: String = serde_urlencoded::to_string([("v", s)]).unwrap();
            assert!(!text.contains(&encoded[2..]), "encoded in {where_}");
            assert!(
                !text.contains(&serde_json::to_string(s).unwrap()),
                "escaped in {where_}"
            );
        }
        assert!(!text.contains("POOLSECRET"), "part of a secret in {where_}");
    }
}
