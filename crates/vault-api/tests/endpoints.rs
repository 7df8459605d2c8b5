//! Each pool and token endpoint's success and failure answers (status codes, problem+json,
//! stable codes) and bad input from an outside attack run (far-future times, misplaced
//! secrets), over the real router with `oneshot` on the test binary's shared Redis. The
//! lease endpoints, which wait for tokens and count requests in flight, are tested end to end
//! (tests/e2e/http.rs).

mod common;

use axum::body::Body;
use axum::http::Method;
use common::Vault;
use serde_json::json;

async fn pool(api: &Vault, name: &str, cfg: serde_json::Value) {
    let a = api.put(&format!("/v1/pools/{name}"), cfg).await;
    assert_eq!(a.status, 201, "{a:?}");
}

#[tokio::test]
async fn pools_endpoints() {
    let api = &Vault::start().await;
    let a = api
        .put(
            "/v1/pools/p1",
            json!({"quota_limit": 100, "max_leases_per_token": 2}),
        )
        .await;
    assert_eq!(a.status, 201);
    assert_eq!(a.body["quota_limit"], 100);
    assert_eq!(a.body["min_token_ttl_s"], 90);
    let a = api.put("/v1/pools/p1", json!({"quota_limit": 50})).await;
    assert_eq!(a.status, 200, "second PUT updates");
    assert_eq!(api.get("/v1/pools/p1").await.body["quota_limit"], 50);
    let list = api.get("/v1/pools").await;
    assert_eq!(list.body["pools"][0]["name"], "p1");
    assert_eq!(list.body["pools"][0]["tokens"]["active"], 0);

    api.get("/v1/pools/nope")
        .await
        .problem(404, "pool_not_found");
    api.get("/v1/pools/nope/status")
        .await
        .problem(404, "pool_not_found");
    for bad in ["a%20b", "a%7Bb%7D", "x:y", &"x".repeat(65)] {
        api.put(&format!("/v1/pools/{bad}"), json!({}))
            .await
            .problem(400, "invalid_request");
    }
    api.put("/v1/pools/p2", json!({"quota_limt": 5}))
        .await
        .problem(400, "invalid_request");
    api.put("/v1/pools/p2", json!({"quota_limit": -5}))
        .await
        .problem(400, "invalid_request");
    api.put("/v1/pools/p2", json!({"quota_limit": "many"}))
        .await
        .problem(400, "invalid_request");
    api.put("/v1/pools/p2", json!({"lease_ttl_s": 0}))
        .await
        .problem(400, "invalid_request");
    api.put(
        "/v1/pools/p2",
        json!({"quota_limit": 5, "quota_reserve": 5}),
    )
    .await
    .problem(400, "invalid_request");
    // Nothing was created by the refused requests.
    api.get("/v1/pools/p2").await.problem(404, "pool_not_found");

    // Huge body: 413 before any parsing; wrong content type: 415; broken JSON: 400.
    let big = "x".repeat(1024 * 1024 + 10);
    api.send_json_text(Method::PUT, "/v1/pools/p3", big)
        .await
        .problem(413, "payload_too_large");
    let req = api
        .request(Method::PUT, "/v1/pools/p3")
        .header("content-type", "text/plain")
        .body(Body::from("{}"))
        .unwrap();
    api.send(req).await.problem(415, "unsupported_media_type");
    api.send_json_text(Method::PUT, "/v1/pools/p3", "{\"quota")
        .await
        .problem(400, "invalid_json");
    // One JSON value and nothing after it: trailing characters are refused, not ignored, and
    // the refused request changed nothing.
    for (body, trailing) in [
        (r#"{"quota_limit": 7} xyz"#, true),
        (r#"{"quota_limit": 7}{"quota_limit": 8}"#, true),
        ("{\"quota_limit\": 7} \n\t ", false),
    ] {
        let a = api.send_json_text(Method::PUT, "/v1/pools/p3", body).await;
        if trailing {
            a.problem(400, "invalid_json");
            api.get("/v1/pools/p3").await.problem(404, "pool_not_found");
        } else {
            assert_eq!(a.status, 201, "trailing whitespace is fine: {:?}", a.body);
        }
    }
    api.get("/v1/nothing/here").await.problem(404, "not_found");
    api.call(Method::PATCH, "/v1/pools/p1", None)
        .await
        .problem(405, "method_not_allowed");

    let st = api.get("/v1/pools/p1/status").await;
    assert_eq!(st.status, 200);
    for f in [
        "tokens",
        "leases_active",
        "avg_ttl_remaining_s",
        "utilization",
        "refresh_success_rate",
        "quota_used_ratio",
        "frozen",
    ] {
        assert!(st.body.get(f).is_some(), "status lacks {f}: {}", st.body);
    }

    api.post("/v1/pools/p1/tokens", json!({"secret": "s"}))
        .await;
    api.delete("/v1/pools/p1").await.problem(409, "conflict");
    assert_eq!(api.delete("/v1/pools/p1?force=true").await.status, 204);
    api.get("/v1/pools/p1").await.problem(404, "pool_not_found");
    api.delete("/v1/pools/p1?force=maybe")
        .await
        .problem(400, "invalid_request");
}

#[tokio::test]
async fn token_endpoints() {
    let api = &Vault::start().await;
    pool(api, "p", json!({})).await;
    let a = api
        .post(
            "/v1/pools/p/tokens",
            json!({"secret": "one-secret", "id": "t1", "labels": {"acct": "a1"}}),
        )
        .await;
    assert_eq!(a.status, 201);
    assert_eq!(a.body["ids"], json!(["t1"]));
    let a = api.post("/v1/pools/p/tokens", json!({"tokens": [{"secret": "two"}, {"secret": "three", "refresh": {"kind": "external"}}]})).await;
    assert_eq!(a.status, 201);
    let ids: Vec<String> = serde_json::from_value(a.body["ids"].clone()).unwrap();
    assert_eq!(ids.len(), 2);

    api.post("/v1/pools/p/tokens", json!({"secret": "dup", "id": "t1"}))
        .await
        .problem(409, "conflict");
    // The same token again (a retry whose first answer was lost): in already, left as it was.
    let again = api
        .post(
            "/v1/pools/p/tokens",
            json!({"secret": "one-secret", "id": "t1"}),
        )
        .await;
    assert_eq!(again.status, 201, "{again:?}");
    assert_eq!(
        (&again.body["ids"], &again.body["unchanged"]),
        (&json!(["t1"]), &json!(["t1"]))
    );
    // A deposit with anything after its JSON value is refused whole: nothing goes in.
    let before = api.get("/v1/pools/p/status").await.body["tokens"].clone();
    for body in [
        r#"{"tokens":[{"id":"tr1","secret":"trailing-1"}]} xyz"#,
        r#"{"id":"tr2","secret":"trailing-2"}]"#,
    ] {
        api.send_json_text(Method::POST, "/v1/pools/p/tokens", body)
            .await
            .problem(400, "invalid_json");
    }
    assert_eq!(api.get("/v1/pools/p/status").await.body["tokens"], before);
    api.get("/v1/pools/p/tokens/tr1")
        .await
        .problem(404, "token_not_found");
    api.post("/v1/pools/p/tokens", json!({"id": "x"}))
        .await
        .problem(400, "invalid_request");
    api.post("/v1/pools/p/tokens", json!({"secret": ""}))
        .await
        .problem(400, "invalid_request");
    api.post(
        "/v1/pools/p/tokens",
        json!({"secret": "eyJhbGciOiJIUzI1NiJ9.!!!.sig"}),
    )
    .await
    .problem(400, "invalid_request");
    api.post(
        "/v1/pools/p/tokens",
        json!({"secret": "s", "expires_at": "tomorrow"}),
    )
    .await
    .problem(400, "invalid_request");
    api.post(
        "/v1/pools/p/tokens",
        json!({"secret": "s", "expires_at": 1000}),
    )
    .await
    .problem(400, "invalid_request");
    api.post("/v1/pools/p/tokens", json!({"secret": "s", "id": "bad id"}))
        .await
        .problem(400, "invalid_request");
    api.post(
        "/v1/pools/p/tokens",
        json!({"secret": "s", "refresh": {"kind": "oauth2_refresh_token"}}),
    )
    .await
    .problem(400, "invalid_request");
    api.post("/v1/pools/p/tokens", json!({"tokens": []}))
        .await
        .problem(400, "invalid_request");
    api.post(
        "/v1/pools/p/tokens",
        json!({"tokens": [{"secret": "a", "id": "z"}, {"secret": "b", "id": "z"}]}),
    )
    .await
    .problem(400, "invalid_request");
    api.post("/v1/pools/nope/tokens", json!({"secret": "s"}))
        .await
        .problem(404, "pool_not_found");
    // A secret in a refused deposit is not echoed back.
    let a = api
        .post(
            "/v1/pools/p/tokens",
            json!({"secret": "leaky-secret-value", "bogus": 1}),
        )
        .await;
    a.problem(400, "invalid_request");
    assert!(!a.body.to_string().contains("leaky-secret-value"));

    let m = api.get("/v1/pools/p/tokens/t1").await;
    assert_eq!(m.status, 200);
    assert_eq!(m.body["state"], "active");
    assert_eq!(m.body["labels"]["acct"], "a1");
    assert!(m.str("fingerprint").starts_with("sha256:"));
    assert!(
        !m.body.to_string().contains("one-secret"),
        "metadata must not carry the secret"
    );
    api.get("/v1/pools/p/tokens/nope")
        .await
        .problem(404, "token_not_found");

    // Listing: pages and state filter.
    let page = api.get("/v1/pools/p/tokens?limit=2").await;
    assert_eq!(page.status, 200);
    let mut seen = page.body["tokens"].as_array().unwrap().len();
    let mut cursor = page.body["next_cursor"].clone();
    while let Some(c) = cursor.as_str() {
        let next = api
            .get(&format!("/v1/pools/p/tokens?limit=2&cursor={c}"))
            .await;
        seen += next.body["tokens"].as_array().unwrap().len();
        cursor = next.body["next_cursor"].clone();
    }
    assert_eq!(seen, 3);
    api.get("/v1/pools/p/tokens?state=bogus")
        .await
        .problem(400, "invalid_request");
    api.get("/v1/pools/p/tokens?limit=0")
        .await
        .problem(400, "invalid_request");

    // Lifecycle actions.
    api.post("/v1/pools/p/tokens/t1/restore", json!({}))
        .await
        .problem(409, "conflict");
    api.post("/v1/pools/p/tokens/t1/refresh", json!({}))
        .await
        .problem(409, "conflict");
    let r = api
        .post(&format!("/v1/pools/p/tokens/{}/refresh", ids[1]), json!({}))
        .await;
    assert_eq!(
        (r.status.as_u16(), r.str("state")),
        (202, "refreshing".to_string())
    );
    let d = api
        .post(
            "/v1/pools/p/tokens/t1/deprecate",
            json!({"sunset_at": "2099-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(d.str("state"), "deprecated");
    let rv = api
        .post("/v1/pools/p/tokens/t1/revoke", json!({"reason": "leaked"}))
        .await;
    assert_eq!(rv.str("state"), "revoked");
    let revoked = api.get("/v1/pools/p/tokens?state=revoked").await;
    assert_eq!(revoked.body["tokens"][0]["id"], "t1");
    assert_eq!(api.delete("/v1/pools/p/tokens/t1").await.status, 204);
    api.get("/v1/pools/p/tokens/t1")
        .await
        .problem(404, "token_not_found");
    api.delete("/v1/pools/p/tokens/t1")
        .await
        .problem(404, "token_not_found");
}

/// "Never expires" written as a far-future date leases like a token without expiry, and no
/// time past 9999 is accepted.
#[tokio::test]
async fn far_future_times_are_bounded() {
    let api = &Vault::start().await;
    api.put("/v1/pools/p", json!({})).await;
    let a = api
        .post(
            "/v1/pools/p/tokens",
            json!({"id": "forever", "secret": "s", "expires_at": "9999-12-31T23:59:59Z"}),
        )
        .await;
    assert_eq!(a.status, 201, "{a:?}");
    let l = api.post("/v1/pools/p/leases", json!({})).await;
    assert_eq!(l.status, 201, "{l:?}");
    assert!(l.body["token_expires_at"].is_null(), "{l:?}");
    assert!(api.get("/v1/pools/p/tokens/forever").await.body["expires_at"].is_null());
    for bad in [
        json!(253_402_300_800_000u64),
        json!("+10000-01-01T00:00:00Z"),
    ] {
        api.post(
            "/v1/pools/p/tokens",
            json!({"id": "x", "secret": "s2", "expires_at": bad}),
        )
        .await
        .problem(400, "invalid_request");
    }

    // A cooldown until the year 9999 cools the token 31 days at most...
    let release = format!("/v1/pools/p/leases/{}/release", l.str("lease_id"));
    let r = api
        .post(
            &release,
            json!({"outcome": "rate_limited", "reset_at": "9999-12-31T23:59:59Z"}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.str("token_state"), "cooling");
    let until = api.get("/v1/pools/p/tokens/forever").await.body["cooling_until"]
        .as_str()
        .map(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339))
        .expect("cooling_until")
        .expect("RFC 3339");
    let days = (until - time::OffsetDateTime::now_utc()).whole_days();
    assert!((30..=31).contains(&days), "cooling for {days} days");
    // ...and an admin can end it.
    api.post("/v1/pools/p/leases", json!({}))
        .await
        .problem(503, "pool_exhausted");
    let back = api
        .post("/v1/pools/p/tokens/forever/restore", json!({}))
        .await;
    assert_eq!(back.status, 200, "{back:?}");
    assert_eq!(back.str("state"), "active");
    let l = api.post("/v1/pools/p/leases", json!({})).await;
    assert_eq!(l.status, 201, "leasable again at once: {l:?}");
    let r = api
        .post(
            &format!("/v1/pools/p/leases/{}/release", l.str("lease_id")),
            json!({"outcome": "ok"}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    // Restoring a token that is neither quarantined nor cooling is a conflict.
    api.post("/v1/pools/p/tokens/forever/restore", json!({}))
        .await
        .problem(409, "conflict");
}

/// Contract nits: a JSON body needs its Content-Type, names are not path segments, a secret
/// must fit in an HTTP header, and errors say where a body is wrong, never what it held.
#[tokio::test]
async fn bad_input_is_refused_without_echoing_it() {
    let api = &Vault::start().await;
    api.put("/v1/pools/p", json!({})).await;
    let req = api
        .request(Method::POST, "/v1/pools/p/tokens")
        .body(Body::from(r#"{"secret":"s"}"#))
        .unwrap();
    api.send(req).await.problem(415, "unsupported_media_type");
    for refresh in [
        json!({"kind": "magic"}),
        json!({"kind": "external", "x": 1}),
        json!("none"),
    ] {
        api.put("/v1/pools/p", json!({ "refresh": refresh }))
            .await
            .problem(400, "invalid_request");
    }
    for id in [".", ".."] {
        api.post("/v1/pools/p/tokens", json!({"id": id, "secret": "s"}))
            .await
            .problem(400, "invalid_request");
    }
    for secret in ["line\u{2028}break", "caf\u{e9}", "a\r\nX-Injected: 1"] {
        let a = api
            .post("/v1/pools/p/tokens", json!({"secret": secret}))
            .await;
        a.problem(400, "invalid_request");
        assert!(!a.body.to_string().contains(secret), "{a:?}");
    }
    // A secret put where a number belongs does not come back in the error.
    let a = api
        .post(
            "/v1/pools/p/tokens",
            json!({"secret": "s", "quota_limit": "sk-live-misplaced"}),
        )
        .await;
    a.problem(400, "invalid_request");
    assert!(a.str("detail").contains("quota_limit"), "says where: {a:?}");
    assert!(!a.body.to_string().contains("sk-live-misplaced"), "{a:?}");
}
