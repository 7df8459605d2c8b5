//! Secrets at rest: AES-256-GCM with a random 96-bit nonce, the pool and token id as associated
//! data (a ciphertext copied to another token does not decrypt), and a key id stored beside
//! each ciphertext so keys can rotate. Plaintext lives only in [`Secret`], which never prints.

use std::collections::HashMap;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::VaultError;

/// A plaintext credential. `Debug` and `Display` redact it; read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// `sha256:` + the first 12 hex digits of the secret's SHA-256: safe to log and show.
    pub fn fingerprint(&self) -> String {
        let d = Sha256::digest(self.0.as_bytes());
        format!("sha256:{}", &hex::encode(d)[..12])
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({})", self.fingerprint())
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One AES-256 master key with its id (`k-` + 8 hex of the key's SHA-256, so ids are stable
/// without extra configuration).
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    key: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

impl MasterKey {
    pub fn from_base64(text: &str) -> Result<Self, String> {
        let bytes = STANDARD.decode(text.trim()).map_err(|_| {
            "TV_MASTER_KEY is not valid base64 (generate one with `openssl rand -base64 32`)"
                .to_string()
        })?;
        let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!(
                "TV_MASTER_KEY must be 32 bytes of base64, got {} bytes",
                b.len()
            )
        })?;
        Ok(Self::from_bytes(key))
    }

    pub fn from_bytes(key: [u8; 32]) -> Self {
        let id = format!("k-{}", &hex::encode(Sha256::digest(key))[..8]);
        Self { id, key }
    }

    /// A fresh random key (dev mode and tests).
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        Self::from_bytes(key)
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.key)
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Encrypts with the current key, decrypts with any known key.
#[derive(Clone)]
pub struct Cipher {
    current: String,
    keys: HashMap<String, Aes256Gcm>,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cipher")
            .field("current", &self.current)
            .finish()
    }
}

/// An encrypted value as stored: key id and base64(nonce || ciphertext+tag).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub data: String,
}

impl Sealed {
    /// The sealed bytes (nonce, ciphertext, tag), as the token's secret key stores them.
    pub fn bytes(&self) -> Result<Vec<u8>, VaultError> {
        Self::from_base64(&self.data)
    }

    /// The bytes of base64 `data` (a ciphertext as read before).
    pub fn from_base64(data: &str) -> Result<Vec<u8>, VaultError> {
        STANDARD
            .decode(data)
            .map_err(|_| VaultError::Crypto("stored ciphertext is not base64".into()))
    }

    /// From the bytes a token's secret key stores.
    pub fn from_bytes(key_id: &str, bytes: &[u8]) -> Self {
        Sealed {
            key_id: key_id.to_string(),
            data: STANDARD.encode(bytes),
        }
    }
}

fn aad(pool: &str, id: &str) -> Vec<u8> {
    format!("{pool}/{id}").into_bytes()
}

impl Cipher {
    pub fn new(key: &MasterKey) -> Self {
        let mut keys = HashMap::new();
        keys.insert(key.id.clone(), Aes256Gcm::new(&key.key.into()));
        Self {
            current: key.id.clone(),
            keys,
        }
    }

    /// Also decrypt with `old` keys (master-key rotation: records sealed before the switch).
    pub fn with_old_keys(mut self, old: &[MasterKey]) -> Self {
        for k in old {
            self.keys
                .entry(k.id.clone())
                .or_insert_with(|| Aes256Gcm::new(&k.key.into()));
        }
        self
    }

    pub fn current_key_id(&self) -> &str {
        &self.current
    }

    pub fn seal(&self, pool: &str, id: &str, plaintext: &[u8]) -> Sealed {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let cipher = &self.keys[&self.current];
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad(pool, id),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut data = nonce.to_vec();
        data.extend_from_slice(&ct);
        Sealed {
            key_id: self.current.clone(),
            data: STANDARD.encode(data),
        }
    }

