//! Three regions on one machine, the way regions fail: each in a network namespace of its own
//! with its own Redis, vault-api and janitor; a global Redis primary in region 1 and a replica
//! of it in regions 2 and 3, each reached over a link that delays every byte by 50 ms each way
//! (testkit's `DelayProxy` in the test's namespace, the only way between two regions: this
//! kernel has no netem). Where namespaces cannot be made (not root), the regions share loopback
//! and the test says so; everything else is the same. Workers lease in every region while credentials, client tokens and a
//! pool are revoked or frozen in region 1; a subscriber in region 3 measures when it learns.
//! Then region 3's link is cut, revocations are made meanwhile, the link heals, and region 3
//! must apply every one of them, none twice.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{DelayProxy, Netns, RedisServer};
use tokio::sync::mpsc;
use vault_core::auth::Scope;

use crate::harness::{Api, Deployment, Vault, PATIENCE};

/// The delay of each inter-region link, each way.
const LINK_DELAY: Duration = Duration::from_millis(50);
/// Credentials revoked while every link is up, one at a time.
const REVOCATIONS: usize = 100;
/// Credentials revoked while region 3 is cut off.
const DURING_CUT: usize = 10;
/// How long region 3 stays cut off (the 30 s; `TV_TEST_REGION_CUT_S` to shorten).
fn cut_for() -> Duration {
    Duration::from_secs(
        std::env::var("TV_TEST_REGION_CUT_S")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(30),
    )
}

struct Region {
    _redis: RedisServer,
    global_replica: Option<RedisServer>,
    dep: Deployment,
    vault: Vault,
    janitor: testkit::Child,
    /// The settings its processes were started with.
    env: Vec<(String, String)>,
    api: Api,
}

