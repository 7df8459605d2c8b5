//! Workers over gRPC (`proto/tokenvault/v1/vault.proto`): the same vault, the same answers as
//! REST, errors as gRPC status codes with the problem code, health for load balancers.

use serde_json::{json, Value};
use testkit::{free_port, RedisServer};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_types::StatusExt;
use vault_api::grpc::pb;

use crate::harness::{Deployment, Vault};

/// A vault with a gRPC listener too, and a connected client.
async fn grpc_vault(dep: &Deployment) -> (Vault, pb::vault_client::VaultClient<Channel>, String) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let v = dep.vault(&[("TV_GRPC_LISTEN_ADDR", addr.as_str())]).await;
    let url = format!("http://{addr}");
    let channel = Channel::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .expect("the gRPC listener accepts");
    (v, pb::vault_client::VaultClient::new(channel), url)
}

/// The next message of a server stream, waited for with patience.
async fn next(s: &mut tonic::Streaming<pb::Event>) -> Result<Option<pb::Event>, tonic::Status> {
    tokio::time::timeout(crate::harness::PATIENCE, s.message())
        .await
        .expect("an event in time")
}

/// `msg` with `token` as its `authorization` metadata.
fn authed<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    r
}

/// The problem code a status carries, and its retry delay.
fn problem(s: &tonic::Status) -> (Code, String, Option<std::time::Duration>) {
    (
        s.code(),
        s.get_details_error_info()
            .map(|i| i.reason)
            .unwrap_or_default(),
        s.get_details_retry_info().and_then(|r| r.retry_delay),
    )
}

