//! RFC 6749 §6: refreshing an access token with a refresh token.

use vault_core::model::RefreshPublic;
use vault_core::refresh::RefreshSecrets;

use super::{Provider, RefreshError};

pub struct RefreshTokenGrant;

impl Provider for RefreshTokenGrant {
    fn form(
        &self,
        _: &RefreshPublic,
        secrets: &RefreshSecrets,
    ) -> Result<Vec<(&'static str, String)>, RefreshError> {
        let rt = secrets.refresh_token.clone().ok_or_else(|| {
            RefreshError::Permanent("no refresh_token stored for this token".into())
        })?;
        Ok(vec![
            ("grant_type", "refresh_token".into()),
            ("refresh_token", rt),
        ])
    }
}
