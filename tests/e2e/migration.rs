//! A store written by the last release before internal token ids (`tests/fixtures/layout1/`:
//! its `dump.rdb`, what that vault answered, and how it was made): this version refuses to run
//! on it and names the command that converts it; `vaultctl migrate` converts it in short calls;
//! then the vault answers as the old one did, hands out the same secrets and goes on with the
//! lease that was live.

use serde_json::{json, Value};
use testkit::{bin_path, Child, RedisServer};
use vault_core::auth::Scope;

use crate::harness::{Deployment, PATIENCE};

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/layout1")
        .join(name)
}

/// A Redis loaded with the fixture's RDB, and a deployment with its prefix and master key.
fn old_store() -> (RedisServer, tempfile::TempDir, Deployment) {
    let data = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("dump.rdb"), data.path().join("dump.rdb")).unwrap();
    let redis = RedisServer::start_with(&[
        &format!("dir {}", data.path().display()),
        "dbfilename dump.rdb",
    ]);
    let mut dep = Deployment::new(&redis);
    dep.prefix = "tv".into();
    dep.master_key = std::fs::read_to_string(fixture("master.key"))
        .unwrap()
        .trim()
        .to_string();
    (redis, data, dep)
}

fn migrate(redis: &RedisServer, batch: &str) -> String {
    let mut m = Child::spawn(
        &bin_path("vaultctl"),
        &["migrate", "--batch", batch],
        &[
            ("TV_REDIS_URL", redis.url()),
            ("TV_PREFIX", "tv".to_string()),
        ],
    );
    let status = m.wait_exit(PATIENCE);
    assert!(status.success(), "vaultctl migrate failed:\n{}", m.output());
    m.output()
}

/// Start a vault-api on `redis` and expect it to refuse to run; what it said.
fn refused_start(redis: &RedisServer, dep: &Deployment) -> String {
    let mut refused = Child::spawn(
        &bin_path("vault-api"),
        &[],
        &[
            ("TV_REDIS_URL", redis.url()),
            ("TV_PREFIX", "tv".to_string()),
            ("TV_MASTER_KEY", dep.master_key.clone()),
            ("TV_SIGNING_KEYS", dep.keys_dir.path().display().to_string()),
            (
                "TV_LISTEN_ADDR",
                format!("127.0.0.1:{}", testkit::free_port()),
            ),
        ],
    );
    assert!(!refused.wait_exit(PATIENCE).success());
    refused.output()
}

/// The fields of a token's metadata that do not depend on when they are read (a quota window or
/// a cooldown that has ended since the fixture was written shows as over).
fn stable(t: &Value) -> Value {
    let mut s = serde_json::Map::new();
    for f in [
        "id",
        "state",
        "expires_at",
        "leases",
        "binding",
        "labels",
        "fingerprint",
        "strikes",
        "last_error",
        "created_at",
        "last_leased_at",
        "sunset_at",
        "revoked_at",
        "refresh",
        "key_id",
        "generation",
    ] {
        s.insert(f.into(), t[f].clone());
    }
    s.insert("quota_limit".into(), t["quota"]["limit"].clone());
    Value::Object(s)
}