impl Region {
    /// Start its janitor (and so its follower) again, as it was.
    fn restart_janitor(&mut self) {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.janitor = self.dep.janitor_with(200, &env);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Where `n` regions run: a network namespace each, or, where this machine cannot make them,
/// all on loopback (printed, so a run's figures say which).
fn hosts(n: usize) -> Vec<Option<Arc<Netns>>> {
    let made: Result<Vec<Netns>, String> = (0..n).map(|_| Netns::create()).collect();
    match made {
        Ok(spaces) => {
            let names: Vec<String> = spaces
                .iter()
                .map(|s| format!("{} ({})", s.name, s.addr))
                .collect();
            println!("regions in network namespaces: {}", names.join(", "));
            spaces.into_iter().map(|s| Some(Arc::new(s))).collect()
        }
        Err(why) => {
            println!("network namespaces unavailable ({why}): the regions share loopback");
            vec![None; n]
        }
    }
}

/// A link from region `from` to `target` in another region: the delaying proxy, listening
/// where processes in `from` can reach it.
fn link(from: &Option<Arc<Netns>>, target: &RedisServer) -> DelayProxy {
    let at = from.as_ref().map_or(Ipv4Addr::LOCALHOST, |ns| ns.host_addr);
    DelayProxy::start_at(at.into(), &target.addr(), LINK_DELAY)
}

/// Start region `name` in `host`: its Redis, and its vault and janitor on the global plane,
/// reading the global state at `read_url` and writing it at `write_url`.
async fn region(
    base: &Deployment,
    host: &Option<Arc<Netns>>,
    name: &str,
    write_url: &str,
    read: Option<RedisServer>,
    extra: &[(&str, &str)],
) -> Region {
    let redis = RedisServer::start_in(host.as_ref(), &[]);
    let dep = Deployment {
        redis_url: redis.url(),
        netns: host.clone(),
        ..base.clone()
    };
    let read_url = read
        .as_ref()
        .map(|r| r.url())
        .unwrap_or_else(|| write_url.to_string());
    let mut env = vec![
        ("TV_REGION", name),
        ("TV_GLOBAL_REDIS_URL", write_url),
        ("TV_GLOBAL_REDIS_READ_URL", read_url.as_str()),
    ];
    env.extend_from_slice(extra);
    let vault = dep.vault(&env).await;
    let janitor = dep.janitor_with(200, &env);
    let api = dep.api(&vault);
    Region {
        _redis: redis,
        global_replica: read,
        dep,
        vault,
        janitor,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        api,
    }
}

/// A replica of the global primary in `host`, reached through `link`.
async fn global_replica(host: &Option<Arc<Netns>>, link: &DelayProxy) -> RedisServer {
    let r = RedisServer::start_in(
        host.as_ref(),
        &[&format!("replicaof {}", link.addr().replace(':', " "))],
    );
    assert!(
        crate::harness::eventually(PATIENCE, async || r
            .cli(&["INFO", "replication"])
            .contains("master_link_status:up"))
        .await,
        "the region's global replica did not sync"
    );
    r
}

/// Workers leasing and releasing in a loop until `stop`; counts leases granted.
fn spawn_workers(api: Api, n: usize, stop: Arc<AtomicBool>, granted: Arc<AtomicU64>) {
    for _ in 0..n {
        let (api, stop, granted) = (api.clone(), stop.clone(), granted.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let l = api.post("/v1/pools/p/leases", json!({})).await;
                if l.status == 201 {
                    granted.fetch_add(1, Ordering::Relaxed);
                    let id = l.str("lease_id");
                    api.post(
                        &format!("/v1/pools/p/leases/{id}/release"),
                        json!({"outcome": "ok"}),
                    )
                    .await;
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_in_one_region_reaches_every_region_and_survives_a_partition() {
    let hosts = hosts(3);
    // Region 1 holds the primary; regions 2 and 3 reach it (replication and writes) over a
    // delayed link each.
    let global = RedisServer::start_in(hosts[0].as_ref(), &[]);
    let base = Deployment::new(&global);
    let link2 = link(&hosts[1], &global);
    let link3 = link(&hosts[2], &global);
    let far = |l: &DelayProxy| format!("redis://{}", l.addr());
    if let Some(ns3) = &hosts[2] {
        // The link is the only way: from region 3, region 1's Redis answers through it and not
        // directly.
        let ping = |addr: &str| {
            let (host, port) = addr.split_once(':').unwrap();
            let out = ns3
                .command("redis-cli")
                .args(["-h", host, "-p", port, "PING"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).contains("PONG")
        };
        assert!(ping(&link3.addr()), "region 3 cannot use its link");
        assert!(!ping(&global.addr()), "region 3 reached region 1 directly");
    }
    // Region 1 answers a global action once both other regions' replicas have it.
    let wait_env = [
        ("TV_GLOBAL_WAIT_REGIONS", "2"),
        ("TV_GLOBAL_WAIT_TIMEOUT_MS", "1000"),
    ];
    let r1 = region(&base, &hosts[0], "r1", &global.url(), None, &wait_env).await;
    // Region 2 also signs with a key of its own, which no other region holds.
    let r2_keys = tempfile::tempdir().unwrap();
    std::fs::copy(
        base.keys_dir.path().join("k1.pem"),
        r2_keys.path().join("k1.pem"),
    )
    .unwrap();
    std::fs::write(
        r2_keys.path().join("r2.pem"),
        vault_core::auth::generate_key_pem(),
    )
    .unwrap();
    let base2 = Deployment {
        keys_dir: Arc::new(r2_keys),
        ..base.clone()
    };
    let r2 = region(
        &base2,
        &hosts[1],
        "r2",
        &far(&link2),
        Some(global_replica(&hosts[1], &link2).await),
        &[],
    )
    .await;
    let stale_env = [
        ("TV_GLOBAL_STALE_AFTER_S", "5"),
        ("TV_GLOBAL_WHEN_STALE", "refuse"),
    ];
    let r3 = region(
        &base,
        &hosts[2],
        "r3",
        &far(&link3),
        Some(global_replica(&hosts[2], &link3).await),
        &stale_env,
    )
    .await;
    let regions = [&r1, &r2, &r3];

    // The same credentials deposited in every region (ids differ: the fingerprint is what is
    // the same), plus tokens of their own that are never revoked.
    let total = REVOCATIONS + DURING_CUT;
    for (n, r) in regions.iter().enumerate() {
        assert_eq!(
            r.api
                .put(
                    "/v1/pools/p",
                    json!({"max_leases_per_token": 4, "quota_limit": 1_000_000_000})
                )
                .await
                .status,
            201
        );
        let mut tokens: Vec<_> = (0..total)
            .map(|i| json!({"id": format!("r{n}-c{i}"), "secret": format!("credential-{i:040}")}))
            .collect();
        tokens.extend(
            (0..20).map(|i| json!({"id": format!("own{i}"), "secret": format!("own-{n}-{i}")})),
        );
        let d = r
            .api
            .post("/v1/pools/p/tokens", json!({"tokens": tokens}))
            .await;
        assert_eq!(d.status, 201, "{}", d.body);
    }
    // Every region caught up once (its follower wrote its freshness).
    for r in regions {
        crate::harness::wait_json(&r.api, "/readyz", PATIENCE, |b| {
            b["global"]["lag_ms"].is_number() && b["global"]["stale"] == false
        })
        .await;
    }

    // Region 3's worker view: every event of pool p, with when it arrived.
    let worker = base.token("w3", &[Scope::Lease], Some(vec!["p".into()]));
    let mut stream = vault_client::Client::new(&r3.vault.base, &worker)
        .events(&["p"], None)
        .await
        .expect("subscribed in region 3");
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, String, Instant)>();
    tokio::spawn(async move {
        while let Some(Ok(e)) = stream.next().await {
            let token = e.data.token_id.unwrap_or_default();
            if tx.send((e.kind, token, Instant::now())).is_err() {
                return;
            }
        }
    });
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    // Wait for event `kind` about `token` ("" = any), counting everything that arrives.
    let mut wait_for = async |kind: &str, token: &str| -> Instant {
        let end = Instant::now() + PATIENCE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let (k, t, at) = tokio::time::timeout(left, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("region 3 never saw {kind} {token}"))
                .expect("region 3's stream open");
            *seen.entry((k.clone(), t.clone())).or_default() += 1;
            if k == kind && (token.is_empty() || t == token) {
                return at;
            }
        }
    };

    // Workers lease in every region throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let granted: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::default()).collect();
    for (r, g) in regions.iter().zip(&granted) {
        let w = base.token("w", &[Scope::Lease], Some(vec!["p".into()]));
        spawn_workers(
            Api::new(&r.vault.base).with_token(&w),
            2,
            stop.clone(),
            g.clone(),
        );
    }

    // 1. Credentials revoked in region 1, one at a time.
    let fp =
        |i: usize| vault_core::crypto::Secret::new(format!("credential-{i:040}")).fingerprint();
    let mut revoke_lat = Vec::new();
    for i in 0..REVOCATIONS {
        let started = Instant::now();
        let a = r1
            .api
            .post(
                "/v1/credentials/revoke",
                json!({"fingerprint": fp(i), "reason": "leaked"}),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["scope"], "global");
        assert_eq!(a.body["global"]["regions_acked"], 2, "{}", a.body);
        let at = wait_for("token.revoked", &format!("r2-c{i}")).await;
        revoke_lat.push(at - started);
    }
    revoke_lat.sort();
    let (p50, p99) = (percentile(&revoke_lat, 0.5), percentile(&revoke_lat, 0.99));
    println!(
        "credential revoke r1 -> worker in r3: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {REVOCATIONS} (links {} ms each way)",
        ms(p50),
        ms(p99),
        ms(*revoke_lat.last().unwrap()),
        LINK_DELAY.as_millis()
    );
    assert!(p99 <= Duration::from_secs(1), "p99 {p99:?} over 1 s");
    // Applied in every region: region 1 and 2 revoked their copies too.
    for (n, r) in regions.iter().enumerate().take(2) {
        let path = format!("/v1/pools/p/tokens/r{n}-c{}", REVOCATIONS - 1);
        crate::harness::wait_json(&r.api, &path, PATIENCE, |b| b["state"] == "revoked").await;
    }
    // A revoked credential cannot come back, in any region.
    let again = r2
        .api
        .post(
            "/v1/pools/p/tokens",
            json!({"tokens": [{"id": "back", "secret": format!("credential-{:040}", 0)}]}),
        )
        .await;
    again.problem(409, "credential_revoked");

    // 2. A client token revoked in region 1 is refused in region 3.
    let mut client_lat = Vec::new();
    for _ in 0..10 {
        let jti_token = base.token("victim", &[Scope::Lease], Some(vec!["p".into()]));
        let victim = Api::new(&r3.vault.base).with_token(&jti_token);
        assert_eq!(victim.get("/v1/pools/p/status").await.status, 200);
        let jti = crate::harness::key_ring(base.keys_dir.path())
            .verify(&jti_token)
            .unwrap()
            .jti;
        let started = Instant::now();
        let a = r1.api.post("/v1/clients/revoke", json!({"jti": jti})).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert!(a.body["global"]["entry_id"].is_string(), "{}", a.body);
        let end = started + PATIENCE;
        while victim.get("/v1/pools/p/status").await.status != 401 {
            assert!(
                Instant::now() < end,
                "region 3 still accepts a revoked client token"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        client_lat.push(started.elapsed());
    }
    client_lat.sort();
    println!(
        "client-token revoke r1 -> refused in r3: p50 {:.1} ms, max {:.1} ms over 10",
        ms(percentile(&client_lat, 0.5)),
        ms(*client_lat.last().unwrap())
    );
    assert!(*client_lat.last().unwrap() <= Duration::from_secs(1));

    // A client token minted in region 2, signed with region 2's own key, works in region 3
    // (the key reaches it through the global plane) and, revoked from region 3, is refused in
    // region 2.
    let minted = r2
        .api
        .post(
            "/v1/clients",
            json!({"sub": "roaming", "scopes": ["lease"], "pools": ["p"]}),
        )
        .await;
    assert_eq!(minted.status, 201, "{}", minted.body);
    let roaming = minted.str("token");
    let in_r3 = Api::new(&r3.vault.base).with_token(&roaming);
    let end = Instant::now() + PATIENCE;
    while in_r3.get("/v1/pools/p/status").await.status != 200 {
        assert!(
            Instant::now() < end,
            "region 2's key never reached region 3"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let revoked = r3
        .api
        .post("/v1/clients/revoke", json!({"jti": minted.str("jti")}))
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    let in_r2 = Api::new(&r2.vault.base).with_token(&roaming);
    let end = Instant::now() + PATIENCE;
    while in_r2.get("/v1/pools/p/status").await.status != 401 {
        assert!(
            Instant::now() < end,
            "region 2 still accepts the token revoked in region 3"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 3. A global freeze (and its lifting) reaches region 3's workers.
    let mut freeze_lat = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let a = r1
            .api
            .post(
                "/v1/pools/p/freeze",
                json!({"scope": "global", "reason": "incident"}),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        freeze_lat.push(wait_for("pool.frozen", "").await - started);
        let a = r1
            .api
            .post("/v1/pools/p/unfreeze", json!({"scope": "global"}))
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        wait_for("pool.unfrozen", "").await;
    }
    freeze_lat.sort();
    println!(
        "global freeze r1 -> worker in r3: p50 {:.1} ms, max {:.1} ms over 5",
        ms(percentile(&freeze_lat, 0.5)),
        ms(*freeze_lat.last().unwrap())
    );
    assert!(*freeze_lat.last().unwrap() <= Duration::from_secs(1));

    // 4. Region 3 is cut off; revocations go on in region 1.
    link3.cut();
    let cut_at = Instant::now();
    for i in REVOCATIONS..total {
        let a = r1
            .api
            .post(
                "/v1/credentials/revoke",
                json!({"fingerprint": fp(i), "reason": "during the cut"}),
            )
            .await;
        // Made, but only one of the two regions it waits for has it: said so.
        a.problem(503, "not_replicated");
    }
    // Cut off, region 3 goes stale, says so, and (as configured) refuses new leases.
    let stale = crate::harness::wait_json(&r3.api, "/readyz", PATIENCE, |b| {
        b["global"]["stale"] == true
    })
    .await;
    assert_eq!(stale["global"]["when_stale"], "refuse");
    let status = r3.api.get("/v1/pools/p/status").await;
    assert_eq!(status.body["global"]["stale"], true, "{}", status.body);
    assert_eq!(status.body["global"]["region"], "r3");
    let refused = Api::new(&r3.vault.base)
        .with_token(&worker)
        .post("/v1/pools/p/leases", json!({}))
        .await;
    refused.problem(503, "global_state_stale");
    // Region 2 is unaffected.
    crate::harness::wait_json(&r2.api, "/readyz", PATIENCE, |b| {
        b["global"]["stale"] == false
    })
    .await;
    let left = cut_for().saturating_sub(cut_at.elapsed());
    tokio::time::sleep(left).await;
    for i in REVOCATIONS..total {
        let t = r3.api.get(&format!("/v1/pools/p/tokens/r2-c{i}")).await;
        assert_ne!(
            t.body["state"], "revoked",
            "applied in region 3 through a cut link?"
        );
    }

    // 5. Healed: every revocation made meanwhile is applied, each once. Redis reconnects the
    // replica on its own clock (it retries once a second, then resyncs over the 100 ms round
    // trip); from the moment the replica has the entries, region 3 applies them within 2 s.
    link3.heal();
    let healed = Instant::now();
    let replica3 = r3.global_replica.as_ref().expect("region 3's replica");
    let end = healed + PATIENCE;
    let link_up = loop {
        if replica3
            .cli(&["INFO", "replication"])
            .contains("master_link_status:up")
        {
            break Instant::now();
        }
        assert!(Instant::now() < end, "region 3's replica never reconnected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut applied_at = healed;
    for i in REVOCATIONS..total {
        applied_at = applied_at.max(wait_for("token.revoked", &format!("r2-c{i}")).await);
    }
    let caught_up = applied_at - healed;
    let after_link = applied_at.saturating_duration_since(link_up);
    println!(
        "region 3 cut for {:.0} s with {DURING_CUT} revocations: all applied {:.0} ms after the link healed ({:.0} ms after its replica resynced)",
        cut_for().as_secs_f64(),
        ms(caught_up),
        ms(after_link)
    );
    assert!(after_link <= Duration::from_secs(2), "{after_link:?}");
    assert!(caught_up <= Duration::from_secs(10), "{caught_up:?}");
    crate::harness::wait_json(&r3.api, "/readyz", PATIENCE, |b| {
        b["global"]["stale"] == false
    })
    .await;
    let again = Api::new(&r3.vault.base)
        .with_token(&worker)
        .post("/v1/pools/p/leases", json!({}))
        .await;
    assert_eq!(
        again.status, 201,
        "leasing again once caught up: {}",
        again.body
    );
    stop.store(true, Ordering::Relaxed);

    // Nothing applied twice: one `token.revoked` per credential in region 3, and one audit
    // entry each.
    for ((kind, token), n) in &seen {
        if kind == "token.revoked" {
            assert_eq!(*n, 1, "{token} revoked {n} times in region 3");
        }
    }
    let revoked_events = seen.keys().filter(|(k, _)| k == "token.revoked").count();
    assert_eq!(revoked_events, total);
    let audit = r3.api.get("/v1/audit?pool=p&limit=1000").await;
    let entries = audit.body["events"].as_array().expect("events").clone();
    let revokes = entries
        .iter()
        .filter(|e| e["action"] == "token.revoke")
        .count();
    assert_eq!(
        revokes, total,
        "one audit entry per token revoked in region 3"
    );
    assert!(entries
        .iter()
        .filter(|e| e["action"] == "token.revoke")
        .all(|e| e["actor"].as_str().unwrap_or_default().contains("from r1")));
    // Workers leased in every region throughout.
    for (n, g) in granted.iter().enumerate() {
        assert!(
            g.load(Ordering::Relaxed) > 0,
            "region {} leased nothing",
            n + 1
        );
    }
    drop(r2.dep);
}

/// Two regions (in namespaces where the machine allows): the global primary in region 1,
/// region 2 reaching it over a delayed link. Field order is drop order: regions first.
struct TwoRegions {
    r2: Region,
    r1: Region,
    base: Deployment,
    _link: DelayProxy,
    global: RedisServer,
    _hosts: Vec<Option<Arc<Netns>>>,
}

async fn two_regions() -> TwoRegions {
    let hosts = hosts(2);
    let global = RedisServer::start_in(hosts[0].as_ref(), &[]);
    let base = Deployment::new(&global);
    let link = link(&hosts[1], &global);
    let r1 = region(&base, &hosts[0], "r1", &global.url(), None, &[]).await;
    let far = format!("redis://{}", link.addr());
    let replica = global_replica(&hosts[1], &link).await;
    let r2 = region(&base, &hosts[1], "r2", &far, Some(replica), &[]).await;
    TwoRegions {
        r2,
        r1,
        base,
        _link: link,
        global,
        _hosts: hosts,
    }
}

/// `vaultctl check` with the global plane on, across two regions: its usual load and rules in
/// region 1, and credentials revoked globally there never granted in region 2 once region 2
/// could have applied them (their global time plus region 2's measured lag): 0 violations.
#[tokio::test(flavor = "multi_thread")]
async fn the_checker_finds_no_violation_across_two_regions() {
    // Every part bound: one left to `..` would be dropped (stopped) here.
    let TwoRegions {
        base,
        r1,
        r2,
        _link,
        global: _global,
        _hosts,
    } = two_regions().await;
    let mut checker = testkit::Child::spawn(
        &testkit::bin_path("vaultctl"),
        &[
            "check",
            "--urls",
            &r1.vault.base,
            "--region-urls",
            &r2.vault.base,
            "--duration",
            "12s",
            "--workers",
            "4",
        ],
        &[("TV_TOKEN", base.admin.clone())],
    );
    let status = checker.wait_exit(PATIENCE);
    let out = checker.output();
    assert!(status.success(), "the checker failed ({status}):\n{out}");
    assert!(out.contains("violations: 0"), "{out}");
    let across = out
        .lines()
        .find(|l| l.starts_with("across regions"))
        .unwrap_or_else(|| panic!("no cross-region summary:\n{out}"));
    let revoked: usize = across
        .split(": ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(revoked >= 10, "{across}");
    assert!(!across.contains(", 0 grants"), "{across}");
    println!("{across}");
}

/// A region further behind than the global log holds (its follower down while the log was
/// trimmed past its resume point, as `TV_GLOBAL_LOG_MAX_ENTRIES` does to a long partition)
/// resyncs from the global state: every credential and client token revoked meanwhile, the
/// global freeze now in force, and the lifting of one whose unfreeze it never saw; each once.
#[tokio::test(flavor = "multi_thread")]
async fn a_region_behind_the_trimmed_log_resyncs_from_the_global_state() {
    let TwoRegions {
        global,
        base,
        r1,
        mut r2,
        _link,
        _hosts,
    } = two_regions().await;
    let secret = |i: usize| format!("trimmed-credential-{i:040}");
    for (n, r) in [&r1, &r2].iter().enumerate() {
        for pool in ["p", "q", "f"] {
            assert_eq!(
                r.api
                    .put(&format!("/v1/pools/{pool}"), json!({}))
                    .await
                    .status,
                201
            );
        }
        let tokens: Vec<_> = (0..10)
            .map(|i| json!({"id": format!("r{n}-c{i}"), "secret": secret(i)}))
            .collect();
        let d = r
            .api
            .post("/v1/pools/p/tokens", json!({"tokens": tokens}))
            .await;
        assert_eq!(d.status, 201, "{}", d.body);
    }
    // Pool f frozen everywhere while region 2 follows.
    let a = r1
        .api
        .post(
            "/v1/pools/f/freeze",
            json!({"scope": "global", "reason": "incident"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    crate::harness::wait_json(&r2.api, "/v1/pools/f/status", PATIENCE, |b| {
        b["frozen"] == true
    })
    .await;

    // Region 2's follower stops; meanwhile f is unfrozen, credentials and a client token are
    // revoked, q is frozen, and the log is trimmed past all of it.
    r2.janitor.kill();
    let victim = base.token("victim", &[Scope::Lease], Some(vec!["p".into()]));
    let in_r2 = Api::new(&r2.vault.base).with_token(&victim);
    assert_eq!(in_r2.get("/v1/pools/p/status").await.status, 200);
    let jti = crate::harness::key_ring(base.keys_dir.path())
        .verify(&victim)
        .unwrap()
        .jti;
    let fp = |i: usize| vault_core::crypto::Secret::new(secret(i)).fingerprint();
    let actions = [
        ("/v1/pools/f/unfreeze", json!({"scope": "global"})),
        (
            "/v1/credentials/revoke",
            json!({"fingerprint": fp(0), "reason": "leaked"}),
        ),
        (
            "/v1/credentials/revoke",
            json!({"fingerprint": fp(1), "reason": "leaked"}),
        ),
        (
            "/v1/credentials/revoke",
            json!({"fingerprint": fp(2), "reason": "leaked"}),
        ),
        ("/v1/clients/revoke", json!({"jti": jti})),
        (
            "/v1/pools/q/freeze",
            json!({"scope": "global", "reason": "incident"}),
        ),
    ];
    for (path, body) in actions {
        let a = r1.api.post(path, body).await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
    }
    // What the cap does to a log longer than it, at once: only the newest entry is left.
    let log = format!("{}:global:log", base.prefix);
    global.cli(&["XTRIM", &log, "MAXLEN", "1"]);
    assert_eq!(global.cli(&["XLEN", &log]).trim(), "1");
    // Region 2 has applied none of it yet.
    assert_eq!(in_r2.get("/v1/pools/p/status").await.status, 200);
    assert_eq!(
        r2.api.get("/v1/pools/p/tokens/r1-c0").await.body["state"],
        "active"
    );

    r2.restart_janitor();
    crate::harness::wait_json(&r2.api, "/v1/pools/q/status", PATIENCE, |b| {
        b["frozen"] == true
    })
    .await;
    crate::harness::wait_json(&r2.api, "/v1/pools/f/status", PATIENCE, |b| {
        b["frozen"] == false
    })
    .await;
    for i in 0..10 {
        let t = r2.api.get(&format!("/v1/pools/p/tokens/r1-c{i}")).await;
        let want = if i < 3 { "revoked" } else { "active" };
        assert_eq!(t.body["state"], want, "r1-c{i}: {}", t.body);
    }
    assert_eq!(in_r2.get("/v1/pools/p/status").await.status, 401);
    let out = r2.janitor.output();
    assert!(out.contains("resyncing from the global state"), "{out}");
    // Each once: one audit entry per revoked token, one freeze of q, one unfreeze of f.
    let mut entries = Vec::new();
    for pool in ["p", "q", "f"] {
        let audit = r2
            .api
            .get(&format!("/v1/audit?pool={pool}&limit=1000"))
            .await;
        entries.extend(audit.body["events"].as_array().expect("events").clone());
    }
    let count = |action: &str, pool: &str| {
        entries
            .iter()
            .filter(|e| e["action"] == action && e["pool"] == pool)
            .count()
    };
    assert_eq!(count("token.revoke", "p"), 3, "{entries:#?}");
    assert_eq!(count("pool.freeze", "q"), 1, "{entries:#?}");
    assert_eq!(count("pool.freeze", "f"), 1, "{entries:#?}");
    assert_eq!(count("pool.unfreeze", "f"), 1, "{entries:#?}");
    assert!(
        entries
            .iter()
            .filter(|e| e["action"] == "token.revoke")
            .all(|e| e["actor"] == "resync (global, from the global state)"),
        "{entries:#?}"
    );
    // Following again from the newest entry: a new action still arrives.
    let a = r1
        .api
        .post(
            "/v1/credentials/revoke",
            json!({"fingerprint": fp(3), "reason": "leaked"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    crate::harness::wait_json(&r2.api, "/v1/pools/p/tokens/r1-c3", PATIENCE, |b| {
        b["state"] == "revoked"
    })
    .await;
}
