//! How tokens are refreshed: the settings a token or a pool gives, their secret half, the rule each grant follows.

use super::*;

/// How a token gets a new secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RefreshKind {
    /// OAuth2 refresh-token grant (RFC 6749 §6) at `token_url`.
    Oauth2RefreshToken,
    /// OAuth2 client-credentials grant (RFC 6749 §4.4) at `token_url`.
    Oauth2ClientCredentials,
    /// A refresh job claimed by an external login worker (`/refresh-jobs/claim`).
    External,
    /// Never refreshed: a burned token is quarantined.
    #[default]
    None,
}

impl RefreshKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oauth2RefreshToken => "oauth2_refresh_token",
            Self::Oauth2ClientCredentials => "oauth2_client_credentials",
            Self::External => "external",
            Self::None => "none",
        }
    }
}

/// The secret half of a refresh method, as sealed at rest.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct RefreshSecrets {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

impl std::fmt::Debug for RefreshSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshSecrets([redacted])")
    }
}

/// How a token is refreshed. `refresh_token` and `client_secret` are secrets: sealed at rest,
/// never answered.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RefreshInput {
    /// The grant; a token may leave it out to use its pool's (see [`PoolRefresh`]).
    pub kind: Option<RefreshKind>,
    /// The OAuth2 token endpoint (`http://` or `https://`, at most 2048 characters); required
    /// by both OAuth2 grants.
    #[cfg_attr(feature = "schema", schema(max_length = 2048, pattern = "^https?://"))]
    pub token_url: Option<String>,
    /// The refresh token (`oauth2_refresh_token`; each token brings its own). Sealed at rest,
    /// never answered; replaced when the endpoint rotates it.
    #[cfg_attr(feature = "schema", schema(value_type = Option<String>, format = Password))]
    pub refresh_token: Option<Secret>,
    /// The OAuth2 client id (required by `oauth2_client_credentials`).
    pub client_id: Option<String>,
    /// The OAuth2 client secret. Sealed at rest, never answered (only its fingerprint).
    #[cfg_attr(feature = "schema", schema(value_type = Option<String>, format = Password))]
    pub client_secret: Option<Secret>,
    /// The `scope` asked for at the token endpoint (space-separated); none by default.
    pub scope: Option<String>,
    /// How the client authenticates at the token endpoint: `basic` (default) or `body`.
    pub client_auth: Option<ClientAuth>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with client_id:client_secret (RFC 6749 §2.3.1).
    #[default]
    Basic,
    /// client_id and client_secret in the form body.
    Body,
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

/// The public part of a refresh method (what metadata shows).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct RefreshPublic {
    /// The grant (`none`: never refreshed).
    pub kind: RefreshKind,
    /// The OAuth2 token endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    /// The OAuth2 client id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The `scope` asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// How the client authenticates at the token endpoint: `basic` or `body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<ClientAuth>,
    /// The token takes what it does not set itself from its pool's `refresh`, read at each
    /// refresh (so a new pool client secret applies to every token at once).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inherits_pool: bool,
}

impl RefreshPublic {
    /// These settings, with what they leave out taken from `pool`.
    pub fn over(mut self, pool: &RefreshPublic) -> RefreshPublic {
        self.token_url = self.token_url.or_else(|| pool.token_url.clone());
        self.client_id = self.client_id.or_else(|| pool.client_id.clone());
        self.scope = self.scope.or_else(|| pool.scope.clone());
        self.client_auth = self.client_auth.or(pool.client_auth);
        self
    }

    /// The refresh rule: what each grant needs, on the settings a token is refreshed with.
    fn check(&self, client_secret: bool, refresh_token: bool) -> Result<(), VaultError> {
        let url_ok = self.token_url.as_deref().is_some_and(is_http_url);
        match self.kind {
            RefreshKind::Oauth2RefreshToken if !url_ok || !refresh_token => Err(invalid(
                "refresh kind oauth2_refresh_token needs token_url (http/https) and refresh_token",
            )),
            RefreshKind::Oauth2ClientCredentials
                if !url_ok || self.client_id.is_none() || !client_secret =>
            {
                Err(invalid("refresh kind oauth2_client_credentials needs token_url (http/https), client_id and client_secret"))
            }
            _ => Ok(()),
        }
    }
}

