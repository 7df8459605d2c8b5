//! The lease endpoints end to end (a waiting lease is counted in flight on `/metrics`), graceful
//! shutdown, metrics and the OpenAPI document against a running vault-api. The pool and token
//! endpoints are handler tests over the router (crates/vault-api/tests/endpoints.rs).

use reqwest::Method;
use serde_json::json;

use crate::harness::{metrics_text, one, sample, Api};

async fn pool(api: &Api, name: &str, cfg: serde_json::Value) {
    let a = api.put(&format!("/v1/pools/{name}"), cfg).await;
    assert_eq!(a.status, 201, "{a:?}");
}

#[tokio::test]
async fn lease_endpoints() {
    let t = one(&[]).await;
    let api = &t.api;
    pool(
        api,
        "p",
        json!({"quota_limit": 10, "max_leases_per_token": 1, "max_lease_ttl_s": 600}),
    )
    .await;
    api.post("/v1/pools/p/tokens", json!({"tokens": [
        {"secret": "sa", "id": "a", "binding": {"proxy": "http://proxy-a:3128", "fingerprint": "fp-a"}},
        {"secret": "sb", "id": "b", "binding": {"proxy": "http://proxy-b:3128"}}]})).await;

    // Acquire with no body at all.
    let res = api
        .raw(Method::POST, "/v1/pools/p/leases")
        .send()
        .await
        .unwrap();
    let l1 = Api::answer(res).await;
    assert_eq!(l1.status, 201, "{l1:?}");
    let tok = l1.str("token_id");
    let secret = if tok == "a" { "sa" } else { "sb" };
    assert_eq!(l1.str("secret"), secret);
    assert_eq!(
        l1.body["headers"]["Authorization"],
        format!("Bearer {secret}")
    );
    assert_eq!(
        l1.body["binding"]["proxy"],
        format!("http://proxy-{tok}:3128")
    );
    for f in [
        "lease_id",
        "pool",
        "token_id",
        "token_expires_at",
        "lease_expires_at",
        "units",
    ] {
        assert!(l1.body.get(f).is_some(), "lease lacks {f}");
    }
    let lid = l1.str("lease_id");

    // Idempotent acquire: same key, same lease.
    let k = [("Idempotency-Key", "job-7")];
    let i1 = api
        .call_with(
            Method::POST,
            "/v1/pools/p/leases",
            Some(json!({"worker": "w1"})),
            &k,
        )
        .await;
    let i2 = api
        .call_with(
            Method::POST,
            "/v1/pools/p/leases",
            Some(json!({"worker": "w1"})),
            &k,
        )
        .await;
    assert_eq!((i1.status.as_u16(), i2.status.as_u16()), (201, 200));
    assert_eq!(i1.str("lease_id"), i2.str("lease_id"));

    // Both tokens busy: 503 with a Retry-After no later than the first lease deadline.
    let ex = api.post("/v1/pools/p/leases", json!({})).await;
    ex.problem(503, "pool_exhausted");
    let ra = ex.retry_after.expect("Retry-After");
    assert!((1..=60).contains(&ra), "{ra}");

    // wait_ms: a waiting request gets the token a release frees.
    let waiter = {
        let api = api.clone();
        tokio::spawn(async move {
            api.post("/v1/pools/p/leases", json!({"wait_ms": 5000}))
                .await
        })
    };
    // Release only once the waiter is in flight (it and the /metrics request asking).
    in_flight_at_least(&api.base, 2).await;
    let rel = api
        .post(
            &format!("/v1/pools/p/leases/{lid}/release"),
            json!({"outcome": "ok", "used": 1}),
        )
        .await;
    assert_eq!(rel.status, 200, "{rel:?}");
    let w = waiter.await.unwrap();
    assert_eq!(w.status, 201, "{w:?}");
    assert_eq!(w.str("token_id"), tok);

    let renew = api
        .post(
            &format!("/v1/pools/p/leases/{}/renew", w.str("lease_id")),
            json!({"ttl_s": 120}),
        )
        .await;
    assert_eq!(renew.status, 200);
    // Longer than the pool's max_lease_ttl_s (600): cut to it, one step past the 120 s above.
    let longer = api
        .post(
            &format!("/v1/pools/p/leases/{}/renew", w.str("lease_id")),
            json!({"ttl_s": 601}),
        )
        .await;
    assert_eq!(longer.status, 200, "{longer:?}");
    let past_120 = crate::harness::ms(&longer.body, "lease_expires_at")
        - crate::harness::ms(&renew.body, "lease_expires_at");
    assert!(
        (480_000 - 60_000..=480_000 + 60_000).contains(&past_120),
        "a renew of 601 s on a 600 s pool ended {past_120} ms after the 120 s one"
    );
    api.post(&format!("/v1/pools/p/leases/{lid}/release"), json!({}))
        .await
        .problem(410, "lease_gone");
    api.post(&format!("/v1/pools/p/leases/{lid}/renew"), json!({}))
        .await
        .problem(410, "lease_gone");
    api.post("/v1/pools/p/leases/bad%20id/release", json!({}))
        .await
        .problem(400, "invalid_request");
    api.post(
        &format!("/v1/pools/p/leases/{}/release", w.str("lease_id")),
        json!({"used": 2}),
    )
    .await
    .problem(400, "invalid_request");
    api.post(
        &format!("/v1/pools/p/leases/{}/release", w.str("lease_id")),
        json!({"outcome": "great"}),
    )
    .await
    .problem(400, "invalid_request");

    // Rotate: the 401 path hands out the other token at once.
    assert_eq!(
        api.post(
            &format!("/v1/pools/p/leases/{}/release", w.str("lease_id")),
            json!({})
        )
        .await
        .status,
        200
    );
    let rot = api
        .post(
            &format!("/v1/pools/p/leases/{}/rotate", i1.str("lease_id")),
            json!({"outcome": "unauthorized"}),
        )
        .await;
    assert_eq!(rot.status, 201, "{rot:?}");
    assert_ne!(rot.str("token_id"), i1.str("token_id"));
    let burned = api
        .get(&format!("/v1/pools/p/tokens/{}", i1.str("token_id")))
        .await;
    assert_eq!(
        burned.str("state"),
        "expired",
        "no refresh method: a 401 expires it"
    );

    // Input checks.
    for bad in [
        json!({"units": 0}),
        json!({"units": -1}),
        json!({"ttl_s": 0}),
        json!({"ttl_s": 604_801}),
        json!({"wait_ms": 999999}),
        json!({"worker": ""}),
        json!({"unknown": 1}),
    ] {
        api.post("/v1/pools/p/leases", bad.clone())
            .await
            .problem(400, "invalid_request");
    }
    api.post("/v1/pools/nope/leases", json!({}))
        .await
        .problem(404, "pool_not_found");

    // Freeze: 423, and revoke_leases ends the live ones.
    let f = api
        .post(
            "/v1/pools/p/freeze",
            json!({"revoke_leases": true, "reason": "drill"}),
        )
        .await;
    assert_eq!(f.status, 200);
    assert_eq!(f.body["leases_ended"].as_array().unwrap().len(), 1);
    api.post("/v1/pools/p/leases", json!({}))
        .await
        .problem(423, "pool_frozen");
    api.post(
        &format!("/v1/pools/p/leases/{}/renew", rot.str("lease_id")),
        json!({}),
    )
    .await
    .problem(410, "lease_gone");
    assert_eq!(api.get("/v1/pools/p/status").await.body["frozen"], true);
    assert_eq!(
        api.post("/v1/pools/p/unfreeze", json!({})).await.status,
        200
    );
    assert_eq!(api.post("/v1/pools/p/leases", json!({})).await.status, 201);
}

