//! Starting the real binaries against private Redis servers, and a small HTTP client.

use std::time::Duration;

/// How long a test waits for something it expects (a vault to start, an event, a state) before
/// it fails. Far, because a busy machine is slow, not wrong, and waiting costs nothing when the
/// thing comes early. Bounds that the product promises (a revocation within 1 s, a 503 within
/// the Redis budget) are asserted as such, not with this.
pub(crate) const PATIENCE: Duration = Duration::from_secs(120);

use reqwest::{Method, StatusCode};
use serde_json::Value;
use testkit::{bin_path, free_port, Child, RedisServer};
use vault_core::crypto::MasterKey;

/// A running `vault-api` process.
pub(crate) struct Vault {
    pub(crate) child: Child,
    pub(crate) base: String,
}

/// Settings shared by the processes of one test: Redis, key prefix, master key, client-token
/// signing keys (a directory with `k1.pem`) and an admin token signed with them.
#[derive(Clone)]
pub(crate) struct Deployment {
    pub(crate) redis_url: String,
    pub(crate) prefix: String,
    pub(crate) master_key: String,
    pub(crate) keys_dir: std::sync::Arc<tempfile::TempDir>,
    pub(crate) admin: String,
    /// The network namespace its processes run in (a region apart); None = this one, on
    /// loopback.
    pub(crate) netns: Option<std::sync::Arc<testkit::Netns>>,
}

/// A key ring over a directory of PEM keys, as the vault loads it.
pub(crate) fn key_ring(dir: &std::path::Path) -> vault_core::auth::KeyRing {
    let mut r = vault_core::auth::KeyRing::empty("tokenvault", "tokenvault", 30 * 86_400);
    r.load(dir).unwrap();
    r
}

/// Mint a client token with the newest private key in `dir`.
pub(crate) fn mint_in(
    dir: &std::path::Path,
    sub: &str,
    scopes: &[vault_core::auth::Scope],
    pools: Option<Vec<String>>,
) -> String {
    key_ring(dir)
        .mint(sub, scopes, pools, 3600, now_ms() / 1000)
        .unwrap()
        .0
}

impl Deployment {
    pub(crate) fn new(redis: &RedisServer) -> Self {
        let keys_dir = tempfile::tempdir().unwrap();
        std::fs::write(
            keys_dir.path().join("k1.pem"),
            vault_core::auth::generate_key_pem(),
        )
        .unwrap();
        let admin = mint_in(
            keys_dir.path(),
            "test-admin",
            &[vault_core::auth::Scope::Admin],
            None,
        );
        Self {
            redis_url: redis.url(),
            prefix: format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            master_key: MasterKey::generate().to_base64(),
            keys_dir: std::sync::Arc::new(keys_dir),
            admin,
            netns: None,
        }
    }

    /// A client token with these scopes (and optional pool list).
    pub(crate) fn token(
        &self,
        sub: &str,
        scopes: &[vault_core::auth::Scope],
        pools: Option<Vec<String>>,
    ) -> String {
        mint_in(self.keys_dir.path(), sub, scopes, pools)
    }

    /// An admin client for `vault`.
    pub(crate) fn api(&self, vault: &Vault) -> Api {
        Api::new(&vault.base).with_token(&self.admin)
    }

