//! Where access tokens come from.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

/// The error a [`TokenProvider`] may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Gives the bearer token for Graph requests (`Authorization: Bearer …`).
///
/// It is asked once per request that needs a token (creating a draft or an upload
/// session), so an implementation can refresh tokens as they expire. The token is
/// sent only to the Graph base URL's host; requests to an uploadUrl never carry it.
#[async_trait]
pub trait TokenProvider: Send + Sync {
    /// The current access token, without the `Bearer ` prefix.
    async fn token(&self) -> Result<String, BoxError>;
}

/// A token that never changes: given on the command line or in the environment.
///
/// Its `Debug` output hides the token.
#[derive(Clone)]
pub struct StaticToken(String);

impl StaticToken {
    /// Wraps a token. A leading `Bearer ` is dropped.
    pub fn new(token: impl Into<String>) -> Self {
        let token = token.into();
        let token = match token.get(..7) {
            Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => token[7..].trim().to_owned(),
            _ => token.trim().to_owned(),
        };
        Self(token)
    }
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticToken(<redacted>)")
    }
}

/// The client's token provider, shared by its requests; its `Debug` output shows
/// no more than that there is one.
#[derive(Clone)]
pub(crate) struct SharedToken(pub(crate) Arc<dyn TokenProvider>);

impl fmt::Debug for SharedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[async_trait]
impl TokenProvider for StaticToken {
    async fn token(&self) -> Result<String, BoxError> {
        Ok(self.0.clone())
    }
}

#[cfg(test)]
#[allow(clippy::pedantic)] // test code favours brevity over pedantry
mod tests {
    use super::*;

    #[tokio::test]
    async fn static_token_drops_bearer_prefix_and_hides_itself() {
        assert_eq!(StaticToken::new("Bearer abc").token().await.unwrap(), "abc");
        assert_eq!(StaticToken::new("abc ").token().await.unwrap(), "abc");
        assert_eq!(
            format!("{:?}", StaticToken::new("abc")),
            "StaticToken(<redacted>)"
        );
    }
}
