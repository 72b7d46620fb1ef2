//! Access-token checks and stateless data-path tokens.
//!
//! The metadata exchange is authenticated with the configured access token. It hands out a
//! data-path token `kvc1.<expiry ms>.<hex HMAC-SHA256(key, "kvc1.<expiry ms>")>`, where the key
//! is derived from the access token. Tokens are therefore stateless: they survive a server
//! restart (a 401 is fatal to Deno clients), every token stays valid until its own expiry even
//! after newer ones were issued, and changing the access token revokes them all. All secret
//! comparisons are constant-time.
//!
//! With scoped tokens ([`crate::tokens`]) or several databases, data-path tokens are
//! `kvc2.<id>.<expiry ms>.<hex HMAC-SHA256(key, "kvc2.<id>.<expiry ms>.<database>")>`: they name
//! the token they came from (`root` for the access token), so the server checks that token
//! against the current store on every request (a revocation cuts them off at once), and they
//! are bound to one database ([`crate::access`] holds that policy).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Prefix and version of the data-path token format.
const TOKEN_PREFIX: &str = "kvc1";

/// Prefix of data-path tokens that name the token they were issued for and the database.
pub const SCOPED_PREFIX: &str = "kvc2";

/// Tokens are still accepted this long after their expiry, to absorb clock skew and requests
/// that were sent just before it.
const EXPIRY_GRACE: Duration = Duration::from_secs(60);

/// Why a request is not authorized (HTTP 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("Missing authorization header: expected 'Authorization: Bearer <token>'.")]
    Missing,
    /// The header is not `Bearer <token>`.
    #[error("Malformed authorization header: expected 'Bearer <token>'.")]
    Malformed,
    /// The metadata exchange presented a wrong access token.
    #[error("Invalid access token.")]
    InvalidAccessToken,
    /// The data path presented a token this server did not issue (or issued under another
    /// access token).
    #[error(
        "Invalid data-path token: it was not issued by this server for the current access token."
    )]
    InvalidToken,
    /// The data-path token has expired.
    #[error("The data-path token has expired; exchange metadata again to get a new one.")]
    Expired,
    /// The scoped token a data-path token was issued for has been revoked.
    #[error("The token this data-path token was issued for has been revoked.")]
    Revoked,
    /// The scoped token has expired.
    #[error("The token has expired; ask the server's administrator for a new one.")]
    TokenExpired,
    /// The token belongs to another database (HTTP 403).
    #[error("{}", wrong_database(database.as_deref()))]
    WrongDatabase {
        /// The database asked for; `None` = the server as a whole (the admin API's database
        /// management), which needs a token for every database.
        database: Option<String>,
    },
    /// The token's scope does not allow the operation (HTTP 403).
    #[error("This token has scope '{scope}', which does not allow {what}; that needs a token with scope '{needed}' (or 'admin').")]
    Forbidden {
        /// The token's scope.
        scope: crate::tokens::Scope,
        /// The scope the operation needs.
        needed: crate::tokens::Scope,
        /// What was attempted, e.g. `atomic writes and enqueues`.
        what: &'static str,
    },
}

fn wrong_database(database: Option<&str>) -> String {
    match database {
        Some(db) => format!("This token is not valid for database {db:?}."),
        None => "This token belongs to one database; this needs a token for every database (or the access token).".to_string(),
    }
}

impl AuthError {
    /// Whether this is a refusal of a known caller (403) rather than a failed authentication
    /// (401).
    pub fn is_forbidden(&self) -> bool {
        matches!(
            self,
            AuthError::WrongDatabase { .. } | AuthError::Forbidden { .. }
        )
    }
}

