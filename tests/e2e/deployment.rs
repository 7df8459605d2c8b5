//! What a distributed deployment does to the vault, judged by the shipped invariant checker
//! (`vaultctl check`): several replicas under load, and Redis killed and restarted with AOF.

use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{bin_path, Child, RedisServer, Sentinel};

use crate::harness::{Deployment, Vault};

/// The checker's load in these tests never ends by the clock: it runs until the test has seen
/// what its proof needs (a kill, a failover, a reshard, enough load after it), then [`judge`]
/// interrupts it. Its duration is only a ceiling, so a slow or busy machine makes a test slower,
/// never wrong.
const LOAD_CEILING: &str = "900s";

/// Start `vaultctl check` against `urls`; it drives its load until [`judge`] stops it.
pub(crate) fn checker(dep: &Deployment, urls: &[&str], extra: &[&str]) -> Child {
    let mut args = vec![
        "check",
        "--urls",
        &urls.join(","),
        "--duration",
        LOAD_CEILING,
        "--workers",
        "6",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Child::spawn(
        &bin_path("vaultctl"),
        &args,
        &[("TV_TOKEN", dep.admin.clone())],
    )
}

/// How long a test waits for something the load should bring about: far, since a busy machine
/// may be slow, and waiting costs nothing when it comes early.
const FAR: Duration = Duration::from_secs(300);

/// Wait until `node` has run `calls` more functions than `since`: the load goes on (after a
/// kill, a restart, a failover) and has done that much more.
pub(crate) async fn more_load(node: &RedisServer, since: u64, calls: u64, what: &str) {
    load_grows(|| fcalls(node), since, calls, what).await;
}

/// Wait until the function-call counter `count` has grown `calls` past `since`.
async fn load_grows(count: impl Fn() -> u64, since: u64, calls: u64, what: &str) {
    assert!(
        crate::harness::eventually(FAR, async || count() >= since + calls).await,
        "the load did not go on {what}: {} function calls, {since} before",
        count()
    );
}

/// End the checker's load (SIGINT) and wait for its verdict: leases granted and no violation.
pub(crate) fn judge(mut c: Child) -> String {
    c.signal("INT");
    let status = c.wait_exit(FAR);
    let out = c.output();
    assert!(status.success(), "the checker failed ({status}):\n{out}");
    assert!(out.contains("violations: 0"), "{out}");
    let granted: u64 = out
        .lines()
        .find(|l| l.trim_start().starts_with("lease "))
        .and_then(|l| l.split("201: ").nth(1))
        .and_then(|n| n.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        granted >= 50,
        "too few leases granted to prove anything:\n{out}"
    );
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_checker_finds_every_rule_kept_across_three_replicas() {
    let redis = RedisServer::start();
    let dep = Deployment::new(&redis);
    let (a, b, c) = (
        dep.vault(&[]).await,
        dep.vault(&[]).await,
        dep.vault(&[]).await,
    );
    let _janitor = dep.janitor(200);
    let run = checker(&dep, &[&a.base, &b.base, &c.base], &[]);
    // At least 8 s of load (the operator acts every ~100 ms, so every kind of action comes up)
    // and 1,500 function calls, however long the machine takes for them.
    let started = Instant::now();
    more_load(&redis, 0, 1500, "on three replicas").await;
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(started.elapsed())).await;
    let out = tokio::task::spawn_blocking(move || judge(run))
        .await
        .unwrap();
    // Leases went through the pipeline too (and the shares invariant judged them).
    let piped: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("leases through pipeline check-share: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        piped > 0,
        "no lease through the pipeline:
{out}"
    );
    // Every kind of operation ran and was judged.
    for op in [
        "lease",
        "release",
        "renew",
        "revoke",
        "freeze",
        "deposit",
        "client_revoke",
    ] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(&format!("{op} "))),
            "no {op} in:\n{out}"
        );
    }
}

