//! Client authentication: the vault's own JWTs (EdDSA / Ed25519, `kid` in the header).
//!
//! Keys come from `TV_SIGNING_KEYS`, a PEM file or a directory of them. The key id is the file
//! name without `.pem` / `.pub.pem`. A private key (`PRIVATE KEY`) signs and verifies; a public
//! key (`*.pub.pem`, `PUBLIC KEY`) only verifies — that is how a new key is rolled out to every
//! replica before it signs. The private key whose id sorts last is the signer (name keys by
//! date: `2026-11.pem`). Verification accepts EdDSA only, so `alg: none` and HS256-with-the-
//! public-key tricks fail before any key is touched.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

/// The one clock-skew allowance for client tokens, in seconds: `exp`, `nbf` and `iat` alike.
pub const CLOCK_LEEWAY_S: u64 = 5;
use serde::{Deserialize, Serialize};

/// What a client token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Workers: lease, renew, release, rotate; read their pools' status.
    Lease,
    /// Auth workers: add tokens and complete refresh jobs; never read tokens.
    Deposit,
    /// Operators: everything.
    Admin,
    /// Read the audit trail.
    Audit,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "lease" => Some(Scope::Lease),
            "deposit" => Some(Scope::Deposit),
            "admin" => Some(Scope::Admin),
            "audit" => Some(Scope::Audit),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Lease => "lease",
            Scope::Deposit => "deposit",
            Scope::Admin => "admin",
            Scope::Audit => "audit",
        }
    }
}

/// The claims of a client token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    /// Space-separated scopes.
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pools: Option<Vec<String>>,
    /// The pipelines it may lease through (absent: any, and the free part of its pools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipelines: Option<Vec<String>>,
}

/// An authenticated client.
#[derive(Debug, Clone)]
pub struct Principal {
    pub sub: String,
    pub jti: String,
    pub exp: i64,
    pub iat: i64,
    pub scopes: BTreeSet<Scope>,
    /// `None` = every pool.
    pub pools: Option<Vec<String>>,
    /// `None` = any pipeline, and leases outside pipelines; else only leases through these.
    pub pipelines: Option<Vec<String>>,
}

impl Principal {
    /// Admin holds every scope.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }

    pub fn may_use_pool(&self, pool: &str) -> bool {
        self.pools
            .as_ref()
            .is_none_or(|p| p.iter().any(|x| x == pool))
    }

    /// Whether it may lease through pipeline `name` ("" = outside any pipeline), or create,
    /// resize and end it.
    pub fn may_use_pipeline(&self, name: &str) -> bool {
        self.pipelines
            .as_ref()
            .is_none_or(|p| p.iter().any(|x| x == name))
    }

    pub fn scope_string(&self) -> String {
        self.scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Why a client token was refused (all are 401s; the text is safe to show).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token (Authorization: Bearer <client token>)")]
    Missing,
    #[error("the bearer token is not a well-formed JWT")]
    Malformed,
    #[error("only EdDSA client tokens are accepted")]
    Algorithm,
    #[error("the token's kid is missing or unknown to this vault")]
    UnknownKey,
    #[error("bad token signature")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued for another audience or by another issuer")]
    WrongAudience,
    #[error("the token's claims are invalid: {0}")]
    Claims(String),
    #[error("the token has been revoked")]
    Revoked,
}

impl AuthError {
    /// A short stable name for the refusal: the `reason` label of
    /// `tv_client_auth_failures_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::Algorithm => "algorithm",
            AuthError::UnknownKey => "unknown_key",
            AuthError::Signature => "signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::Claims(_) => "claims",
            AuthError::Revoked => "revoked",
        }
    }
}

struct Verifier {
    key: DecodingKey,
    /// base64url of the raw public key, for the JWKS.
    x: String,
}

