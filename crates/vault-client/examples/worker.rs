//! A worker that calls a target API with leased tokens:
//!
//! ```sh
//! TV_URL=http://127.0.0.1:8080 TV_TOKEN=<lease-scoped client token> TV_POOL=github \
//! TARGET_URL=https://api.github.com/rate_limit cargo run -p vault-client --example worker
//! ```
//!
//! Each request goes out with the lease's headers through its bound proxy. A 401 rotates to
//! another token, a 429 cools the token down for the target's Retry-After and takes another; the
//! lease is renewed in the background and released at the end with what the target said of the
//! quota.

use vault_client::{Client, Outcome};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = |k: &str| std::env::var(k).map_err(|_| format!("set {k}"));
    let client = Client::new(&env("TV_URL")?, &env("TV_TOKEN")?);
    let target = env("TARGET_URL")?;
    let requests: u32 = std::env::var("REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let guard = client.guard(&env("TV_POOL")?, "example-worker").await?;
    for i in 1..=requests {
        let res = guard.send(|http| http.get(&target)).await?;
        let lease = guard.lease().await?;
        println!(
            "request {i}: {} with token {}",
            res.status(),
            lease.token_id
        );
    }
    guard.release(Outcome::Ok).await?;
    Ok(())
}