fn sorted_tokens(listing: &Value) -> Vec<Value> {
    let mut v: Vec<Value> = listing["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(stable)
        .collect();
    v.sort_by_key(|t| t["id"].as_str().unwrap().to_string());
    v
}

#[tokio::test]
async fn a_store_of_the_previous_layout_is_refused_then_converted_and_served_as_before() {
    let before: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("answers.json")).unwrap()).unwrap();
    let secrets: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("secrets.json")).unwrap()).unwrap();
    let (redis, _data, dep) = old_store();
    assert_eq!(redis.cli(&["EXISTS", "tv:{p}:ids"]).trim(), "1");

    // The vault refuses the old layout and says what converts it.
    let said = refused_start(&redis, &dep);
    assert!(
        said.contains("vaultctl migrate") && said.contains("3 pool(s)"),
        "{said}"
    );
    let mut janitor = dep.janitor(50);
    assert!(!janitor.wait_exit(PATIENCE).success(), "the janitor too");

    // The live lease's deadline has passed since the fixture was written: moved ahead, so that
    // the converted lease can be released by its worker.
    let live = &before["live_lease"];
    let lid = live["lease_id"].as_str().unwrap();
    let ahead = (crate::harness::now_ms() + 3_600_000).to_string();
    redis.cli(&["HSET", &format!("tv:{{p}}:l:{lid}"), "deadline", &ahead]);
    redis.cli(&["ZADD", "tv:{p}:leases", &ahead, lid]);

    let out = migrate(&redis, "2");
    assert!(
        out.contains("3 pools in this version's layout (8 tokens converted)"),
        "{out}"
    );
    assert!(
        migrate(&redis, "100").contains("(0 tokens converted)"),
        "again: a no-op"
    );
    let left = redis.cli(&["KEYS", "tv:{p}:*"]);
    for old in [
        "tv:{p}:ids",
        "tv:{p}:t:a",
        &format!("tv:{{p}}:l:{lid}"),
        "tv:{p}:tl:a",
    ] {
        assert!(!left.lines().any(|k| k == old), "{old} is left:\n{left}");
    }
    let hash = redis.cli(&["HGETALL", "tv:{p}:t:#1"]);
    assert!(
        !hash.contains("fixture-") && !hash.contains("secret_ct"),
        "no secret in the token hash: {hash}"
    );

    let vault = dep.vault(&[]).await;
    let api = dep.api(&vault);
    for pool in ["p", "q", "empty"] {
        let now = api.get(&format!("/v1/pools/{pool}/tokens?limit=100")).await;
        assert_eq!(now.status, 200, "{now:?}");
        assert_eq!(
            sorted_tokens(&now.body),
            sorted_tokens(&before[format!("tokens_{pool}")]),
            "pool {pool}"
        );
        let status = api.get(&format!("/v1/pools/{pool}/status")).await.body;
        let was = &before[format!("status_{pool}")];
        assert_eq!(status["tokens"], was["tokens"], "pool {pool}");
        assert_eq!(status["leases_active"], was["leases_active"], "pool {pool}");
    }
    let audit = api.get("/v1/audit?pool=p&limit=1000").await.body;
    assert_eq!(audit["events"], before["audit_p"]["events"]);

    // The lease that was live goes on: renewed, then released with its count.
    let worker = crate::harness::Api::new(&vault.base).with_token(&dep.token(
        "worker",
        &[Scope::Lease],
        None,
    ));
    let renewed = worker
        .post(&format!("/v1/pools/p/leases/{lid}/renew"), json!({}))
        .await;
    assert_eq!(renewed.status, 200, "{renewed:?}");
    assert_eq!(renewed.body["token_id"], live["token_id"]);
    assert_eq!(
        renewed.body["secret"],
        secrets[live["token_id"].as_str().unwrap()]
    );
    let released = worker
        .post(
            &format!("/v1/pools/p/leases/{lid}/release"),
            json!({"outcome": "ok", "used": 1}),
        )
        .await;
    assert_eq!(released.status, 200, "{released:?}");
    let a = api
        .get(&format!(
            "/v1/pools/p/tokens/{}",
            live["token_id"].as_str().unwrap()
        ))
        .await
        .body;
    assert_eq!(
        (a["leases"].as_u64(), a["quota"]["reserved"].as_u64()),
        (Some(0), Some(0))
    );

    // Every leasable token hands out the secret it was deposited with: a, b, e, g, h (f is
    // revoked; d is quarantined and c cooling in q).
    let mut seen = std::collections::BTreeSet::new();
    let mut held = vec![];
    loop {
        let l = worker.post("/v1/pools/p/leases", json!({})).await;
        if l.status != 201 {
            l.problem(503, "pool_exhausted");
            break;
        }
        let id = l.str("token_id");
        assert_eq!(l.body["secret"], secrets[&id], "token {id}");
        seen.insert(id);
        held.push(l.str("lease_id"));
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["a", "b", "e", "g", "h"]
    );
    worker
        .post("/v1/pools/q/leases", json!({}))
        .await
        .problem(503, "pool_exhausted");
    let restored = api.post("/v1/pools/q/tokens/d/restore", json!({})).await;
    assert_eq!(restored.status, 200, "{restored:?}");
    let d = worker.post("/v1/pools/q/leases", json!({})).await;
    assert_eq!(
        (d.str("token_id"), &d.body["secret"]),
        ("d".to_string(), &secrets["d"])
    );
    // A sticky session kept by the old vault is let go, not followed blindly.
    let s = worker
        .post("/v1/pools/p/leases", json!({"session": "s1"}))
        .await;
    assert!(s.status == 201 || s.code() == "pool_exhausted", "{s:?}");
    // New deposits and whole-pool operations work on converted pools.
    let dep_new = api
        .post(
            "/v1/pools/p/tokens",
            json!({"id": "new", "secret": "new-secret"}),
        )
        .await;
    assert_eq!(dep_new.status, 201, "{dep_new:?}");
    let changed = api
        .put("/v1/pools/p", json!({"max_leases_per_token": 3}))
        .await;
    assert_eq!(changed.status, 200, "{changed:?}");
    drop(held);
}