    pub fn open(&self, pool: &str, id: &str, sealed: &Sealed) -> Result<Vec<u8>, VaultError> {
        let cipher = self.keys.get(&sealed.key_id).ok_or_else(|| {
            VaultError::Crypto(format!(
                "token {id} was encrypted with master key {} which this vault does not have",
                sealed.key_id
            ))
        })?;
        let raw = STANDARD.decode(&sealed.data).map_err(|_| {
            VaultError::Crypto(format!("token {id}: stored ciphertext is not base64"))
        })?;
        if raw.len() < 12 + 16 {
            return Err(VaultError::Crypto(format!(
                "token {id}: stored ciphertext is truncated"
            )));
        }
        let (nonce, ct) = raw.split_at(12);
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: &aad(pool, id),
                },
            )
            .map_err(|_| {
                VaultError::Crypto(format!("token {id}: ciphertext does not authenticate"))
            })
    }

    pub fn seal_secret(&self, pool: &str, id: &str, secret: &Secret) -> Sealed {
        self.seal(pool, id, secret.expose().as_bytes())
    }

    pub fn open_secret(&self, pool: &str, id: &str, sealed: &Sealed) -> Result<Secret, VaultError> {
        let bytes = self.open(pool, id, sealed)?;
        String::from_utf8(bytes)
            .map(Secret)
            .map_err(|_| VaultError::Crypto(format!("token {id}: decrypted secret is not UTF-8")))
    }
}

/// If `secret` is a JWT, its `exp` claim in unix ms (`Ok(None)` when it has none).
/// A secret that is not a JWT at all is `Ok(None)`; one that looks like a JWT but whose
/// payload does not decode is an error, so a typo does not silently lose the expiry.
/// Associated data of a pool's sealed client secret: `@` is never in a token id, so no token's
/// ciphertext can be passed off as it.
pub const POOL_REFRESH_AAD_ID: &str = "@pool/refresh";

/// Associated data of the sealed refresh credentials (distinct from the token's secret).
pub fn refresh_aad_id(token_id: &str) -> String {
    format!("{token_id}/refresh")
}

/// Associated data of a binding's sealed proxy URL: bound to its token, apart from the secret.
pub fn proxy_aad_id(token_id: &str) -> String {
    format!("{token_id}/proxy")
}

/// A URL as shown where its credentials must not go (metadata, logs): the password (or a lone
/// user name, which some proxies take as the credential) replaced by `***`, the rest as given.
/// None when there is nothing to hide.
pub fn redacted_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (userinfo, host) = rest[..authority_end].rsplit_once('@')?;
    let shown = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_string(),
    };
    Some(format!(
        "{scheme}://{shown}@{host}{}",
        &rest[authority_end..]
    ))
}

/// A binding's proxy as stored: the URL as shown (credentials redacted) and, when it has
/// credentials, the full URL sealed. Flattened into the records that carry it (`proxy`,
/// `proxy_ct`, `proxy_key_id`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SealedProxy {
    #[serde(rename = "proxy")]
    pub shown: String,
    #[serde(rename = "proxy_ct", default)]
    pub ct: String,
    #[serde(rename = "proxy_key_id", default)]
    pub key_id: String,
}

impl SealedProxy {
    /// The proxy URL in full ("" = none): the shown one when nothing was sealed.
    pub fn open(&self, cipher: &Cipher, pool: &str, token_id: &str) -> Result<String, VaultError> {
        if self.ct.is_empty() {
            return Ok(self.shown.clone());
        }
        let plain = cipher.open(
            pool,
            &proxy_aad_id(token_id),
            &Sealed {
                key_id: self.key_id.clone(),
                data: self.ct.clone(),
            },
        )?;
        String::from_utf8(plain)
            .map_err(|_| VaultError::Crypto("a sealed proxy URL is not UTF-8".into()))
    }
}

