//! Refresh jobs: unsealing a claimed job's credentials and sealing the refreshed token. Shared by
//! the refresher (OAuth2 grants) and vault-api (external login workers completing jobs).

use serde::Deserialize;

use crate::crypto::{jwt_exp_ms, refresh_aad_id, Cipher, Sealed, Secret};
use crate::error::VaultError;
pub use crate::model::RefreshSecrets;
use crate::model::{RefreshKind, RefreshPublic};

/// A claimed refresh job: what the refresher or an external login worker needs.
#[derive(Debug, Clone, Deserialize)]
pub struct ClaimedJob {
    pub job_id: String,
    pub token_id: String,
    pub generation: u64,
    pub attempts: u32,
    pub refresh_kind: RefreshKind,
    pub refresh_ct: String,
    pub refresh_key_id: String,
    /// JSON text of the public refresh settings (read with [`ClaimedJob::settings`]).
    pub refresh_pub: String,
    #[serde(flatten)]
    pub proxy: crate::crypto::SealedProxy,
    pub binding_fp: String,
    /// JSON text (read with [`ClaimedJob::labels`]).
    pub labels: String,
    pub expires_at: i64,
    pub visible_at: i64,
}

impl ClaimedJob {
    /// The public refresh settings (token URL, client id, scope); a token stored without any
    /// has only its kind. Settings that do not decode are an error, never a silent default.
    pub fn settings(&self) -> Result<RefreshPublic, VaultError> {
        if self.refresh_pub.is_empty() {
            return Ok(RefreshPublic {
                kind: self.refresh_kind,
                ..Default::default()
            });
        }
        serde_json::from_str(&self.refresh_pub).map_err(|e| {
            VaultError::Internal(format!(
                "token {}: stored refresh settings do not decode: {e}",
                self.token_id
            ))
        })
    }

    /// The token's labels (none stored: empty); labels that do not decode are an error.
    pub fn labels(&self) -> Result<std::collections::BTreeMap<String, String>, VaultError> {
        if self.labels.is_empty() {
            return Ok(Default::default());
        }
        serde_json::from_str(&self.labels).map_err(|e| {
            VaultError::Internal(format!(
                "token {}: stored labels do not decode: {e}",
                self.token_id
            ))
        })
    }

    /// The bound proxy in full ("" = none): the job's holder must reach the provider through
    /// it, credentials included.
    pub fn proxy_url(&self, cipher: &Cipher, pool: &str) -> Result<String, VaultError> {
        self.proxy.open(cipher, pool, &self.token_id)
    }

    /// Unseal the refresh credentials (empty when the token has none).
    pub fn secrets(&self, cipher: &Cipher, pool: &str) -> Result<RefreshSecrets, VaultError> {
        if self.refresh_ct.is_empty() {
            return Ok(RefreshSecrets::default());
        }
        let sealed = Sealed {
            key_id: self.refresh_key_id.clone(),
            data: self.refresh_ct.clone(),
        };
        let plain = cipher.open(pool, &refresh_aad_id(&self.token_id), &sealed)?;
        serde_json::from_slice(&plain).map_err(|_| {
            VaultError::Crypto(format!(
                "token {}: refresh credentials do not decode",
                self.token_id
            ))
        })
    }
}

/// A refreshed credential, sealed, for `job_complete`.
#[derive(Debug, Clone, Default)]
pub struct RefreshedToken {
    pub secret_ct: String,
    pub key_id: String,
    pub fingerprint: String,
    /// Unix ms, 0 = never.
    pub expires_at: i64,
    /// Empty = keep the current refresh credentials.
    pub refresh_ct: String,
    pub refresh_key_id: String,
}

impl RefreshedToken {
    /// Seal a new secret (and, when the provider rotated them, new refresh credentials).
    /// Without an explicit expiry a JWT's `exp` is used; an opaque secret then never expires.
    pub fn seal(
        cipher: &Cipher,
        pool: &str,
        token_id: &str,
        secret: &Secret,
        expires_at_ms: Option<i64>,
        new_secrets: Option<&RefreshSecrets>,
    ) -> Result<Self, VaultError> {
        let expires_at = crate::time::expiry_ms(match expires_at_ms {
            Some(ms) => ms,
            None => jwt_exp_ms(secret)
                .map_err(VaultError::Invalid)?
                .unwrap_or(0),
        });
        crate::model::check_secret(secret.expose())?;
        let sealed = cipher.seal_secret(pool, token_id, secret);
        let (refresh_ct, refresh_key_id) = match new_secrets {
            Some(s) => {
                let json = serde_json::to_vec(s).expect("refresh secrets serialize");
                let r = cipher.seal(pool, &refresh_aad_id(token_id), &json);
                (r.data, r.key_id)
            }
            None => (String::new(), String::new()),
        };
        Ok(Self {
            secret_ct: sealed.data,
            key_id: sealed.key_id,
            fingerprint: secret.fingerprint(),
            expires_at,
            refresh_ct,
            refresh_key_id,
        })
    }
}

/// How failed refresh attempts are retried: exponential backoff with jitter, and quarantine at
/// the attempt limit. The refresher's comes from its settings; external login workers get
/// [`RetryPolicy::EXTERNAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub backoff_ms: u64,
    pub backoff_max_ms: u64,
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// For jobs completed by external login workers (a login is slow and costly: minutes apart).
    pub const EXTERNAL: RetryPolicy = RetryPolicy {
        backoff_ms: 30_000,
        backoff_max_ms: 1_800_000,
        max_attempts: 8,
    };

    /// Backoff before retry number `attempt` (1-based): exponential with jitter in
    /// [delay/2, delay], so a burst of failures does not retry in lockstep.
    pub fn backoff(&self, attempt: u32) -> std::time::Duration {
        use rand::Rng;
        let exp = self
            .backoff_ms
            .saturating_mul(1u64 << attempt.saturating_sub(1).min(30));
        let delay = exp.min(self.backoff_max_ms).max(1);
        std::time::Duration::from_millis(rand::thread_rng().gen_range(delay / 2..=delay))
    }
}

/// What completing or failing a refresh job did to its token (the functions' answer).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RefreshResult {
    pub token_id: String,
    /// The token's state afterwards (`quarantined` when the attempt limit was reached).
    pub state: String,
    /// The token's generation when a new credential was stored.
    #[serde(default)]
    pub generation: Option<u64>,
    /// Why the attempt failed; `None` when the token was refreshed.
    #[serde(default)]
    pub error: Option<String>,
    /// The token was being rotated on schedule and this refresh replaced it.
    #[serde(default)]
    pub rotated: bool,
    /// The stored credential's fingerprint (never the credential); set by the caller.
    #[serde(skip)]
    pub fingerprint: Option<String>,
}

impl RefreshResult {
    pub fn quarantined(&self) -> bool {
        self.state == "quarantined"
    }

    /// `refreshed`, `will_retry` or `quarantined`: the audit outcome and the metric label.
    pub fn outcome(&self) -> &'static str {
        match (&self.error, self.quarantined()) {
            (None, _) => "refreshed",
            (Some(_), false) => "will_retry",
            (Some(_), true) => "quarantined",
        }
    }
}