/// 100,000 tokens of the old layout convert in calls of a few milliseconds: batched (2,000+
/// calls), at most 5 % of them logged over 50 ms (ten times the target: SLOWLOG is wall time,
/// and the suite's other processes share two cores) and none over 500 ms.
#[tokio::test]
async fn migrating_a_large_pool_runs_in_short_calls() {
    const N: u32 = 100_000;
    let (redis, _data, _dep) = old_store();
    // A pool of the old layout, as big as a user's: the fixture's token `b` copied N times
    // under new ids, in the indexes an old vault kept them in.
    let clone = r#"
      local src = redis.call('HGETALL', 'tv:{p}:t:b')
      for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do
        local id = 'big' .. i
        local f = {}
        for j = 1, #src, 2 do
          local v = src[j + 1]
          if src[j] == 'id' then v = id elseif src[j] == 'seq' then v = tostring(1000 + i)
          elseif src[j] == 'leases' then v = '0' elseif src[j] == 'view' then v = 'active' end
          f[#f + 1] = src[j]; f[#f + 1] = v
        end
        redis.call('HSET', 'tv:{big}:t:' .. id, unpack(f))
        redis.call('SADD', 'tv:{big}:ids', id)
        redis.call('SADD', 'tv:{big}:v:active', id)
        redis.call('ZADD', 'tv:{big}:ready', i, id)
        redis.call('ZADD', 'tv:{big}:exp', 1924992000000, id)
      end
      return 1"#;
    redis.cli(&["COPY", "tv:{p}:cfg", "tv:{big}:cfg"]);
    redis.cli(&["SADD", "tv:pools", "big"]);
    for start in (0..N).step_by(10_000) {
        let (a, b) = (start.to_string(), (start + 9_999).to_string());
        redis.cli(&["EVAL", clone, "0", &a, &b]);
    }
    assert_eq!(redis.cli(&["SCARD", "tv:{big}:ids"]).trim(), N.to_string());
    redis.log_calls_over(50_000);
    redis.cli(&["CONFIG", "RESETSTAT"]);

    let out = migrate(&redis, "50");
    assert!(
        out.contains(&format!("{} tokens converted", N + 8)),
        "{out}"
    );
    let calls = redis.command_stat("fcall", "calls").expect("FCALL counted");
    let per_call = redis.command_stat("fcall", "usec_per_call").unwrap();
    eprintln!("{calls} calls, {per_call:.0} µs per call on average");
    assert!(calls >= f64::from(N / 50), "{calls} calls");
    if let Err(slow) = redis.calls_were_short(calls as u64, 50, 500_000) {
        panic!("{slow}");
    }
    assert_eq!(
        redis.cli(&["HLEN", "tv:{big}:tokens"]).trim(),
        N.to_string()
    );
    assert_eq!(
        redis.cli(&["ZCARD", "tv:{big}:ready"]).trim(),
        N.to_string()
    );
    assert_eq!(redis.cli(&["EXISTS", "tv:{big}:ids"]).trim(), "0");
    let one = redis.cli(&["HGET", "tv:{big}:tokens", "big777"]);
    assert_eq!(
        redis
            .cli(&["HGET", &format!("tv:{{big}}:t:{}", one.trim()), "id"])
            .trim(),
        "big777"
    );
    assert_eq!(
        redis.cli(&["ZSCORE", "tv:{big}:exp", one.trim()]).trim(),
        "1924992000000"
    );
}

/// A store of layout 2 (internal ids, no fingerprint index) is refused, then `vaultctl migrate`
/// builds the index in batches, and a credential revoked by fingerprint is found through it.
#[tokio::test]
async fn a_store_without_the_fingerprint_index_is_indexed_by_migrate() {
    let redis = RedisServer::start();
    let mut dep = Deployment::new(&redis);
    dep.prefix = "tv".into();
    let vault = dep.vault(&[]).await;
    let api = dep.api(&vault);
    api.put("/v1/pools/p", json!({})).await;
    let tokens: Vec<Value> = (0..250)
        .map(|i| json!({"id": format!("t{i}"), "secret": format!("secret-{i}")}))
        .collect();
    assert_eq!(
        api.post("/v1/pools/p/tokens", json!({"tokens": tokens}))
            .await
            .status,
        201
    );
    drop(vault);
    // As a vault of layout 2 left it.
    redis.cli(&["HSET", "tv:{p}:cfg", "layout_version", "2"]);
    redis.cli(&["DEL", "tv:{p}:fps"]);

    assert!(refused_start(&redis, &dep).contains("fingerprint index"));

    let out = migrate(&redis, "100");
    assert!(
        out.contains("1 pools in this version's layout (250 tokens converted)"),
        "{out}"
    );
    assert_eq!(redis.cli(&["HLEN", "tv:{p}:fps"]).trim(), "250");
    assert_eq!(
        redis.cli(&["HGET", "tv:{p}:cfg", "migrate_cursor"]).trim(),
        ""
    );
    let vault = dep.vault(&[]).await;
    let api = dep.api(&vault);
    let fp = vault_core::crypto::Secret::new("secret-7").fingerprint();
    let r = api
        .post(
            "/v1/credentials/revoke",
            json!({"fingerprint": fp, "reason": "leaked"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["scope"], "region");
    assert_eq!(r.body["tokens"][0]["token_id"], "t7");
    assert_eq!(
        api.get("/v1/pools/p/tokens/t7").await.body["state"],
        "revoked"
    );
}