    fn env(&self, extra: &[(&str, &str)]) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("TV_REDIS_URL", self.redis_url.clone()),
            ("TV_PREFIX", self.prefix.clone()),
            ("TV_MASTER_KEY", self.master_key.clone()),
            (
                "TV_SIGNING_KEYS",
                self.keys_dir.path().display().to_string(),
            ),
            ("RUST_LOG", "warn".to_string()),
            // The bad-token tests fail on purpose, far more often than a real client would.
            ("TV_AUTH_FAILURE_LIMIT", "100000".to_string()),
        ];
        for (k, v) in extra {
            // Leak is fine: a handful of short strings per test process.
            let k: &'static str = Box::leak(k.to_string().into_boxed_str());
            env.retain(|(e, _)| *e != k);
            env.push((k, v.to_string()));
        }
        env
    }

    /// Start a vault-api replica and wait until it is ready. A port found free may be taken
    /// before the replica binds it (by another test, or an outgoing connection): then it starts
    /// again on another.
    pub(crate) async fn vault(&self, extra: &[(&str, &str)]) -> Vault {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match self.start_vault(free_port(), extra).await {
                Ok(v) => return v,
                Err(output) => failures.push(output),
            }
        }
        panic!("vault-api did not start:\n{}", failures.join("\n---\n"))
    }

    /// Start a vault-api replica on `port` (e.g. to restart one where its clients expect it).
    pub(crate) async fn vault_at(&self, port: u16, extra: &[(&str, &str)]) -> Vault {
        self.start_vault(port, extra)
            .await
            .unwrap_or_else(|output| panic!("vault-api did not start:\n{output}"))
    }

    /// Ready = this process listens (not a stranger holding the port), Redis answers, scripts
    /// are loaded, the revocation/event subscription is live. Err(its output) when it exited
    /// or was not ready in time.
    async fn start_vault(&self, port: u16, extra: &[(&str, &str)]) -> Result<Vault, String> {
        let mut env = self.env(extra);
        let host = self
            .netns
            .as_ref()
            .map_or(std::net::Ipv4Addr::LOCALHOST, |ns| ns.addr);
        env.push(("TV_LISTEN_ADDR", format!("{host}:{port}")));
        let mut child = self.spawn("vault-api", &env);
        let base = format!("http://{host}:{port}");
        let client = reqwest::Client::new();
        let deadline = std::time::Instant::now() + crate::harness::PATIENCE;
        loop {
            if child.try_wait().is_some() {
                return Err(child.output());
            }
            if testkit::listens_on(child.id(), host, port) {
                if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
                    if r.status() == StatusCode::OK {
                        break;
                    }
                }
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("not ready in 20 s:\n{}", child.output()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Vault { child, base })
    }

    /// Start a refresher tuned for tests (fast polling, short backoff); `extra` overrides.
    pub(crate) fn refresher(&self, extra: &[(&str, &str)]) -> Child {
        let mut env = self.env(&[
            ("TV_REFRESHER_POLL_MS", "50"),
            ("TV_REFRESH_BACKOFF_MS", "100"),
            ("TV_REFRESH_HTTP_TIMEOUT_MS", "1000"),
            ("TV_REFRESH_VISIBILITY_MS", "3000"),
        ]);
        for (k, v) in extra {
            env.retain(|(e, _)| e != k);
            env.push((Box::leak(k.to_string().into_boxed_str()), v.to_string()));
        }
        self.spawn("refresher", &env)
    }

    /// Start a janitor sweeping every `interval_ms`.
    pub(crate) fn janitor(&self, interval_ms: u64) -> Child {
        self.janitor_with(interval_ms, &[])
    }

    pub(crate) fn janitor_with(&self, interval_ms: u64, extra: &[(&str, &str)]) -> Child {
        let iv = interval_ms.to_string();
        let mut all = vec![("TV_JANITOR_INTERVAL_MS", iv.as_str())];
        all.extend_from_slice(extra);
        self.spawn("janitor", &self.env(&all))
    }

    /// Start one of the workspace's binaries in this deployment's namespace.
    fn spawn(&self, binary: &str, env: &[(&str, String)]) -> Child {
        Child::spawn_in(self.netns.as_deref(), &bin_path(binary), &[], env)
    }
}

/// A JSON HTTP client bound to one base URL.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    /// Sent as `Authorization: Bearer` unless a call sets its own.
    pub(crate) token: Option<String>,
}

pub(crate) use testkit::Answer;

