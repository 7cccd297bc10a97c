//! Credentials and tokens of the simulated account: which `client_id`/`client_secret` pairs are
//! accepted, and the access and refresh tokens issued for them. Secrets are compared, never
//! logged or returned.

use std::collections::HashMap;

/// Issued tokens live as long as the exchange (Deribit says `expires_in: 31536000`).
pub(crate) const TOKEN_LIFETIME_SECS: u64 = 31_536_000;

/// Tokens kept; the oldest are forgotten past this so a reconnect loop cannot grow memory.
const MAX_TOKENS: usize = 10_000;

/// Accepted credentials and issued tokens.
#[derive(Debug)]
pub(crate) struct AuthState {
    credentials: HashMap<String, String>,
    access: HashMap<String, String>,
    refresh: HashMap<String, String>,
    issued: std::collections::VecDeque<(String, String)>,
    rng: fastrand::Rng,
}

/// A fresh token pair for a client.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
}

impl AuthState {
    /// No credentials registered (any pair is accepted until one is added).
    pub fn new(rng: fastrand::Rng) -> Self {
        Self {
            credentials: HashMap::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            issued: std::collections::VecDeque::new(),
            rng,
        }
    }

    /// Registers an accepted pair. Once any is registered, only registered pairs are accepted.
    pub fn add_credentials(&mut self, client_id: &str, client_secret: &str) {
        self.credentials
            .insert(client_id.to_owned(), client_secret.to_owned());
    }

    /// Whether the pair is accepted.
    pub fn check(&self, client_id: &str, client_secret: &str) -> bool {
        if client_id.is_empty() || client_secret.is_empty() {
            return false;
        }
        if self.credentials.is_empty() {
            return true;
        }
        self.credentials
            .get(client_id)
            .is_some_and(|secret| secret == client_secret)
    }

    /// Issues a new token pair for `client_id`.
    pub fn issue(&mut self, client_id: &str, now_ms: i64) -> Tokens {
        let access_token = self.token(now_ms);
        let refresh_token = self.token(now_ms);
        self.access
            .insert(access_token.clone(), client_id.to_owned());
        self.refresh
            .insert(refresh_token.clone(), client_id.to_owned());
        self.issued
            .push_back((access_token.clone(), refresh_token.clone()));
        while self.issued.len() > MAX_TOKENS {
            if let Some((access, refresh)) = self.issued.pop_front() {
                self.access.remove(&access);
                self.refresh.remove(&refresh);
            }
        }
        Tokens {
            access_token,
            refresh_token,
        }
    }

    /// Exchanges a refresh token for a new pair (the old refresh token is spent).
    pub fn refresh(&mut self, refresh_token: &str, now_ms: i64) -> Option<(String, Tokens)> {
        let client_id = self.refresh.remove(refresh_token)?;
        let tokens = self.issue(&client_id, now_ms);
        Some((client_id, tokens))
    }

    /// The client an access token was issued to.
    pub fn client_for(&self, access_token: &str) -> Option<String> {
        self.access.get(access_token).cloned()
    }

    /// Forgets an access token (`private/logout {invalidate_token: true}`).
    pub fn invalidate(&mut self, access_token: &str) {
        self.access.remove(access_token);
    }

    fn token(&mut self, now_ms: i64) -> String {
        let random: String = (0..24).map(|_| self.rng.alphanumeric()).collect();
        format!("{now_ms}.{random}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_pair_is_accepted_until_credentials_are_added() {
        let mut auth = AuthState::new(fastrand::Rng::with_seed(1));
        assert!(auth.check("anyone", "anything"));
        assert!(!auth.check("", "anything"));
        auth.add_credentials("bot", "s3cret");
        assert!(auth.check("bot", "s3cret"));
        assert!(!auth.check("bot", "wrong"));
        assert!(!auth.check("anyone", "anything"));
    }

    #[test]
    fn refresh_token_gives_new_pair_once() {
        let mut auth = AuthState::new(fastrand::Rng::with_seed(1));
        let tokens = auth.issue("bot", 1);
        assert_eq!(
            auth.client_for(&tokens.access_token).as_deref(),
            Some("bot")
        );
        let (client, fresh) = auth.refresh(&tokens.refresh_token, 2).unwrap();
        assert_eq!(client, "bot");
        assert_ne!(fresh.access_token, tokens.access_token);
        assert!(auth.refresh(&tokens.refresh_token, 3).is_none());
    }
}