/// The signing and verification keys of a vault.
pub struct KeyRing {
    signer: Option<(String, EncodingKey)>,
    verifiers: BTreeMap<String, Verifier>,
    pub issuer: String,
    pub audience: String,
    /// Longest lifetime a client token may have; revocations are kept this long.
    pub max_ttl_s: i64,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("signer", &self.signer.as_ref().map(|s| &s.0))
            .field("verifiers", &self.verifiers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A new Ed25519 private key as PKCS#8 PEM.
pub fn generate_key_pem() -> String {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    key.to_pkcs8_pem(Default::default())
        .expect("an Ed25519 key encodes")
        .to_string()
}

fn kid_of(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let kid = name
        .strip_suffix(".pub.pem")
        .or_else(|| name.strip_suffix(".pem"))?;
    crate::model::valid_name(kid, 64).then(|| kid.to_string())
}

impl KeyRing {
    pub fn empty(issuer: &str, audience: &str, max_ttl_s: i64) -> Self {
        Self {
            signer: None,
            verifiers: BTreeMap::new(),
            issuer: issuer.into(),
            audience: audience.into(),
            max_ttl_s,
        }
    }

    /// Add one PEM key (private: signs and verifies; public: verifies only).
    pub fn add_pem(&mut self, kid: &str, pem: &str) -> Result<(), String> {
        let (verifying, private) = if pem.contains("PRIVATE KEY") {
            let sk = SigningKey::from_pkcs8_pem(pem)
                .map_err(|_| format!("key {kid}: not an Ed25519 PKCS#8 private key"))?;
            (sk.verifying_key(), Some(pem))
        } else {
            let vk = VerifyingKey::from_public_key_pem(pem)
                .map_err(|_| format!("key {kid}: not an Ed25519 public key"))?;
            (vk, None)
        };
        let x = URL_SAFE_NO_PAD.encode(verifying.as_bytes());
        let key = DecodingKey::from_ed_components(&x).map_err(|e| format!("key {kid}: {e}"))?;
        self.verifiers.insert(kid.to_string(), Verifier { key, x });
        if let Some(pem) = private {
            let enc =
                EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| format!("key {kid}: {e}"))?;
            // The signer is the private key whose id sorts last.
            if self.signer.as_ref().is_none_or(|(k, _)| kid > k.as_str()) {
                self.signer = Some((kid.to_string(), enc));
            }
        }
        Ok(())
    }

    /// Add a verify-only key from its raw public key (base64url, as in a JWK's `x`): a key
    /// another region published to the global plane.
    pub fn add_public_x(&mut self, kid: &str, x: &str) -> Result<(), String> {
        if !crate::model::valid_name(kid, 64) {
            return Err(format!("key id {kid:?} is not a valid key id"));
        }
        let key = DecodingKey::from_ed_components(x).map_err(|e| format!("key {kid}: {e}"))?;
        self.verifiers.insert(
            kid.to_string(),
            Verifier {
                key,
                x: x.to_string(),
            },
        );
        Ok(())
    }

    /// Every verification key: its id and raw public key (base64url).
    pub fn public_keys(&self) -> Vec<(String, String)> {
        self.verifiers
            .iter()
            .map(|(kid, v)| (kid.clone(), v.x.clone()))
            .collect()
    }

    /// Load a PEM file or every `*.pem` in a directory.
    pub fn load(&mut self, path: &Path) -> Result<(), String> {
        let files: Vec<std::path::PathBuf> = if path.is_dir() {
            let mut v: Vec<_> = std::fs::read_dir(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "pem"))
                .collect();
            v.sort();
            v
        } else {
            vec![path.to_path_buf()]
        };
        for f in files {
            let kid = kid_of(&f).ok_or_else(|| {
                format!(
                    "{}: key files are named <kid>.pem or <kid>.pub.pem",
                    f.display()
                )
            })?;
            let pem = std::fs::read_to_string(&f)
                .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            self.add_pem(&kid, &pem)?;
        }
        if self.verifiers.is_empty() {
            return Err(format!("no signing keys found in {}", path.display()));
        }
        Ok(())
    }