/// Poll `/metrics` until the replica at `base` has at least `n` requests in flight (the
/// asking request included).
async fn in_flight_at_least(base: &str, n: u32) {
    let deadline = std::time::Instant::now() + crate::harness::PATIENCE;
    loop {
        let m = metrics_text(base).await;
        if sample(&m, "tv_http_requests_in_flight", &[]).unwrap_or(0.0) >= f64::from(n) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{m}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let mut t = one(&[]).await;
    let api = t.api.clone();
    pool(&api, "p", json!({})).await;
    // Nothing to lease: this request waits 1.5 s, and must still get its answer.
    let waiting = tokio::spawn(async move {
        api.post("/v1/pools/p/leases", json!({"wait_ms": 1500}))
            .await
    });
    // In flight = the waiting request plus the /metrics request asking.
    in_flight_at_least(&t.vault.base, 2).await;
    let st = tokio::task::spawn_blocking(move || {
        let st = t.vault.child.terminate(std::time::Duration::from_secs(10));
        (st, t)
    });
    let a = waiting.await.unwrap();
    a.problem(503, "pool_exhausted");
    let (status, _t) = st.await.unwrap();
    assert!(status.expect("exited").success());
}

/// The value of one Prometheus sample line, found by its name and labels in any order.
#[tokio::test]
async fn metrics_count_answers_by_route_template_and_outcomes() {
    let t = one(&[]).await;
    let api = &t.api;
    pool(api, "m", json!({"max_leases_per_token": 1})).await;
    let a = api
        .post("/v1/pools/m/tokens", json!({"secret": "metric-secret-1"}))
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let l = api.post("/v1/pools/m/leases", json!({})).await;
    assert_eq!(l.status, 201, "{l:?}");
    api.post("/v1/pools/m/leases", json!({}))
        .await
        .problem(503, "pool_exhausted");
    let r = api
        .post(
            &format!("/v1/pools/m/leases/{}/release", l.str("lease_id")),
            json!({"outcome": "rate_limited", "retry_after_s": 30}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    // A hostile path must not become a series of its own.
    api.get("/v1/no/such/route/hostile-label-xyz")
        .await
        .problem(404, "not_found");

    let m = metrics_text(&t.vault.base).await;
    let route = r#"route="/v1/pools/{pool}/leases""#;
    assert_eq!(
        sample(&m, "tv_http_responses_total", &[route, r#"status="201""#]),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "tv_http_responses_total", &[route, r#"status="503""#]),
        Some(1.0),
        "{m}"
    );
    assert!(
        sample(&m, "tv_http_request_duration_seconds_count", &[route]).is_some(),
        "{m}"
    );
    assert_eq!(
        sample(&m, "tv_problems_total", &[r#"code="pool_exhausted""#]),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "tv_lease_outcomes_total",
            &[r#"pool="m""#, r#"outcome="rate_limited""#]
        ),
        Some(1.0),
        "{m}"
    );
    assert!(!m.contains("hostile-label-xyz"), "{m}");
    assert!(m.contains(r#"route="unmatched""#), "{m}");
    assert!(!m.contains("metric-secret-1"), "{m}");
}

/// Every route of the API contract (API.md), as method and path template.
const CONTRACT: &[(&str, &str)] = &[
    ("put", "/v1/pools/{pool}"),
    ("get", "/v1/pools"),
    ("get", "/v1/pools/{pool}"),
    ("delete", "/v1/pools/{pool}"),
    ("get", "/v1/pools/{pool}/status"),
    ("get", "/v1/pools/{pool}/rotations"),
    ("post", "/v1/pools/{pool}/freeze"),
    ("post", "/v1/pools/{pool}/unfreeze"),
    ("post", "/v1/pools/{pool}/rotate"),
    ("post", "/v1/pools/{pool}/rotate/cancel"),
    ("post", "/v1/pools/{pool}/tokens"),
    ("get", "/v1/pools/{pool}/tokens"),
    ("get", "/v1/pools/{pool}/tokens/{id}"),
    ("post", "/v1/pools/{pool}/tokens/{id}/revoke"),
    ("post", "/v1/pools/{pool}/tokens/{id}/deprecate"),
    ("post", "/v1/pools/{pool}/tokens/{id}/restore"),
    ("post", "/v1/pools/{pool}/tokens/{id}/refresh"),
    ("delete", "/v1/pools/{pool}/tokens/{id}"),
    ("post", "/v1/pools/{pool}/leases"),
    ("post", "/v1/pools/{pool}/leases/{lease}/renew"),
    ("post", "/v1/pools/{pool}/leases/{lease}/release"),
    ("post", "/v1/pools/{pool}/leases/{lease}/rotate"),
    ("get", "/v1/pools/{pool}/pipelines"),
    ("put", "/v1/pools/{pool}/pipelines/{name}"),
    ("get", "/v1/pools/{pool}/pipelines/{name}"),
    ("delete", "/v1/pools/{pool}/pipelines/{name}"),
    ("get", "/v1/events"),
    ("post", "/v1/pools/{pool}/refresh-jobs/claim"),
    ("post", "/v1/pools/{pool}/refresh-jobs/{job}/complete"),
    ("post", "/v1/pools/{pool}/refresh-jobs/{job}/fail"),
    ("post", "/v1/clients"),
    ("post", "/v1/clients/revoke"),
    ("post", "/v1/credentials/revoke"),
    ("post", "/v1/introspect"),
    ("get", "/.well-known/jwks.json"),
    ("get", "/v1/audit"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

/// A documented route as a call: its method, and its path with pool `p`, token `t`, lease `l`
/// and job `j`.
fn concrete(method: &str, path: &str) -> (Method, String) {
    let url = path
        .replace("{pool}", "p")
        .replace("{id}", "t")
        .replace("{lease}", "l")
        .replace("{job}", "j")
        .replace("{name}", "n");
    (
        Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
        url,
    )
}

#[tokio::test]
async fn openapi_documents_exactly_the_routes_served() {
    let t = one(&[]).await;
    let anonymous = Api::new(&t.vault.base);
    let res = anonymous
        .http
        .get(format!("{}/openapi.json", t.vault.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "no authentication needed");
    assert_eq!(res.headers()["content-type"], "application/json");
    let doc: serde_json::Value = res.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");

    let mut documented = std::collections::BTreeSet::new();
    let mut operation_ids = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            documented.insert((method.clone(), path.clone()));
            assert!(
                operation_ids.insert(op["operationId"].as_str().unwrap().to_string()),
                "operation ids are unique: {op}"
            );
            if path.starts_with("/v1/") {
                assert_eq!(op["security"][0]["bearer"], json!([]), "{path}");
                assert!(op["responses"]["401"].is_object(), "{path}");
            }
            // Every JSON answer names its schema (no untyped `{}` body).
            for (status, r) in op["responses"].as_object().unwrap() {
                if let Some(schema) = r["content"]["application/json"]["schema"].as_object() {
                    assert!(
                        schema.contains_key("$ref")
                            || schema.contains_key("properties")
                            || schema.get("type").is_some_and(|t| t != "object"),
                        "{method} {path} {status} answers an untyped body: {schema:?}"
                    );
                }
            }
            // The route is served: anonymous calls reach the auth layer (which only runs on
            // matched routes) or, for the public routes, the handler.
            let (m, url) = concrete(method, path);
            let a = anonymous.call(m, &url, None).await;
            if path.starts_with("/v1/") {
                a.problem(401, "unauthorized");
            } else {
                assert_eq!(a.status, 200, "{method} {path}: {a:?}");
            }
        }
    }
    let contract: std::collections::BTreeSet<_> = CONTRACT
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented, contract,
        "the document lists exactly the contract's routes"
    );
    let exhausted = &doc["paths"]["/v1/pools/{pool}/leases"]["post"]["responses"]["503"];
    assert!(
        exhausted["content"]["application/problem+json"]["schema"]["$ref"]
            .as_str()
            .unwrap()
            .ends_with("/Problem"),
        "{exhausted}"
    );
    // Secrets in request bodies are marked as such for generated clients.
    assert_eq!(
        doc["components"]["schemas"]["TokenInput"]["properties"]["secret"]["format"],
        "password"
    );
    // The server's own limits are in the document: name patterns, required fields...
    let params = &doc["paths"]["/v1/pools/{pool}"]["get"]["parameters"];
    assert_eq!(params[0]["schema"]["maxLength"], 64, "{params}");
    assert!(params[0]["schema"]["pattern"].is_string(), "{params}");
    let mint = &doc["components"]["schemas"]["MintInput"]["required"];
    assert_eq!(mint, &json!(["sub", "scopes"]), "{mint}");
    // ...and a body is documented as required exactly where the server refuses to go without
    // one (an all-optional body may be left out).
    pool(&t.api, "p", json!({})).await;
    t.api
        .post("/v1/pools/p/tokens", json!({"id": "t", "secret": "s"}))
        .await;
    let mut required_bodies = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(required) = op["requestBody"]["required"].as_bool() else {
                continue;
            };
            let (m, url) = concrete(method, path);
            let a = t.api.call(m, &url, None).await;
            if required {
                required_bodies += 1;
                assert_eq!(a.status, 400, "{method} {path} without its body: {a:?}");
            } else {
                assert_ne!(a.status, 400, "{method} {path} without a body: {a:?}");
            }
        }
    }
    assert!(required_bodies >= 5, "{required_bodies}");
}