/// The same scenario through REST and through gRPC, on two identical pools: the same tokens,
/// answers, audit entries and events.
#[tokio::test]
async fn rest_and_grpc_answer_alike() {
    let redis = RedisServer::start();
    let dep = Deployment::new(&redis);
    let (v, mut g, _) = grpc_vault(&dep).await;
    let api = dep.api(&v);
    for pool in ["viarest", "viagrpc"] {
        api.put(
            &format!("/v1/pools/{pool}"),
            json!({"quota_limit": 10, "quarantine_after_strikes": 1}),
        )
        .await;
        api.post(
            &format!("/v1/pools/{pool}/tokens"),
            json!({"tokens": [{"id": "a", "secret": "sa"}, {"id": "b", "secret": "sb"}]}),
        )
        .await;
    }
    // REST: lease (with a key, twice), renew, release unauthorized, lease, rotate.
    let key = [("Idempotency-Key", "k1")];
    let body = json!({"worker": "w", "units": 2});
    let r1 = api
        .call_with(
            reqwest::Method::POST,
            "/v1/pools/viarest/leases",
            Some(body.clone()),
            &key,
        )
        .await;
    let r1b = api
        .call_with(
            reqwest::Method::POST,
            "/v1/pools/viarest/leases",
            Some(body),
            &key,
        )
        .await;
    let rl = r1.str("lease_id");
    let rr = api
        .post(
            &format!("/v1/pools/viarest/leases/{rl}/renew"),
            json!({"ttl_s": 30}),
        )
        .await;
    let rrel = api
        .post(
            &format!("/v1/pools/viarest/leases/{rl}/release"),
            json!({"outcome": "rate_limited", "retry_after_s": 60, "used": 1}),
        )
        .await;
    let r2 = api
        .post("/v1/pools/viarest/leases", json!({"worker": "w"}))
        .await;
    let rrot = api
        .post(
            &format!("/v1/pools/viarest/leases/{}/rotate", r2.str("lease_id")),
            json!({"outcome": "forbidden"}),
        )
        .await;
    // gRPC: the same.
    let lease = |key: &str| pb::LeaseRequest {
        pool: "viagrpc".into(),
        worker: "w".into(),
        units: Some(2),
        idempotency_key: key.into(),
        ..Default::default()
    };
    let g1 = g
        .lease(authed(lease("k1"), &dep.admin))
        .await
        .unwrap()
        .into_inner();
    let g1b = g
        .lease(authed(lease("k1"), &dep.admin))
        .await
        .unwrap()
        .into_inner();
    let gl = g1.lease.clone().unwrap();
    let gr = g
        .renew(authed(
            pb::RenewRequest {
                pool: "viagrpc".into(),
                lease_id: gl.lease_id.clone(),
                ttl_s: Some(30),
                units: None,
            },
            &dep.admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let grel = g
        .release(authed(
            pb::ReleaseRequest {
                pool: "viagrpc".into(),
                lease_id: gl.lease_id.clone(),
                report: Some(pb::Report {
                    outcome: "rate_limited".into(),
                    retry_after_s: Some(60.0),
                    used: Some(1),
                    ..Default::default()
                }),
            },
            &dep.admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let g2 = g
        .lease(authed(
            pb::LeaseRequest {
                pool: "viagrpc".into(),
                worker: "w".into(),
                ..Default::default()
            },
            &dep.admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .lease
        .unwrap();
    let grot = g
        .rotate(authed(
            pb::ReleaseRequest {
                pool: "viagrpc".into(),
                lease_id: g2.lease_id.clone(),
                report: Some(pb::Report {
                    outcome: "forbidden".into(),
                    ..Default::default()
                }),
            },
            &dep.admin,
        ))
        .await;
    // The answers match, field by field (ids and times aside).
    assert_eq!((r1.status.as_u16(), r1b.status.as_u16()), (201, 200));
    assert!(!g1.replayed && g1b.replayed);
    assert_eq!(r1b.str("lease_id"), rl);
    assert_eq!(g1b.lease.unwrap().lease_id, gl.lease_id);
    assert_eq!(r1.str("token_id"), gl.token_id);
    assert_eq!(r1.body["units"], gl.units);
    assert_eq!(r1.str("secret"), gl.secret);
    assert_eq!(rr.body["units"], gr.lease.unwrap().units);
    assert_eq!(rrel.str("token_id"), grel.token_id);
    assert_eq!(rrel.str("token_state"), grel.state);
    assert_eq!(r2.str("token_id"), g2.token_id);
    // Rotating with every other token cooling: no token, the report applied, the same refusal.
    rrot.problem(503, "pool_exhausted");
    let err = grot.expect_err("no other token");
    assert_eq!(problem(&err).0, Code::ResourceExhausted);
    assert_eq!(problem(&err).1, "pool_exhausted");
    assert!(problem(&err).2.is_some(), "{err:?}");
    // The audit trails and events match.
    let actions = |pool: &str| {
        let api = api.clone();
        let pool = pool.to_string();
        async move {
            let a = api.get(&format!("/v1/audit?pool={pool}")).await.body;
            a["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["action"].clone(),
                        e["outcome"].clone(),
                        e["token_id"].clone(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let (ra, ga) = (actions("viarest").await, actions("viagrpc").await);
    assert!(ra.len() >= 4, "{ra:?}");
    assert_eq!(ra, ga, "the audit trails differ");
    let events = |pool: &str| -> Vec<Value> {
        redis
            .cli(&["XRANGE", &format!("{}:events", dep.prefix), "-", "+"])
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["pool"] == pool)
            .map(|e| json!([e["type"], e["token_id"], e["reason"]]))
            .collect()
    };
    // The read side answers what REST answers.
    let st = g
        .pool_status(authed(
            pb::PoolStatusRequest {
                pool: "viagrpc".into(),
            },
            &dep.admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let rest_st = api.get("/v1/pools/viagrpc/status").await.body;
    assert_eq!(json!(st.tokens), rest_st["tokens"]);
    assert_eq!(st.leases_active, rest_st["leases_active"].as_u64().unwrap());
    let as_json: Value = serde_json::from_str(&st.json).unwrap();
    assert_eq!(as_json["tokens"], rest_st["tokens"]);
    let meta = g
        .token_meta(authed(
            pb::TokenMetaRequest {
                pool: "viagrpc".into(),
                token_id: "a".into(),
            },
            &dep.admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let rest_meta = api.get("/v1/pools/viagrpc/tokens/a").await.body;
    assert_eq!(
        serde_json::from_str::<Value>(&meta.json).unwrap(),
        rest_meta
    );
    assert_eq!(meta.state, rest_meta["state"].as_str().unwrap());
    let rest_events = events("viarest");
    assert!(!rest_events.is_empty(), "the quarantine is announced");
    assert_eq!(rest_events, events("viagrpc"));
}

/// Errors as gRPC codes with the problem code; a call without a valid token is refused;
/// health answers SERVING.
#[tokio::test]
async fn grpc_errors_carry_the_problem_code_and_health_serves() {
    let redis = RedisServer::start();
    let dep = Deployment::new(&redis);
    let (v, mut g, url) = grpc_vault(&dep).await;
    let api = dep.api(&v);
    api.put("/v1/pools/p", json!({})).await;
    let lease = |pool: &str| pb::LeaseRequest {
        pool: pool.into(),
        ..Default::default()
    };
    let e = g.lease(Request::new(lease("p"))).await.unwrap_err();
    assert_eq!(problem(&e).0, Code::Unauthenticated, "{e:?}");
    let e = g
        .lease(authed(lease("p"), "not-a-token"))
        .await
        .unwrap_err();
    assert_eq!(problem(&e).0, Code::Unauthenticated, "{e:?}");
    let e = g
        .lease(authed(lease("nope"), &dep.admin))
        .await
        .unwrap_err();
    assert_eq!(
        (problem(&e).0, problem(&e).1.as_str()),
        (Code::NotFound, "pool_not_found")
    );
    let e = g.lease(authed(lease("p"), &dep.admin)).await.unwrap_err();
    assert_eq!(
        (problem(&e).0, problem(&e).1.as_str()),
        (Code::ResourceExhausted, "pool_exhausted")
    );
    api.post("/v1/pools/p/freeze", json!({})).await;
    let e = g.lease(authed(lease("p"), &dep.admin)).await.unwrap_err();
    assert_eq!(
        (problem(&e).0, problem(&e).1.as_str()),
        (Code::FailedPrecondition, "pool_frozen")
    );
    // A deposit-only token may not lease.
    let depositor = dep.token("d", &[vault_core::auth::Scope::Deposit], None);
    let e = g.lease(authed(lease("p"), &depositor)).await.unwrap_err();
    assert_eq!(problem(&e).0, Code::PermissionDenied, "{e:?}");
    // Counted by method and code.
    let m = crate::harness::metrics_text(&v.base).await;
    let n = crate::harness::sample(
        &m,
        "tv_grpc_requests_total",
        &["method=\"Lease\"", "code=\"NotFound\""],
    );
    assert_eq!(n, Some(1.0), "{m}");
    // Health, for load balancers.
    let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
    let mut h = tonic_health::pb::health_client::HealthClient::new(channel);
    let end = std::time::Instant::now() + crate::harness::PATIENCE;
    loop {
        let s = h
            .check(tonic_health::pb::HealthCheckRequest {
                service: "tokenvault.v1.Vault".into(),
            })
            .await;
        if s.as_ref().is_ok_and(|r| r.get_ref().status == 1) {
            break;
        }
        assert!(std::time::Instant::now() < end, "never SERVING: {s:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `Watch` streams a pool's events (a revocation and the lease it ended), resumes after an
/// event id with what was missed, and ends when its client token is revoked.
#[tokio::test]
async fn watch_streams_revocations_resumes_and_ends_with_its_token() {
    use vault_core::auth::Scope;
    let redis = RedisServer::start();
    let dep = Deployment::new(&redis);
    let (v, mut g, _) = grpc_vault(&dep).await;
    let api = dep.api(&v);
    api.put("/v1/pools/p", json!({})).await;
    api.post(
        "/v1/pools/p/tokens",
        json!({"tokens": [{"id": "a", "secret": "sa"}, {"id": "b", "secret": "sb"}]}),
    )
    .await;
    let watcher = dep.token("watch", &[Scope::Lease], Some(vec!["p".into()]));
    let watch = |last: &str| pb::WatchRequest {
        pools: vec!["p".into()],
        last_event_id: last.into(),
    };
    let mut events = g
        .watch(authed(watch(""), &watcher))
        .await
        .unwrap()
        .into_inner();
    // Subscribed: the first revocation is seen live (the watch is open once answered).
    let l = api.post("/v1/pools/p/leases", json!({})).await;
    let token = l.str("token_id");
    api.post(
        &format!("/v1/pools/p/tokens/{token}/revoke"),
        json!({"reason": "leaked"}),
    )
    .await;
    let first = next(&mut events).await.unwrap().expect("token.revoked");
    assert_eq!(
        (first.r#type.as_str(), first.token_id.as_str()),
        ("token.revoked", token.as_str())
    );
    let second = next(&mut events).await.unwrap().expect("lease.revoked");
    assert_eq!(
        (second.r#type.as_str(), second.lease_id.as_str()),
        ("lease.revoked", l.str("lease_id").as_str())
    );
    // Resuming after the first gets the second again, then what happened since.
    let other = if token == "a" { "b" } else { "a" };
    api.post(
        &format!("/v1/pools/p/tokens/{other}/revoke"),
        json!({"reason": "rotated"}),
    )
    .await;
    let mut resumed = g
        .watch(authed(watch(&first.id), &watcher))
        .await
        .unwrap()
        .into_inner();
    let r1 = next(&mut resumed).await.unwrap().unwrap();
    let r2 = next(&mut resumed).await.unwrap().unwrap();
    assert_eq!(r1.id, second.id);
    assert_eq!(
        (r2.r#type.as_str(), r2.token_id.as_str()),
        ("token.revoked", other)
    );
    // A watcher without the pool is refused; the revoked watcher's stream ends.
    let stranger = dep.token("x", &[Scope::Lease], Some(vec!["q".into()]));
    let e = g.watch(authed(watch(""), &stranger)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let introspected = api.post("/v1/introspect", json!({"token": watcher})).await;
    let r = api
        .post(
            "/v1/clients/revoke",
            json!({"jti": introspected.str("jti")}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let ended = tokio::time::timeout(crate::harness::PATIENCE, async {
        loop {
            match events.message().await {
                Ok(Some(_)) => continue,
                _ => return true,
            }
        }
    })
    .await;
    assert_eq!(ended, Ok(true), "the watch outlived its revoked token");
}

/// haproxy (deploy/haproxy.cfg) balances gRPC over two replicas: HTTP/2 to each, every call on
/// its own, health checked; and the invariant checker finds no violation with workers over gRPC.
#[tokio::test(flavor = "multi_thread")]
async fn haproxy_balances_grpc_calls_over_the_replicas_and_the_checker_holds_over_grpc() {
    let redis = RedisServer::start();
    let dep = Deployment::new(&redis);
    let (g1, g2) = (free_port(), free_port());
    let a1 = format!("127.0.0.1:{g1}");
    let a2 = format!("127.0.0.1:{g2}");
    let v1 = dep.vault(&[("TV_GRPC_LISTEN_ADDR", a1.as_str())]).await;
    let v2 = dep.vault(&[("TV_GRPC_LISTEN_ADDR", a2.as_str())]).await;
    let port = |v: &Vault| v.base.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    for g in [g1, g2] {
        Channel::from_shared(format!("http://127.0.0.1:{g}"))
            .unwrap()
            .connect()
            .await
            .unwrap_or_else(|e| panic!("gRPC on {g}: {e}"));
    }
    let haproxy = testkit::Haproxy::start_with_grpc(&[port(&v1), port(&v2)], &[g1, g2]);
    let api = dep.api(&v1);
    api.put("/v1/pools/p", json!({})).await;
    api.post("/v1/pools/p/tokens", json!({"id": "a", "secret": "sa"}))
        .await;
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", haproxy.grpc_port))
        .unwrap()
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", haproxy.child.output()));
    let mut g = pb::vault_client::VaultClient::new(channel);
    // Calls until each replica has served some (HTTP/2 on both sides, each call balanced).
    let end = std::time::Instant::now() + crate::harness::PATIENCE;
    let calls = |base: String| async move {
        let m = crate::harness::metrics_text(&base).await;
        // Lease and Release alternate over two replicas: count both.
        // Every code counts (an exhausted pool answers RESOURCE_EXHAUSTED).
        ["Lease", "Release"]
            .iter()
            .map(|method| {
                let label = format!("method=\"{method}\"");
                crate::harness::sample_sum(&m, "tv_grpc_requests_total", &[label.as_str()])
            })
            .sum::<f64>()
    };
    loop {
        let l = g
            .lease(authed(
                pb::LeaseRequest {
                    pool: "p".into(),
                    ..Default::default()
                },
                &dep.admin,
            ))
            .await
            .unwrap_or_else(|e| panic!("{e:?}: {}", haproxy.child.output()))
            .into_inner()
            .lease
            .unwrap();
        g.release(authed(
            pb::ReleaseRequest {
                pool: "p".into(),
                lease_id: l.lease_id,
                report: None,
            },
            &dep.admin,
        ))
        .await
        .unwrap();
        if calls(v1.base.clone()).await >= 4.0 && calls(v2.base.clone()).await >= 4.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "one replica never got a call ({} and {}): {}",
            calls(v1.base.clone()).await,
            calls(v2.base.clone()).await,
            haproxy.child.output()
        );
    }

    // The invariant checker's workers over gRPC through haproxy (its operator on REST, also
    // through haproxy): every rule holds across the two replicas.
    let _janitor = dep.janitor(200);
    let rest = format!("http://127.0.0.1:{}", haproxy.port);
    let grpc = format!("http://127.0.0.1:{}", haproxy.grpc_port);
    let leases_before = calls(v1.base.clone()).await + calls(v2.base.clone()).await;
    let run = crate::deployment::checker(
        &dep,
        &[&rest],
        &["--transport", "grpc", "--grpc-urls", &grpc],
    );
    let started = std::time::Instant::now();
    crate::deployment::more_load(&redis, crate::deployment::fcalls(&redis), 1000, "over gRPC")
        .await;
    tokio::time::sleep(std::time::Duration::from_secs(5).saturating_sub(started.elapsed())).await;
    let out = tokio::task::spawn_blocking(move || crate::deployment::judge(run))
        .await
        .unwrap();
    assert!(out.contains("workers over gRPC"), "{out}");
    // The workers' calls went over gRPC to both replicas.
    let (n1, n2) = (calls(v1.base.clone()).await, calls(v2.base.clone()).await);
    assert!(
        n1 + n2 >= leases_before + 100.0 && n1 >= 50.0 && n2 >= 50.0,
        "gRPC lease and release calls: {n1} and {n2}\n{out}\nhaproxy: {}",
        haproxy.child.output()
    );
}

/// Open a raw HTTP/2 connection to `addr` (the client preface and an empty SETTINGS frame), as a
/// gRPC channel does before its first call.
async fn h2_connection(addr: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    s
}

/// Read `s` until the server closes it (with patience); false when it stays open that long.
async fn closed_by_server(s: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    tokio::time::timeout(crate::harness::PATIENCE, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// gRPC connections meet REST's bounds (one accept loop serves both listeners): one idle past
/// `TV_IDLE_TIMEOUT_MS` is closed while one carrying a `Watch` stays open and live, and the
/// per-address connection cap refuses the one over it.
#[tokio::test]
async fn grpc_connections_are_bounded_like_rests() {
    let redis = RedisServer::start();
    let dep = Deployment::new(&redis);
    let addr = format!("127.0.0.1:{}", free_port());
    let v = dep
        .vault(&[
            ("TV_GRPC_LISTEN_ADDR", addr.as_str()),
            ("TV_IDLE_TIMEOUT_MS", "300"),
            ("TV_MAX_CONNECTIONS_PER_ADDR", "6"),
        ])
        .await;
    let api = dep.api(&v);
    api.put("/v1/pools/p", json!({})).await;
    api.post("/v1/pools/p/tokens", json!({"id": "a", "secret": "sa"}))
        .await;

    // A Watch keeps its connection busy: it outlives many idle periods.
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut g = pb::vault_client::VaultClient::new(channel);
    let watch = pb::WatchRequest {
        pools: vec!["p".into()],
        last_event_id: String::new(),
    };
    let mut events = g
        .watch(authed(watch, &dep.admin))
        .await
        .unwrap()
        .into_inner();
    // An idle connection is closed (after its idle period, by the server).
    let mut idle = h2_connection(&addr).await;
    assert!(
        closed_by_server(&mut idle).await,
        "the idle connection stayed open"
    );
    // By now the watching connection has been open past the idle limit; it still delivers.
    api.post("/v1/pools/p/tokens/a/revoke", json!({"reason": "test"}))
        .await;
    let e = next(&mut events).await.unwrap().expect("an event");
    assert_eq!(
        (e.r#type.as_str(), e.token_id.as_str()),
        ("token.revoked", "a")
    );
    drop(events);
    drop(g);

    // The per-address cap: connections past it are closed at once, and counted.
    let mut held = vec![];
    let mut refused = None;
    for _ in 0..12 {
        let mut c = h2_connection(&addr).await;
        // The server answers an admitted connection with its SETTINGS: it was taken in.
        use tokio::io::AsyncReadExt;
        let mut first = [0u8; 9];
        match tokio::time::timeout(crate::harness::PATIENCE, c.read(&mut first)).await {
            Ok(Ok(n)) if n > 0 => held.push(c),
            _ => {
                refused = Some(held.len());
                break;
            }
        }
    }
    let admitted = refused.expect("a connection over the cap was refused");
    assert!(
        admitted <= 6,
        "{admitted} connections admitted from one address"
    );
    drop(held);
    // Counted (read once the held connections are gone: the harness connects from the same
    // address).
    let end = std::time::Instant::now() + crate::harness::PATIENCE;
    loop {
        let m = crate::harness::metrics_text(&v.base).await;
        let reason = "reason=\"max_connections_per_addr\"";
        if crate::harness::sample_sum(&m, "tv_http_connections_refused_total", &[reason]) >= 1.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "the refusal is not counted: {m}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
