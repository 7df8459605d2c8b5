//! RFC 6749 §4.4: a new access token for the client itself.

use vault_core::model::RefreshPublic;
use vault_core::refresh::RefreshSecrets;

use super::{Provider, RefreshError};

pub struct ClientCredentials;

impl Provider for ClientCredentials {
    fn form(
        &self,
        settings: &RefreshPublic,
        secrets: &RefreshSecrets,
    ) -> Result<Vec<(&'static str, String)>, RefreshError> {
        if settings.client_id.is_none() || secrets.client_secret.is_none() {
            return Err(RefreshError::Permanent(
                "client_credentials needs client_id and client_secret".into(),
            ));
        }
        Ok(vec![("grant_type", "client_credentials".into())])
    }
}