/// Kill Redis (SIGKILL) while the checker runs, check the replicas answer a clear 503 quickly
/// while it is down, restart it on its AOF (in `aof_dir` when given), and let the load go on.
async fn kill_redis_under_load(
    fsync: &str,
    aof_dir: Option<&std::path::Path>,
) -> (RedisServer, Deployment, Vec<Vault>, Child) {
    let dir = aof_dir.map(|d| format!("dir {}", d.display()));
    let mut config = vec!["appendonly yes".to_string(), format!("appendfsync {fsync}")];
    config.extend(dir);
    let mut redis = RedisServer::start_with(&config.iter().map(String::as_str).collect::<Vec<_>>());
    let dep = Deployment::new(&redis);
    let vaults = vec![
        dep.vault(&[("TV_REDIS_TIMEOUT_MS", "500")]).await,
        dep.vault(&[("TV_REDIS_TIMEOUT_MS", "500")]).await,
    ];
    let run = checker(
        &dep,
        &vaults.iter().map(|v| v.base.as_str()).collect::<Vec<_>>(),
        &["--request-timeout", "3s", "--final-patience", "60s"],
    );
    // Under load: leases being granted.
    more_load(&redis, 0, 500, "before the kill").await;
    redis.stop();
    let api = dep.api(&vaults[0]);
    let start = Instant::now();
    let r = api.post("/v1/pools/any/leases", json!({})).await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    redis.restart();
    // The load goes on against the restarted Redis (its counters start again from 0).
    more_load(&redis, 0, 1000, "after the restart").await;
    (redis, dep, vaults, run)
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_killed_under_load_with_appendfsync_always_loses_no_acknowledged_write() {
    let (_redis, dep, vaults, run) = kill_redis_under_load("always", None).await;
    // No lost acknowledgement is one of the invariants the checker proves: acknowledged
    // deposits, leases, releases, revocations and client-token revocations are all there.
    let out = tokio::task::spawn_blocking(move || judge(run))
        .await
        .unwrap();
    println!("{out}");
    for v in &vaults {
        assert_eq!(dep.api(v).get("/readyz").await.status, 200);
    }
}

/// With `everysec` Redis writes every change to the AOF file before it answers, and fsyncs it in
/// the background once a second. A killed redis-server therefore loses nothing acknowledged (the
/// kernel has the writes) -- while the disk keeps up. When a background fsync is still running,
/// Redis puts its AOF write off for up to 2 s and answers meanwhile, so on a busy disk a kill
/// loses those answers' writes (docs/OPERATIONS.md; this test once lost a dozen while a build
/// linked beside it). The AOF is therefore kept on tmpfs here, where an fsync never lingers:
/// the test proves the vault's side (nothing it acknowledged depends on more than Redis's
/// write), not the disk's. `always` (the test above) holds on any disk.
#[tokio::test(flavor = "multi_thread")]
async fn redis_killed_under_load_with_appendfsync_everysec_loses_nothing_acknowledged_either() {
    let shm = std::path::Path::new("/dev/shm");
    let tmpfs = shm
        .is_dir()
        .then(|| tempfile::tempdir_in(shm).ok())
        .flatten();
    let (_redis, dep, vaults, run) =
        kill_redis_under_load("everysec", tmpfs.as_ref().map(|d| d.path())).await;
    // Every replica recovers without a restart of its own.
    for v in &vaults {
        let api = dep.api(v);
        let end = Instant::now() + Duration::from_secs(30);
        while api.get("/readyz").await.status != 200 {
            assert!(
                Instant::now() < end,
                "replica did not recover:\n{}",
                v.child.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::task::spawn_blocking(move || judge(run))
        .await
        .unwrap();
}

/// Token ids of every `token.revoked` event a reconnecting SSE client saw, and how many times
/// it had to reconnect.
#[derive(Default)]
struct Seen {
    revoked: std::collections::HashSet<(String, String)>,
    reconnects: u64,
}

/// Follow every event through `base` with the SDK's feed, which reopens the stream with
/// `Last-Event-ID` whenever it ends.
async fn follow(base: String, token: String, seen: std::sync::Arc<std::sync::Mutex<Seen>>) {
    let mut feed = vault_client::Client::new(&base, &token).feed(&[]);
    loop {
        let next = feed.next().await;
        let mut s = seen.lock().unwrap();
        s.reconnects = feed.reconnects();
        let Ok(e) = next else { continue };
        if e.kind == "token.revoked" {
            let token = e.data.token_id.clone().unwrap_or_default();
            s.revoked.insert((e.data.pool.clone(), token));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_haproxy_replicas_die_drain_and_restart_without_breaking_a_rule() {
    let redis = RedisServer::start();
    let dep = Deployment::new(&redis);
    let drain = [
        ("TV_SHUTDOWN_DRAIN_MS", "5000"),
        ("TV_MAX_CONNECTIONS_PER_ADDR", "4096"),
    ];
    let ports = [
        testkit::free_port(),
        testkit::free_port(),
        testkit::free_port(),
    ];
    let mut replicas = vec![];
    for p in ports {
        replicas.push(dep.vault_at(p, &drain).await);
    }
    let _janitor = dep.janitor(200);
    let haproxy = testkit::Haproxy::start(&ports);
    let lb = haproxy.url();
    let api = crate::harness::Api::new(&lb).with_token(&dep.admin);
    let end = Instant::now() + Duration::from_secs(20);
    let http = reqwest::Client::new();
    while !http
        .get(format!("{lb}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            Instant::now() < end,
            "haproxy did not start:\n{}",
            haproxy.child.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A refresher mid-job (its provider call held), to be killed under load.
    let idp = crate::fakes::Fake::start(crate::fakes::Mode::HoldFirst).await;
    assert_eq!(api.put("/v1/pools/oauth", json!({})).await.status, 201);
    let token = json!({"id": "o1", "secret": "old", "refresh": {"kind": "oauth2_refresh_token",
        "token_url": idp.url("/token"), "refresh_token": "rt", "client_id": "cid", "client_secret": "cs"}});
    assert_eq!(api.post("/v1/pools/oauth/tokens", token).await.status, 201);
    // Its provider call is held past the kill: the call times out only 4.5 s after it began, a
    // margin for a slow machine between the call arriving and the kill.
    let refresher_env = [
        ("TV_REFRESH_VISIBILITY_MS", "6000"),
        ("TV_REFRESH_HTTP_TIMEOUT_MS", "4500"),
    ];
    let mut refresher_a = dep.refresher(&refresher_env);

    // Event clients through the balancer: round robin puts one on each replica.
    let seen: Vec<_> = (0..3)
        .map(|_| std::sync::Arc::new(std::sync::Mutex::new(Seen::default())))
        .collect();
    let followers: Vec<_> = seen
        .iter()
        .map(|s| tokio::spawn(follow(lb.clone(), dep.admin.clone(), s.clone())))
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("check.jsonl");
    let run = checker(
        &dep,
        &[&lb],
        &["--log", log.to_str().unwrap(), "--request-timeout", "10s"],
    );
    more_load(&redis, 0, 500, "through haproxy").await;

    // Under the load, the refresher holding a claimed job dies; the second one takes it over.
    assert_eq!(
        api.post("/v1/pools/oauth/tokens/o1/refresh", json!({}))
            .await
            .status,
        202
    );
    assert!(
        crate::harness::eventually(FAR, async || !idp.calls().is_empty()).await,
        "the refresher did not call the provider:\n{}",
        refresher_a.output()
    );
    refresher_a.kill();
    assert_eq!(
        idp.calls().len(),
        1,
        "the held call was given up before the kill"
    );
    let _refresher_b = dep.refresher(&refresher_env);

    // SIGKILL a replica and start it again on its port.
    replicas[0].child.kill();
    more_load(&redis, fcalls(&redis), 1000, "after a replica was killed").await;
    replicas[0] = dep.vault_at(ports[0], &drain).await;

    // SIGTERM another: it drains (readyz 503, still serving), then exits cleanly.
    let mut second = std::mem::replace(
        &mut replicas[1],
        dep.vault_at(testkit::free_port(), &[]).await,
    );
    let base = second.base.clone();
    let stopping = tokio::task::spawn_blocking(move || {
        let status = second.child.terminate(Duration::from_secs(40));
        (status, second.child.output())
    });
    // While it drains it still answers, and tells the balancer to go elsewhere.
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let r = http.get(format!("{base}/readyz")).send().await.unwrap();
        if r.status() == 503 {
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["code"], "draining");
            break;
        }
        assert!(Instant::now() < end, "the replica did not start draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped = stopping.await.unwrap();
    assert!(
        stopped.0.is_some_and(|s| s.success()),
        "drained replica: {stopped:?}"
    );
    replicas.insert(1, dep.vault_at(ports[1], &drain).await);
    more_load(
        &redis,
        fcalls(&redis),
        1000,
        "after the drained replica came back",
    )
    .await;

    let out = tokio::task::spawn_blocking(move || judge(run))
        .await
        .unwrap();
    println!("{out}");
    assert!(
        out.contains(", 0 lost again after the retry"),
        "a worker saw more than a retry:\n{out}"
    );

    // The refresh landed once, by the second refresher.
    let m = crate::harness::wait_json(
        &api,
        "/v1/pools/oauth/tokens/o1",
        Duration::from_secs(30),
        |m| m["generation"] == 2,
    )
    .await;
    assert_eq!(m["state"], "active");
    assert_eq!(
        idp.issued().len(),
        1,
        "only the second refresher's call delivered a token"
    );
    idp.release();

    // Every acknowledged revocation reached every event client, across their reconnections.
    let revoked: std::collections::HashSet<(String, String)> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["op"]["kind"] == "revoke" && r["status"] == 200)
        .map(|r| {
            let s = |f: &str| r["op"][f].as_str().unwrap().to_string();
            (s("pool"), s("token_id"))
        })
        .collect();
    assert!(!revoked.is_empty(), "the checker revoked nothing");
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let missing: Vec<usize> = (0..seen.len())
            .filter(|&i| !revoked.is_subset(&seen[i].lock().unwrap().revoked))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < end,
            "event clients {missing:?} missed revocations"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reconnects: u64 = seen.iter().map(|s| s.lock().unwrap().reconnects).sum();
    assert!(
        reconnects >= 1,
        "no event client was cut off, so resuming was not shown"
    );
    for f in followers {
        f.abort();
    }
}

/// Pool `p` with tokens `a` and `b`.
async fn pool_p_with_a_and_b(api: &crate::harness::Api) {
    assert_eq!(api.put("/v1/pools/p", json!({})).await.status, 201);
    let d = api
        .post(
            "/v1/pools/p/tokens",
            json!({"tokens": [{"id": "a", "secret": "s1"}, {"id": "b", "secret": "s2"}]}),
        )
        .await;
    assert_eq!(d.status, 201, "{:?}", d.body);
}

/// How many functions Redis has run.
pub(crate) fn fcalls(redis: &RedisServer) -> u64 {
    redis.command_stat("fcall", "calls").unwrap_or(0.0) as u64
}

/// One field of a `SENTINEL master` answer (alternating name and value lines).
fn sentinel_field(answer: &str, name: &str) -> Option<String> {
    let lines: Vec<&str> = answer.lines().map(str::trim).collect();
    lines
        .iter()
        .position(|l| *l == name)
        .and_then(|i| lines.get(i + 1))
        .map(|v| v.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_sentinel_the_vault_follows_a_failover_and_loses_no_acknowledged_write() {
    let mut primary = RedisServer::start();
    // Two replicas: after one is promoted, the other replicates from it, so writes that wait
    // for a replica go on being acknowledged.
    let replicas = [
        RedisServer::replica_of(&primary),
        RedisServer::replica_of(&primary),
    ];
    let sentinels: Vec<Sentinel> = (0..3).map(|_| Sentinel::start(primary.port, 2)).collect();
    // Every sentinel knows the replica and the two other sentinels before anything fails.
    assert!(
        crate::harness::eventually(Duration::from_secs(30), async || sentinels.iter().all(
            |s| {
                let m = s.cli(&["SENTINEL", "master", Sentinel::SERVICE]);
                sentinel_field(&m, "num-other-sentinels").as_deref() == Some("2")
                    && sentinel_field(&m, "num-slaves").as_deref() == Some("2")
            }
        ))
        .await,
        "the sentinels did not discover each other and the replica"
    );
    let mut dep = Deployment::new(&primary);
    dep.redis_url = format!(
        "redis+sentinel://{}/{}",
        sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(","),
        Sentinel::SERVICE
    );
    // Every write waits for the replica: what the vault acknowledged survives the failover.
    let env = [
        ("TV_REDIS_TIMEOUT_MS", "1500"),
        ("TV_REDIS_WAIT_REPLICAS", "1"),
        ("TV_REDIS_WAIT_TIMEOUT_MS", "500"),
        ("TV_REDIS_WAIT_FOR", "all"),
    ];
    let vaults = [dep.vault(&env).await, dep.vault(&env).await];
    let _janitor = dep.janitor_with(200, &env);
    let api = dep.api(&vaults[0]);
    assert_eq!(
        api.put("/v1/pools/fo", json!({"max_leases_per_token": 1000}))
            .await
            .status,
        201
    );
    assert_eq!(
        api.post("/v1/pools/fo/tokens", json!({"secret": "s"}))
            .await
            .status,
        201
    );

    let run = checker(
        &dep,
        &vaults.iter().map(|v| v.base.as_str()).collect::<Vec<_>>(),
        &["--request-timeout", "3s", "--final-patience", "60s"],
    );
    more_load(&primary, 0, 500, "before the failover").await;
    let killed = Instant::now();
    primary.stop();
    let ports = [replicas[0].port, replicas[1].port];
    assert!(
        crate::harness::eventually(FAR, async || sentinels[0]
            .primary_port()
            .is_some_and(|p| ports.contains(&p)))
        .await,
        "the sentinels did not promote a replica"
    );
    let promoted_after = killed.elapsed();
    // With WAIT for every write, a lease can be answered 503 `not_replicated` while the other
    // replica re-syncs from the new primary: poll until one is granted.
    let end = Instant::now() + FAR;
    let mut last = String::new();
    loop {
        let r = api.post("/v1/pools/fo/leases", json!({})).await;
        if r.status == 201 {
            break;
        }
        let now = format!("{} {}", r.status, r.code());
        if now != last {
            eprintln!("{:?} after the kill: {now}", killed.elapsed());
            last = now;
        }
        assert!(
            Instant::now() < end && r.status == 503,
            "no lease after the failover: {} {:?}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "sentinel failover: replica promoted {promoted_after:?} after the kill; leasing again after {:?}",
        killed.elapsed()
    );
    // The vault now writes to the promoted replica, and the checker's load goes on there.
    let new_primary = sentinels[0].primary_port().unwrap();
    let promoted = replicas.iter().find(|r| r.port == new_primary).unwrap();
    assert!(promoted
        .cli(&["INFO", "replication"])
        .contains("role:master"));
    // Every write waits for a replica: the load goes on once the other replica follows the new
    // primary (the sentinels re-point it). Said apart, so that a failure tells which it was.
    let replication = || {
        replicas
            .iter()
            .map(|r| format!("port {}:\n{}", r.port, r.cli(&["INFO", "replication"])))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        crate::harness::eventually(FAR, async || promoted
            .cli(&["INFO", "replication"])
            .contains("connected_slaves:1"))
        .await,
        "the other replica never followed the new primary:\n{}",
        replication()
    );
    let since = fcalls(promoted);
    if !crate::harness::eventually(FAR, async || fcalls(promoted) >= since + 1000).await {
        // What the new primary ran, and what the vaults and the checker said: a failure here
        // was seen twice in full-suite runs and never alone.
        let tail = |text: String| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        let stats = |r: &RedisServer| {
            r.cli(&["INFO", "commandstats"])
                .lines()
                .filter(|l| l.contains("fcall") || l.contains("function") || l.contains("wait"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let other = replicas.iter().find(|r| r.port != new_primary).unwrap();
        // Which answers the vaults gave meanwhile, by problem code.
        let mut problems = String::new();
        for v in &vaults {
            let m = crate::harness::metrics_text(&v.base).await;
            problems.push_str(&format!("{}:\n", v.base));
            for l in m.lines().filter(|l| l.starts_with("tv_problems_total")) {
                problems.push_str(&format!("  {l}\n"));
            }
        }
        panic!(
            "the load did not go on on the new primary: {} function calls, {since} before\n{}\n\
             new primary's commandstats:\n{}\nthe other replica's:\n{}\nproblems answered:\n{}\n\
             vault 1:\n{}\nvault 2:\n{}\nchecker:\n{}",
            fcalls(promoted),
            replication(),
            stats(promoted),
            stats(other),
            problems,
            tail(vaults[0].child.output()),
            tail(vaults[1].child.output()),
            tail(run.output()),
        );
    }
    let out = tokio::task::spawn_blocking(move || judge(run))
        .await
        .unwrap();
    println!("{out}");
}

/// `TV_REDIS_WAIT_REPLICAS`: a revocation (or deposit, freeze, client-token revocation) is
/// answered only once a replica has it; a replica that does not acknowledge in time makes the
/// answer 503 `not_replicated`, and the write is still made on the primary. Leases do not wait
/// (scope `safety`).
#[tokio::test]
async fn safety_writes_wait_for_a_replica_when_configured() {
    let primary = RedisServer::start();
    let replica = RedisServer::replica_of(&primary);
    let dep = Deployment::new(&primary);
    let v = dep
        .vault(&[
            ("TV_REDIS_WAIT_REPLICAS", "1"),
            ("TV_REDIS_WAIT_TIMEOUT_MS", "300"),
        ])
        .await;
    let api = dep.api(&v);
    pool_p_with_a_and_b(&api).await;
    // The replica has the deposit: it was waited for.
    assert!(replica
        .cli(&["HEXISTS", &format!("{}:{{p}}:tokens", dep.prefix), "a"])
        .starts_with('1'));
    let client = api
        .post(
            "/v1/clients",
            json!({"sub": "w", "scopes": ["lease"], "ttl_s": 600}),
        )
        .await;

    replica.pause();
    let start = Instant::now();
    let r = api
        .post("/v1/pools/p/tokens/a/revoke", json!({"reason": "test"}))
        .await;
    r.problem(503, "not_replicated");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // Made on the primary all the same: the token is revoked.
    assert_eq!(
        api.get("/v1/pools/p/tokens/a").await.body["state"],
        "revoked"
    );
    api.post("/v1/clients/revoke", json!({"jti": client.str("jti")}))
        .await
        .problem(503, "not_replicated");
    // A lease does not wait.
    assert_eq!(api.post("/v1/pools/p/leases", json!({})).await.status, 201);

    replica.resume();
    let r = api
        .post("/v1/pools/p/tokens/b/revoke", json!({"reason": "test"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
}

/// A 3-primary Redis Cluster: the checker's 30 pools spread over the slots of every primary,
/// the function library on each, and the rules kept.
#[tokio::test(flavor = "multi_thread")]
async fn on_a_redis_cluster_pools_spread_over_every_primary_and_every_rule_holds() {
    let cluster = testkit::RedisCluster::start(3);
    let mut dep = Deployment::new(&cluster.nodes[0]);
    dep.redis_url = cluster.url();
    let vaults = [dep.vault(&[]).await, dep.vault(&[]).await];
    let _janitor = dep.janitor(200);
    let run = checker(
        &dep,
        &vaults.iter().map(|v| v.base.as_str()).collect::<Vec<_>>(),
        &["--pools", "30", "--tokens", "3", "--keep"],
    );
    // Every primary serves its share of the pools, for a while.
    for node in &cluster.nodes {
        more_load(node, 0, 300, "on every primary").await;
    }
    let out = tokio::task::spawn_blocking(move || judge(run))
        .await
        .unwrap();
    println!("{out}");
    // No call failed for want of cluster support (cross-slot pipelines, multi-node answers).
    for v in &vaults {
        assert!(
            !v.child.output().contains("unavailable"),
            "{}",
            v.child.output()
        );
    }
    for node in &cluster.nodes {
        let libs = node.cli(&["FUNCTION", "LIST"]);
        assert!(
            libs.contains("tokenvault_"),
            "no library on node {}: {libs}",
            node.port
        );
        let keys = node.cli(&["DBSIZE"]);
        assert!(
            keys.trim().parse::<u64>().unwrap_or(0) > 0,
            "node {} holds nothing",
            node.port
        );
        assert!(fcalls(node) > 50, "node {} ran no function", node.port);
    }
}

/// The index of the node of `cluster` that holds `key`.
fn owner(cluster: &testkit::RedisCluster, key: &str) -> usize {
    cluster
        .nodes
        .iter()
        .position(|n| n.cli(&["EXISTS", key]).trim() == "1")
        .expect("some node holds the key")
}

/// A cluster node's id.
fn node_id(n: &RedisServer) -> String {
    n.cli(&["CLUSTER", "MYID"]).trim().to_string()
}

/// One hash slot on its way between two nodes, moved step by step as `redis-cli --cluster
/// reshard` moves each slot: opened on both nodes, its keys migrated, given to the new node.
struct SlotMove<'c> {
    cluster: &'c testkit::RedisCluster,
    slot: String,
    src: &'c RedisServer,
    dst: &'c RedisServer,
}

fn ok(r: String, what: &str) {
    assert_eq!(r.trim(), "OK", "{what}: {r}");
}

impl<'c> SlotMove<'c> {
    /// Open `slot` for its move from node `from` to node `to` (IMPORTING there, MIGRATING here).
    fn open(cluster: &'c testkit::RedisCluster, slot: &str, from: usize, to: usize) -> Self {
        let (src, dst) = (&cluster.nodes[from], &cluster.nodes[to]);
        ok(
            dst.cli(&["CLUSTER", "SETSLOT", slot, "IMPORTING", &node_id(src)]),
            "IMPORTING",
        );
        ok(
            src.cli(&["CLUSTER", "SETSLOT", slot, "MIGRATING", &node_id(dst)]),
            "MIGRATING",
        );
        SlotMove {
            cluster,
            slot: slot.to_string(),
            src,
            dst,
        }
    }

    fn migrate(&self, keys: &[&str]) {
        let port = self.dst.port.to_string();
        let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
        args.extend(keys);
        ok(self.src.cli(&args), "MIGRATE");
    }

    /// Migrate what is left of the slot, in batches, and give it to the new node on every node.
    fn finish(self) {
        loop {
            let keys = self
                .src
                .cli(&["CLUSTER", "GETKEYSINSLOT", &self.slot, "10"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            self.migrate(&keys);
        }
        let to = node_id(self.dst);
        for n in [self.dst, self.src].into_iter().chain(&self.cluster.nodes) {
            ok(
                n.cli(&["CLUSTER", "SETSLOT", &self.slot, "NODE", &to]),
                "NODE",
            );
        }
    }
}

/// Every key of pool `p` on `node`, sorted (a key that moved or appeared shows).
fn pool_keys(node: &RedisServer, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = node
        .cli(&["KEYS", &format!("{prefix}:{{p}}:*")])
        .lines()
        .map(str::to_string)
        .filter(|k| !k.is_empty())
        .collect();
    keys.sort();
    keys
}

/// A pool's slot half moved by hand, the dangerous state of a live reshard: its token hashes
/// are on the new node, its sets still on the old one. Every call of the pool's functions is
/// refused whole by Redis (TRYAGAIN: the prefix key each call declares never exists, so the
/// call's keys are never all on one node while the slot moves) and answered 503 `redis_busy`;
/// nothing is written on either node. Once the slot is moved, the pool works from its new node.
#[tokio::test(flavor = "multi_thread")]
async fn while_a_pools_slot_migrates_its_calls_are_refused_whole_then_served_by_the_new_node() {
    let cluster = testkit::RedisCluster::start(3);
    let mut dep = Deployment::new(&cluster.nodes[0]);
    dep.redis_url = cluster.url();
    let v = dep.vault(&[("TV_REDIS_TIMEOUT_MS", "600")]).await;
    let api = dep.api(&v);
    pool_p_with_a_and_b(&api).await;

    let prefix = dep.prefix.clone();
    let cfg = format!("{prefix}:{{p}}:cfg");
    let from = owner(&cluster, &cfg);
    let to = (from + 1) % cluster.nodes.len();
    let (source, target) = (&cluster.nodes[from], &cluster.nodes[to]);
    let slot = source.cli(&["CLUSTER", "KEYSLOT", &cfg]).trim().to_string();
    let moving = SlotMove::open(&cluster, &slot, from, to);
    let tokens = source.cli(&["KEYS", &format!("{prefix}:{{p}}:t:*")]);
    let tokens: Vec<&str> = tokens.lines().filter(|k| !k.is_empty()).collect();
    assert_eq!(tokens.len(), 2, "{tokens:?}");
    moving.migrate(&tokens);
    let before = (pool_keys(source, &prefix), pool_keys(target, &prefix));
    assert!(before.1.len() == 2 && before.0.contains(&cfg), "{before:?}");

    api.post("/v1/pools/p/leases", json!({}))
        .await
        .problem(503, "redis_busy");
    api.post("/v1/pools/p/tokens/a/revoke", json!({"reason": "test"}))
        .await
        .problem(503, "redis_busy");
    assert_eq!(
        (pool_keys(source, &prefix), pool_keys(target, &prefix)),
        before,
        "a refused call wrote something"
    );
    assert!(
        !v.child.output().contains("non local key"),
        "{}",
        v.child.output()
    );

    moving.finish();
    let deadline = Instant::now() + Duration::from_secs(20);
    let lease = loop {
        let r = api.post("/v1/pools/p/leases", json!({})).await;
        if r.status == 201 {
            break r.str("lease_id");
        }
        assert_eq!(r.status, 503, "{r:?}");
        assert!(
            Instant::now() < deadline,
            "the pool never worked again on its new node: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        target
            .cli(&["HEXISTS", &format!("{prefix}:{{p}}:leasedata"), &lease])
            .trim(),
        "1",
        "the lease is not on the new node"
    );
    assert!(pool_keys(source, &prefix).is_empty());
    // The refused calls left nothing behind: one lease (this one), nothing revoked.
    let status = api.get("/v1/pools/p/status").await;
    let t = &status.body["tokens"];
    assert_eq!(status.body["leases_active"], 1, "{:?}", status.body);
    assert_eq!(
        (&t["leased"], &t["active"], &t["revoked"]),
        (&json!(1), &json!(1), &json!(0)),
        "{t}"
    );
}

/// How many calls the cluster's primaries refused because their keys were in mid-move
/// (TRYAGAIN; the cluster client retries them).
fn refused_in_mid_move(cluster: &testkit::RedisCluster) -> u64 {
    cluster
        .nodes
        .iter()
        .map(|n| {
            n.cli(&["INFO", "errorstats"])
                .lines()
                .find_map(|l| l.strip_prefix("errorstat_TRYAGAIN:count="))
                .and_then(|c| c.trim().parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// Move `slots` hash slots from `from` to `to` with `redis-cli --cluster reshard`, as an
/// operator would; returns how many of the moved slots carried keys.
fn reshard(cluster: &testkit::RedisCluster, from: usize, to: usize, slots: u32) -> usize {
    let id = |n: usize| node_id(&cluster.nodes[n]);
    let text = testkit::RedisCluster::cluster_cli(
        "reshard",
        &[
            &format!("127.0.0.1:{}", cluster.nodes[from].port),
            "--cluster-from",
            &id(from),
            "--cluster-to",
            &id(to),
            "--cluster-slots",
            &slots.to_string(),
            "--cluster-yes",
        ],
    );
    // `Moving slot N from A to B: ...`, a dot per key moved.
    text.lines()
        .filter(|l| l.starts_with("Moving slot") && l.trim_end().ends_with('.'))
        .count()
}

/// A live reshard under the checker's load, scaling out: a fourth, empty primary joins (no
/// library loaded on it), `redis-cli --cluster reshard` moves a fifth of the slots (and the
/// pools in them) from the first primary to it and a fifth from the third to the first, then
/// the slots of five pools go round the primaries again and again, while two replicas and a
/// janitor serve the checker's workers. A call that meets a pool in mid-move is refused whole
/// by Redis (TRYAGAIN) and retried; the new primary gets the library at its first call; the
/// checker finds no rule broken and nothing acknowledged lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_live_reshard_under_load_loses_nothing() {
    let mut cluster = testkit::RedisCluster::start(3);
    let mut dep = Deployment::new(&cluster.nodes[0]);
    dep.redis_url = cluster.url();
    let new = cluster.add_node();
    assert!(!cluster.nodes[new]
        .cli(&["FUNCTION", "LIST"])
        .contains("tokenvault_"));
    let cluster = std::sync::Arc::new(cluster);
    let vaults = [dep.vault(&[]).await, dep.vault(&[]).await];
    let _janitor = dep.janitor(200);
    let run = checker(
        &dep,
        &vaults.iter().map(|v| v.base.as_str()).collect::<Vec<_>>(),
        &["--pools", "30", "--tokens", "3"],
    );
    // The checker's pools exist and every primary that holds slots is serving them.
    for node in &cluster.nodes[..new] {
        more_load(node, 0, 100, "on every primary").await;
    }
    let prefix = dep.prefix.clone();
    let moved = tokio::task::spawn_blocking({
        let cluster = cluster.clone();
        move || {
            let moved = reshard(&cluster, 0, new, 3000) + reshard(&cluster, 2, 0, 3000);
            // The slots of five of the checker's pools, and where each is now.
            let mut pools: Vec<(String, usize)> = Vec::new();
            for (i, n) in cluster.nodes.iter().enumerate() {
                for key in n.cli(&["KEYS", &format!("{prefix}:{{*}}:cfg")]).lines() {
                    if !key.is_empty() && pools.len() < 5 {
                        pools.push((n.cli(&["CLUSTER", "KEYSLOT", key]).trim().to_string(), i));
                    }
                }
            }
            // Round after round, until calls have met a pool in mid-move (and at least once).
            let end = Instant::now() + FAR;
            let mut rounds = 0;
            while rounds == 0 || refused_in_mid_move(&cluster) == 0 {
                assert!(
                    Instant::now() < end,
                    "no call met a pool in mid-move in {rounds} rounds"
                );
                for (slot, at) in &mut pools {
                    let to = (*at + 1) % cluster.nodes.len();
                    SlotMove::open(&cluster, slot, *at, to).finish();
                    *at = to;
                }
                rounds += 1;
            }
            (moved, rounds)
        }
    })
    .await
    .unwrap();
    let (moved, rounds) = moved;
    assert!(moved >= 3, "only {moved} slots with keys moved");
    // The new primary serves the pools moved to it (it got the library at its first call), and
    // the load goes on after the last move.
    let newcomer = &cluster.nodes[new];
    more_load(newcomer, 0, 1, "on the new primary").await;
    // Counted over the whole cluster: pool names hash unevenly, and after the moves one primary
    // may hold a single pool, or none the checker still leases from (it happened).
    let cluster_calls = || cluster.nodes.iter().map(fcalls).sum::<u64>();
    load_grows(cluster_calls, cluster_calls(), 500, "after the moves").await;
    let refused = refused_in_mid_move(&cluster);
    let out = tokio::task::spawn_blocking(move || judge(run))
        .await
        .unwrap();
    println!(
        "{moved} slots with keys moved by redis-cli (a new primary joined), then {rounds} rounds of 5 pools; \
         {refused} calls refused in mid-move\n{out}"
    );
    assert!(
        newcomer.cli(&["FUNCTION", "LIST"]).contains("tokenvault_"),
        "the new primary has no library"
    );
    assert!(!out.contains("500 "), "{out}");
    for v in &vaults {
        let log = v.child.output();
        assert!(!log.contains("non local key"), "{log}");
    }
}