pub fn jwt_exp_ms(secret: &Secret) -> Result<Option<i64>, String> {
    let parts: Vec<&str> = secret.expose().split('.').collect();
    if parts.len() != 3 {
        return Ok(None);
    }
    let header = URL_SAFE_NO_PAD.decode(parts[0].trim_end_matches('='));
    let is_jwt = header
        .ok()
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
        .map(|h| h.get("alg").is_some())
        .unwrap_or(false);
    if !is_jwt {
        return Ok(None);
    }
    let payload = URL_SAFE_NO_PAD
        .decode(parts[1].trim_end_matches('='))
        .map_err(|_| "the secret looks like a JWT but its payload is not base64url".to_string())?;
    let claims: serde_json::Value = serde_json::from_slice(&payload)
        .map_err(|_| "the secret looks like a JWT but its payload is not JSON".to_string())?;
    match claims.get("exp") {
        None => Ok(None),
        Some(exp) => exp
            .as_f64()
            .filter(|e| e.is_finite() && *e > 0.0)
            // `as` saturates: a huge exp becomes "never expires" under the expiry rule.
            .map(|e| Some((e * 1000.0) as i64))
            .ok_or_else(|| "the JWT's exp claim is not a positive number".to_string()),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn urls_lose_their_credentials() {
        let r = |u: &str| super::redacted_url(u);
        assert_eq!(
            r("socks5://u:pw@10.0.0.7:1080").as_deref(),
            Some("socks5://u:***@10.0.0.7:1080")
        );
        assert_eq!(
            r("http://token@h:3128/x").as_deref(),
            Some("http://***@h:3128/x")
        );
        assert_eq!(
            r("redis://:pw@h:6379/0").as_deref(),
            Some("redis://:***@h:6379/0")
        );
        assert_eq!(r("redis://h:6379"), None);
    }
    use super::*;

    fn jwt(payload: &str) -> Secret {
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
        Secret::new(format!("{h}.{}.sig", URL_SAFE_NO_PAD.encode(payload)))
    }

    #[test]
    fn seal_open_roundtrip_and_aad_binding() {
        let c = Cipher::new(&MasterKey::generate());
        let s = Secret::new("hunter2-token");
        let sealed = c.seal_secret("p", "t1", &s);
        assert!(!sealed.data.contains("hunter2"));
        assert_eq!(c.open_secret("p", "t1", &sealed).unwrap(), s);
        assert!(
            c.open_secret("p", "t2", &sealed).is_err(),
            "ciphertext moved to another token"
        );
        let other = Cipher::new(&MasterKey::generate());
        let err = other.open_secret("p", "t1", &sealed).unwrap_err();
        assert!(err.to_string().contains("master key"), "{err}");
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2-token");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        assert!(s.fingerprint().starts_with("sha256:") && s.fingerprint().len() == 19);
    }

    #[test]
    fn jwt_exp_is_read() {
        assert_eq!(
            jwt_exp_ms(&jwt(r#"{"exp":1700000000}"#)).unwrap(),
            Some(1_700_000_000_000)
        );
        assert_eq!(jwt_exp_ms(&jwt(r#"{"sub":"x"}"#)).unwrap(), None);
        assert_eq!(jwt_exp_ms(&Secret::new("plain-api-key")).unwrap(), None);
        assert!(jwt_exp_ms(&jwt("not json")).is_err());
        assert!(jwt_exp_ms(&jwt(r#"{"exp":"soon"}"#)).is_err());
    }

    #[test]
    fn master_key_errors_say_how_to_fix() {
        assert!(MasterKey::from_base64("!!")
            .unwrap_err()
            .contains("openssl"));
        assert!(MasterKey::from_base64("AAAA")
            .unwrap_err()
            .contains("32 bytes"));
        let k = MasterKey::generate();
        assert_eq!(MasterKey::from_base64(&k.to_base64()).unwrap().id(), k.id());
    }
}