    pub fn signer_kid(&self) -> Option<&str> {
        self.signer.as_ref().map(|(k, _)| k.as_str())
    }

    pub fn kids(&self) -> Vec<String> {
        self.verifiers.keys().cloned().collect()
    }

    /// Mint a client token. Returns (token, jti, exp in unix seconds).
    pub fn mint(
        &self,
        sub: &str,
        scopes: &[Scope],
        pools: Option<Vec<String>>,
        ttl_s: i64,
        now_s: i64,
    ) -> Result<(String, String, i64), String> {
        self.mint_limited(sub, scopes, pools, None, ttl_s, now_s)
    }

    /// Mint a client token limited to `pipelines` too (None: not limited).
    pub fn mint_limited(
        &self,
        sub: &str,
        scopes: &[Scope],
        pools: Option<Vec<String>>,
        pipelines: Option<Vec<String>>,
        ttl_s: i64,
        now_s: i64,
    ) -> Result<(String, String, i64), String> {
        let (kid, key) = self
            .signer
            .as_ref()
            .ok_or("this vault has no private signing key")?;
        if ttl_s < 1 || ttl_s > self.max_ttl_s {
            return Err(format!("ttl must be between 1 s and {} s", self.max_ttl_s));
        }
        let scope: BTreeSet<Scope> = scopes.iter().copied().collect();
        let jti = uuid::Uuid::new_v4().to_string();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: sub.to_string(),
            exp: now_s + ttl_s,
            iat: now_s,
            jti: jti.clone(),
            scope: scope
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            pools,
            pipelines,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        let token =
            jsonwebtoken::encode(&header, &claims, key).map_err(|e| format!("cannot sign: {e}"))?;
        Ok((token, jti, claims.exp))
    }

    /// Verify a client token's signature and claims (revocation is checked by the caller).
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        use jsonwebtoken::errors::ErrorKind as K;
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            K::InvalidAlgorithm | K::InvalidAlgorithmName => AuthError::Algorithm,
            _ => AuthError::Malformed,
        })?;
        if header.alg != Algorithm::EdDSA {
            return Err(AuthError::Algorithm);
        }
        let kid = header.kid.ok_or(AuthError::UnknownKey)?;
        let v = self.verifiers.get(&kid).ok_or(AuthError::UnknownKey)?;
        let mut val = Validation::new(Algorithm::EdDSA);
        val.set_audience(&[&self.audience]);
        val.set_issuer(&[&self.issuer]);
        val.set_required_spec_claims(&["exp", "iat", "sub", "aud", "iss"]);
        val.validate_nbf = true;
        val.leeway = CLOCK_LEEWAY_S;
        let data =
            jsonwebtoken::decode::<Claims>(token, &v.key, &val).map_err(|e| match e.kind() {
                K::InvalidSignature => AuthError::Signature,
                K::ExpiredSignature => AuthError::Expired,
                K::ImmatureSignature => AuthError::NotYetValid,
                K::InvalidAudience | K::InvalidIssuer => AuthError::WrongAudience,
                K::InvalidAlgorithm => AuthError::Algorithm,
                K::Json(_) | K::MissingRequiredClaim(_) => AuthError::Claims(e.to_string()),
                _ => AuthError::Malformed,
            })?;
        let c = data.claims;
        if c.iat > crate::time::now_ms() / 1000 + CLOCK_LEEWAY_S as i64 {
            return Err(AuthError::NotYetValid);
        }
        if c.exp - c.iat > self.max_ttl_s {
            return Err(AuthError::Claims(format!(
                "lifetime above the vault's maximum of {} s",
                self.max_ttl_s
            )));
        }
        if c.jti.is_empty() {
            return Err(AuthError::Claims("jti is empty".into()));
        }
        let mut scopes = BTreeSet::new();
        for s in c.scope.split_whitespace() {
            scopes.insert(
                Scope::parse(s).ok_or_else(|| AuthError::Claims(format!("unknown scope {s}")))?,
            );
        }
        Ok(Principal {
            sub: c.sub,
            jti: c.jti,
            exp: c.exp,
            iat: c.iat,
            scopes,
            pools: c.pools,
            pipelines: c.pipelines,
        })
    }

    /// `GET /.well-known/jwks.json`.
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: self
                .verifiers
                .iter()
                .map(|(kid, v)| Jwk {
                    kty: "OKP",
                    crv: "Ed25519",
                    alg: "EdDSA",
                    use_: "sig",
                    kid: kid.clone(),
                    x: v.x.clone(),
                })
                .collect(),
        }
    }
}