impl Api {
    pub(crate) fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            // Below the vault's keep-alive idle limit: never reuse a connection it is closing.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        Self {
            base: base.to_string(),
            http,
            token: None,
        }
    }

    pub(crate) fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    /// A request builder with this client's token, for bodies the JSON helpers cannot send.
    pub(crate) fn raw(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub(crate) async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.call_with(method, path, body, &[]).await
    }

    pub(crate) async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let own_auth = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
        if let (Some(t), false) = (&self.token, own_auth) {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.expect("request sent");
        Self::answer(res).await
    }

    pub(crate) async fn answer(res: reqwest::Response) -> Answer {
        let (status, headers) = (res.status(), res.headers().clone());
        let bytes = res.bytes().await.unwrap_or_default();
        Answer::new(status, &headers, &bytes)
    }

    pub(crate) async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None).await
    }
    pub(crate) async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(body)).await
    }
    pub(crate) async fn put(&self, path: &str, body: Value) -> Answer {
        self.call(Method::PUT, path, Some(body)).await
    }
    pub(crate) async fn delete(&self, path: &str) -> Answer {
        self.call(Method::DELETE, path, None).await
    }
}

/// Redis, one vault-api and a client: the common setup.
pub(crate) struct One {
    pub(crate) redis: RedisServer,
    pub(crate) dep: Deployment,
    pub(crate) vault: Vault,
    pub(crate) api: Api,
}

pub(crate) async fn one(extra: &[(&str, &str)]) -> One {
    let redis = RedisServer::start();
    let dep = Deployment::new(&redis);
    let vault = dep.vault(extra).await;
    let api = dep.api(&vault);
    One {
        redis,
        dep,
        vault,
        api,
    }
}

/// Poll GET `path` until `pred` holds for the JSON body; panics with the last body after
/// `deadline`.
pub(crate) async fn wait_json(
    api: &Api,
    path: &str,
    deadline: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    let reached = eventually(deadline, async || {
        last = api.get(path).await.body;
        pred(&last)
    })
    .await;
    assert!(reached, "condition not reached on {path}: {last}");
    last
}

/// The tests' one poll-until: check `cond` every 20 ms until it holds; returns whether it did
/// before `deadline`. Async (a condition that is plain code is `async || ...`), so nothing this
/// test process serves stops while it waits.
pub(crate) async fn eventually(deadline: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + deadline;
    loop {
        if cond().await {
            return true;
        }
        if std::time::Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Unix ms now (same machine, same clock as Redis TIME).
pub(crate) fn now_ms() -> i64 {
    vault_core::time::now_ms()
}

/// Parse an RFC 3339 answer field to unix ms.
pub(crate) fn ms(v: &Value, field: &str) -> i64 {
    let s = v
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{field} missing in {v}"));
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The value of the first Prometheus sample named `name` whose line holds every label in
/// `labels`.
pub(crate) fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The sum of every series of `name` with `labels` (all its other labels' values together).
pub(crate) fn sample_sum(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The Prometheus text of the replica at `base`.
pub(crate) async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// A tool scripts/setup.sh installs in the checkout (`.venv-tests/bin/pytest`, `.tools/bin/...`);
/// fails with what to run when it is missing.
pub(crate) fn installed(rel: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    assert!(
        path.is_file(),
        "{} is not installed: run scripts/setup.sh",
        path.display()
    );
    path
}

/// The Redis key of token `id`'s hash: `<prefix>:{pool}:t:<internal id>`, the internal id read
/// from the pool's `tokens` hash (for tests that look at what is stored).
pub(crate) fn token_key(redis: &RedisServer, prefix: &str, pool: &str, id: &str) -> String {
    let internal = redis.cli(&["HGET", &format!("{prefix}:{{{pool}}}:tokens"), id]);
    assert!(!internal.trim().is_empty(), "no token {id} in pool {pool}");
    format!("{prefix}:{{{pool}}}:t:{}", internal.trim())
}
