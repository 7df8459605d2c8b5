//! The vault's REST API as vaultctl uses it: `TV_URL` and `TV_TOKEN` (or `--url`, `--token`), and
//! problem+json answers turned into one clear line (`pool_not_found (404): ...`).

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::Value;

#[derive(Debug, Clone, Args)]
pub(crate) struct RemoteArgs {
    /// The vault's URL.
    #[arg(
        long,
        env = "TV_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub(crate) url: String,
    /// A client token (`vaultctl client mint`); admin for pool and token commands.
    #[arg(long, env = "TV_TOKEN", hide_env_values = true, global = true)]
    pub(crate) token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

impl RemoteArgs {
    /// The client token to call with.
    pub(crate) fn token(&self) -> anyhow::Result<String> {
        self.token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .context(
                "no client token: set TV_TOKEN or pass --token (mint one with `vaultctl client mint`)",
            )
    }
}

/// An error answer of the vault.
#[derive(Debug, thiserror::Error)]
#[error("{code} ({status}): {detail}")]
pub(crate) struct Problem {
    pub(crate) status: u16,
    pub(crate) code: String,
    pub(crate) detail: String,
}

#[derive(Clone)]
pub(crate) struct Remote {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Remote {
    pub(crate) fn new(a: &RemoteArgs) -> anyhow::Result<Self> {
        let token = a.token()?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            base: a.url.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.token)
    }

    /// One call, answered as JSON (`null` for 204). Bounded: 30 s.
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.request(method, path).timeout(Duration::from_secs(30));
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("cannot reach the vault at {}", self.base))?;
        answer(res).await
    }

    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// The items of a paged listing (pages of `P`, each naming the next), up to `most`, asking
    /// for at most 1,000 a page.
    pub(crate) async fn pages<P: vault_core::model::Paged>(
        &self,
        path: &str,
        most: usize,
    ) -> anyhow::Result<Vec<P::Item>> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        while all.len() < most {
            let mut q = format!("{path}{sep}limit={}", (most - all.len()).min(1000));
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={c}"));
            }
            let page: P = crate::operator::typed(&self.get(&q).await?)?;
            let (items, next) = page.into_parts();
            all.extend(items);
            cursor = next;
            if cursor.is_none() {
                break;
            }
        }
        all.truncate(most);
        Ok(all)
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// A POST answered as the type `T` the server writes.
    pub(crate) async fn post_as<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<T> {
        crate::operator::typed(&self.post(path, body).await?)
    }

    pub(crate) async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
}

/// The JSON of a success, or the problem of a failure.
pub(crate) async fn answer(res: reqwest::Response) -> anyhow::Result<Value> {
    let status = res.status();
    let text = res.text().await.context("reading the vault's answer")?;
    if status.is_success() {
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        return serde_json::from_str(&text).context("the vault's answer is not JSON");
    }
    let p: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let field = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_string);
    Err(Problem {
        status: status.as_u16(),
        code: field("code").unwrap_or_else(|| format!("http_{}", status.as_u16())),
        detail: field("detail")
            .or_else(|| field("title"))
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string()),
    }
    .into())
}

/// A path segment (pool names and token ids are plain, but a typo must not change the path).
pub(crate) fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