/// A pool's `refresh` as the API document states it: one shape per grant, with what that
/// grant needs required (the checks of `RefreshPublic::check` for a pool). Documentation only:
/// the body is read as [`RefreshInput`].
pub struct PoolRefreshInput;

#[cfg(feature = "schema")]
impl utoipa::PartialSchema for PoolRefreshInput {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let common = serde_json::json!({
            "token_url": {"type": "string", "pattern": "^https?://", "maxLength": 2048,
                "description": "The OAuth2 token endpoint (`http://` or `https://`)."},
            "client_id": {"type": "string", "description": "The OAuth2 client id."},
            "client_secret": {"type": "string", "format": "password",
                "description": "The OAuth2 client secret: sealed at rest, never answered (only its fingerprint)."},
            "scope": {"type": "string", "description": "The `scope` asked for at the token endpoint."},
            "client_auth": {"type": "string", "enum": ["basic", "body"],
                "description": "How the client authenticates at the token endpoint (default `basic`)."},
        });
        let shape = |kinds: &[&str], required: &[&str], what: &str| {
            let mut props = common.clone();
            props["kind"] =
                serde_json::json!({"type": "string", "enum": kinds, "description": what});
            serde_json::json!({
                "type": "object",
                "additionalProperties": false,
                "required": required,
                "properties": props,
            })
        };
        let schema = serde_json::json!({
            "description": "Default refresh settings of the pool's tokens (a token's own `refresh` takes what it leaves out from here).",
            "oneOf": [
                shape(&["oauth2_refresh_token"], &["kind", "token_url"],
                    "Refresh-token grant: each token brings its own refresh token."),
                shape(&["oauth2_client_credentials"], &["kind", "token_url", "client_id", "client_secret"],
                    "Client-credentials grant."),
                shape(&["external", "none"], &["kind"],
                    "External login workers, or no refresh."),
            ],
        });
        serde_json::from_value(schema).expect("a valid schema")
    }
}

#[cfg(feature = "schema")]
impl utoipa::ToSchema for PoolRefreshInput {}

/// A pool's default refresh settings, as stored and shown: the public part, and the client
/// secret's fingerprint. The secret itself is sealed in the pool's config record and never
/// answered.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct PoolRefresh {
    #[serde(flatten)]
    pub settings: RefreshPublic,
    /// The `sha256:` fingerprint of the pool's client secret (the secret is never answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_fingerprint: Option<String>,
    #[serde(skip)]
    #[cfg_attr(feature = "schema", schema(ignore))]
    pub client_secret: Option<crate::crypto::Sealed>,
}

impl PoolRefresh {
    /// Validate a pool's `refresh` and seal its client secret.
    pub fn seal(input: RefreshInput, cipher: &Cipher, pool: &str) -> Result<Self, VaultError> {
        let Some(kind) = input.kind else {
            return Err(invalid("a pool's refresh needs its kind"));
        };
        if input.refresh_token.is_some() {
            return Err(invalid(
                "a pool's refresh cannot hold a refresh_token: each token brings its own",
            ));
        }
        let settings = input.public(kind);
        // Tokens bring their refresh tokens: only what the pool must supply is checked here.
        settings.check(input.client_secret.is_some(), true)?;
        Ok(PoolRefresh {
            settings,
            client_secret_fingerprint: input.client_secret.as_ref().map(Secret::fingerprint),
            client_secret: input
                .client_secret
                .as_ref()
                .map(|s| cipher.seal_secret(pool, crate::crypto::POOL_REFRESH_AAD_ID, s)),
        })
    }