/// A JSON Web Key Set (RFC 7517): the public keys that verify client tokens.
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Jwks {
    /// The keys that verify client tokens, one per `kid`.
    pub keys: Vec<Jwk>,
}

/// One Ed25519 public key (RFC 8037).
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Jwk {
    /// Key type: `OKP`.
    pub kty: &'static str,
    /// Curve: `Ed25519`.
    pub crv: &'static str,
    /// Algorithm: `EdDSA`.
    pub alg: &'static str,
    /// Use: `sig`.
    #[serde(rename = "use")]
    pub use_: &'static str,
    /// Key id: the `kid` header of the tokens it verifies.
    pub kid: String,
    /// The public key, base64url without padding.
    pub x: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        let mut r = KeyRing::empty("tokenvault", "tokenvault", 86_400);
        r.add_pem("k1", &generate_key_pem()).unwrap();
        r
    }

    #[test]
    fn mint_and_verify() {
        let r = ring();
        let now = crate::time::now_ms() / 1000;
        let (t, jti, _) = r
            .mint("ops", &[Scope::Lease], Some(vec!["a".into()]), 60, now)
            .unwrap();
        let p = r.verify(&t).unwrap();
        assert_eq!((p.sub.as_str(), p.jti.as_str()), ("ops", jti.as_str()));
        assert!(p.has(Scope::Lease) && !p.has(Scope::Admin));
        assert!(p.may_use_pool("a") && !p.may_use_pool("b"));
        assert_eq!(
            serde_json::to_value(r.jwks()).unwrap()["keys"][0]["kid"],
            "k1"
        );
    }

    #[test]
    fn refusals() {
        let r = ring();
        let other = ring();
        let now = crate::time::now_ms() / 1000;
        let (t, _, _) = other.mint("x", &[Scope::Admin], None, 60, now).unwrap();
        assert_eq!(
            r.verify(&t).unwrap_err(),
            AuthError::Signature,
            "same kid, other key"
        );
        let (t, _, _) = r.mint("x", &[Scope::Admin], None, 60, now - 3600).unwrap();
        assert_eq!(r.verify(&t).unwrap_err(), AuthError::Expired);
        assert_eq!(r.verify("garbage").unwrap_err(), AuthError::Malformed);
        assert!(r.mint("x", &[Scope::Admin], None, 86_401, now).is_err());
    }

    #[test]
    fn newest_private_key_signs_public_keys_only_verify() {
        let mut r = KeyRing::empty("i", "a", 3600);
        r.add_pem("2026-01", &generate_key_pem()).unwrap();
        r.add_pem("2026-02", &generate_key_pem()).unwrap();
        assert_eq!(r.signer_kid(), Some("2026-02"));
        let pem = generate_key_pem();
        let pub_pem = {
            use ed25519_dalek::pkcs8::EncodePublicKey;
            SigningKey::from_pkcs8_pem(&pem)
                .unwrap()
                .verifying_key()
                .to_public_key_pem(Default::default())
                .unwrap()
        };
        r.add_pem("2026-03", &pub_pem).unwrap();
        assert_eq!(r.signer_kid(), Some("2026-02"), "a public key never signs");
        assert_eq!(r.kids().len(), 3);
    }
}