/// Extracts the token of an `Authorization: Bearer <token>` header value (scheme
/// case-insensitive).
pub fn bearer_token(header: Option<&http::HeaderValue>) -> Result<&str, AuthError> {
    let value = header
        .ok_or(AuthError::Missing)?
        .to_str()
        .map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

/// Checks access tokens and issues and verifies data-path tokens.
pub struct TokenAuthority {
    access_token: Vec<u8>,
    key: [u8; 32],
    ttl: Duration,
}

impl std::fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthority")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl TokenAuthority {
    /// A token authority for `access_token`, issuing tokens valid for `ttl`.
    pub fn new(access_token: &str, ttl: Duration) -> Self {
        let key = hmac(
            access_token.as_bytes(),
            b"kv-connect-server: data-path token key v1",
        );
        TokenAuthority {
            access_token: access_token.as_bytes().to_vec(),
            key,
            ttl,
        }
    }

    /// Lifetime of issued tokens.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Derives 32 stable bytes from the access token for `purpose` (e.g. the default database id).
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        hmac(&self.key, purpose.as_bytes())
    }

    /// Constant-time comparison with the access token.
    pub fn is_access_token(&self, token: &str) -> bool {
        bool::from(token.as_bytes().ct_eq(&self.access_token))
    }

    /// Checks the access token of a metadata exchange.
    pub fn check_access_token(&self, token: &str) -> Result<(), AuthError> {
        if self.is_access_token(token) {
            Ok(())
        } else {
            Err(AuthError::InvalidAccessToken)
        }
    }

    /// Issues a data-path token at `now`; returns it with its expiry time.
    pub fn issue(&self, now: SystemTime) -> (String, SystemTime) {
        let expires = now + self.ttl;
        // Round down to whole milliseconds so the advertised expiry equals the token's.
        let expiry_ms = unix_ms(expires);
        let payload = format!("{TOKEN_PREFIX}.{expiry_ms}");
        let mac = hmac(&self.key, payload.as_bytes());
        (
            format!("{payload}.{}", hex::encode(mac)),
            UNIX_EPOCH + Duration::from_millis(expiry_ms),
        )
    }

    /// Issues a scoped data-path token `kvc2.<id>.<expiry ms>.<hex HMAC>` for the token named
    /// `id` (`root` = the access token) on `database` (`""` = the single database), expiring at
    /// `expires` (rounded down to milliseconds, which is returned).
    pub fn issue_scoped(
        &self,
        id: &str,
        database: &str,
        expires: SystemTime,
    ) -> (String, SystemTime) {
        let expiry_ms = unix_ms(expires);
        let payload = format!("{SCOPED_PREFIX}.{id}.{expiry_ms}");
        let mac = hmac(&self.key, format!("{payload}.{database}").as_bytes());
        (
            format!("{payload}.{}", hex::encode(mac)),
            UNIX_EPOCH + Duration::from_millis(expiry_ms),
        )
    }

    /// Verifies a `kvc2` token for `database` at `now` and returns the id it names.
    pub fn verify_scoped<'t>(
        &self,
        token: &'t str,
        database: &str,
        now: SystemTime,
    ) -> Result<&'t str, AuthError> {
        let (payload, mac_hex) = token.rsplit_once('.').ok_or(AuthError::InvalidToken)?;
        let rest = payload
            .strip_prefix(SCOPED_PREFIX)
            .and_then(|r| r.strip_prefix('.'))
            .ok_or(AuthError::InvalidToken)?;
        let (id, expiry) = rest.split_once('.').ok_or(AuthError::InvalidToken)?;
        let expiry_ms = expiry.parse::<u64>().map_err(|_| AuthError::InvalidToken)?;
        let mac = hex::decode(mac_hex).map_err(|_| AuthError::InvalidToken)?;
        let expected = hmac(&self.key, format!("{payload}.{database}").as_bytes());
        if !bool::from(mac.as_slice().ct_eq(&expected)) {
            return Err(AuthError::InvalidToken);
        }
        if now > UNIX_EPOCH + Duration::from_millis(expiry_ms) + EXPIRY_GRACE {
            return Err(AuthError::Expired);
        }
        Ok(id)
    }

    /// Verifies a data-path token at `now`. The access token itself is accepted too (it is what
    /// the reference server hands out, and whoever has it can mint tokens anyway).
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<(), AuthError> {
        if self.is_access_token(token) {
            return Ok(());
        }
        let (payload, mac_hex) = token.rsplit_once('.').ok_or(AuthError::InvalidToken)?;
        let expiry_ms = payload
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|r| r.strip_prefix('.'))
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or(AuthError::InvalidToken)?;
        let mac = hex::decode(mac_hex).map_err(|_| AuthError::InvalidToken)?;
        let expected = hmac(&self.key, payload.as_bytes());
        if !bool::from(mac.as_slice().ct_eq(&expected)) {
            return Err(AuthError::InvalidToken);
        }
        let expires = UNIX_EPOCH + Duration::from_millis(expiry_ms) + EXPIRY_GRACE;
        if now > expires {
            return Err(AuthError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_until_expiry_and_survive_restart() {
        let now = SystemTime::now();
        let a = TokenAuthority::new("secret", Duration::from_secs(3600));
        let (t1, exp1) = a.issue(now);
        let (t2, _) = a.issue(now + Duration::from_secs(60));
        assert!(exp1 > now + Duration::from_secs(3599));
        // A "restarted" authority with the same access token accepts both.
        let b = TokenAuthority::new("secret", Duration::from_secs(3600));
        assert_eq!(b.verify(&t1, now + Duration::from_secs(120)), Ok(()));
        assert_eq!(b.verify(&t2, now + Duration::from_secs(120)), Ok(()));
        assert_eq!(
            b.verify(&t1, now + Duration::from_secs(3600 + 61)),
            Err(AuthError::Expired)
        );
        // Another access token rejects them.
        let c = TokenAuthority::new("other", Duration::from_secs(3600));
        assert_eq!(c.verify(&t1, now), Err(AuthError::InvalidToken));
    }

    #[test]
    fn tampered_tokens_fail() {
        let now = SystemTime::now();
        let a = TokenAuthority::new("secret", Duration::from_secs(10));
        let (t, _) = a.issue(now);
        let parts: Vec<&str> = t.split('.').collect();
        let later: u64 = parts[1].parse::<u64>().unwrap() + 1_000_000;
        let forged = format!("kvc1.{later}.{}", parts[2]);
        assert_eq!(a.verify(&forged, now), Err(AuthError::InvalidToken));
        for bad in ["", "kvc1", "kvc1.1.zz", "kvc1.x.00", "nope.1.00", "secretx"] {
            assert_eq!(a.verify(bad, now), Err(AuthError::InvalidToken), "{bad}");
        }
        assert_eq!(a.verify("secret", now), Ok(()));
    }

    #[test]
    fn bearer_parsing() {
        let h = |s: &str| http::HeaderValue::from_str(s).unwrap();
        assert_eq!(bearer_token(Some(&h("Bearer abc"))), Ok("abc"));
        assert_eq!(bearer_token(Some(&h("bearer  abc "))), Ok("abc"));
        assert_eq!(bearer_token(None), Err(AuthError::Missing));
        assert_eq!(
            bearer_token(Some(&h("Basic abc"))),
            Err(AuthError::Malformed)
        );
        assert_eq!(bearer_token(Some(&h("Bearer"))), Err(AuthError::Malformed));
        assert_eq!(bearer_token(Some(&h("Bearer "))), Err(AuthError::Malformed));
    }
}