    /// What a stored record (`json`, `sealed`) becomes under the current master key: `None`
    /// when it is current. A record from before pool secrets were sealed (the client secret in
    /// the JSON) is sealed now.
    pub fn resealed(
        json: &str,
        sealed: &crate::crypto::Sealed,
        cipher: &Cipher,
        pool: &str,
    ) -> Result<Option<PoolRefresh>, VaultError> {
        let legacy = serde_json::from_str::<serde_json::Value>(json)
            .ok()
            .filter(|v| v.get("client_secret").is_some());
        if let Some(v) = legacy {
            let input = serde_json::from_value::<RefreshInput>(v).map_err(|_| {
                VaultError::Crypto(format!("pool {pool}: its refresh settings do not decode"))
            })?;
            return PoolRefresh::seal(input, cipher, pool).map(Some);
        }
        if sealed.data.is_empty() || sealed.key_id == cipher.current_key_id() {
            return Ok(None);
        }
        let settings: PoolRefresh = serde_json::from_str(json).map_err(|_| {
            VaultError::Crypto(format!("pool {pool}: its refresh settings do not decode"))
        })?;
        let plain = cipher.open(pool, crate::crypto::POOL_REFRESH_AAD_ID, sealed)?;
        Ok(Some(PoolRefresh {
            client_secret: Some(cipher.seal(pool, crate::crypto::POOL_REFRESH_AAD_ID, &plain)),
            ..settings
        }))
    }

    /// The pool's client secret, unsealed for a refresh.
    pub fn open_client_secret(
        &self,
        cipher: &Cipher,
        pool: &str,
    ) -> Result<Option<Secret>, VaultError> {
        self.client_secret
            .as_ref()
            .map(|s| cipher.open_secret(pool, crate::crypto::POOL_REFRESH_AAD_ID, s))
            .transpose()
    }
}

impl RefreshInput {
    pub fn public(&self, kind: RefreshKind) -> RefreshPublic {
        RefreshPublic {
            kind,
            token_url: self.token_url.clone(),
            client_id: self.client_id.clone(),
            scope: self.scope.clone(),
            client_auth: self.client_auth,
            inherits_pool: false,
        }
    }

    /// What a token is refreshed with: its own settings, and what it leaves out from its pool's
    /// when it uses the same grant (or names none). Checked as a whole; returns the kind and
    /// the token's own public settings, marked when they inherit.
    pub fn for_token(
        own: Option<&RefreshInput>,
        pool: Option<&PoolRefresh>,
    ) -> Result<RefreshPublic, VaultError> {
        let pool_kind = pool.map(|p| p.settings.kind);
        let kind = match (own.and_then(|r| r.kind), pool_kind) {
            (Some(k), _) => k,
            (None, Some(k)) => k,
            (None, None) if own.is_some() => {
                // Valid against another pool: a conflict with this pool's settings.
                return Err(VaultError::Conflict(
                    "refresh.kind is required: the pool has no refresh settings to inherit".into(),
                ));
            }
            (None, None) => RefreshKind::None,
        };
        let mut public = match own {
            Some(r) => r.public(kind),
            None => RefreshPublic {
                kind,
                ..Default::default()
            },
        };
        let (mut client_secret, refresh_token) = (
            own.is_some_and(|r| r.client_secret.is_some()),
            own.is_some_and(|r| r.refresh_token.is_some()),
        );
        let effective = match pool {
            Some(p) if p.settings.kind == kind && kind != RefreshKind::None => {
                public.inherits_pool = true;
                client_secret |= p.client_secret.is_some();
                public.clone().over(&p.settings)
            }
            _ => public.clone(),
        };
        effective.check(client_secret, refresh_token)?;
        Ok(public)
    }

    /// The secret part, as JSON to seal (None when there is nothing secret).
    pub fn secret_json(&self) -> Option<Secret> {
        if self.refresh_token.is_none() && self.client_secret.is_none() {
            return None;
        }
        let s = RefreshSecrets {
            refresh_token: self.refresh_token.as_ref().map(|s| s.expose().to_string()),
            client_secret: self.client_secret.as_ref().map(|s| s.expose().to_string()),
        };
        Some(Secret::new(
            serde_json::to_string(&s).expect("refresh secrets serialize"),
        ))
    }
}
