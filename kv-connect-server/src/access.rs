//! Who may do what: the access token, scoped tokens and the data-path tokens handed out for
//! them. The router asks here before any handler runs.
//!
//! # Contract
//!
//! - The access token (`--access-token`) is an `admin` token for every database.
//! - A scoped token ([`crate::tokens`]) is accepted for its own database (or every database if
//!   it has none), until it expires or is revoked; a token of another database gets 403.
//! - The metadata exchange accepts any scope and hands out a data-path token: in
//!   single-database mode for the access token the stateless `kvc1` token of before
//!   ([`crate::auth`]), otherwise a `kvc2` token bound to the database and naming the scoped
//!   token (or `root`), expiring with the token if that is sooner than the token lifetime.
//! - On the data path a `kvc2` token is checked against the current token store on every
//!   request: revoking or expiring its token cuts it off (401) at once. The access token itself
//!   and scoped tokens themselves are accepted too (what the reference server hands out).
//! - Each route needs a scope (`Route::needed_scope` in the router): reads and watch `read`; atomic writes (and
//!   so enqueues) `write`; dequeue and finish `queue`; the admin API `admin`. A token whose
//!   scope lacks it gets 403 with a message naming both scopes.
//! - A `/watch` stream opened with a scoped token (or its data-path token) ends (at its next
//!   frame or keep-alive) once that token is revoked or expires ([`Access::still_valid`]); the
//!   client then re-exchanges metadata and gets the 401.
//! - How the clients show refusals (tested in `tests/real_clients_multidb.rs`): Deno 2.9.6
//!   reports a metadata-exchange refusal as `Could not open Deno KV database: the metadata
//!   endpoint at URL responded with status 401 Unauthorized: <message>`; on the data path it
//!   refreshes the metadata and retries once on 401/403, then reports `KV Connect failed to
//!   call 'URL' (status=403 Forbidden): <message>` (or the refresh's own 401). `@deno/kv`
//!   reports every non-200 as `Unexpected response status: <status> <message>`. Both treat 4xx
//!   as final and retry 5xx, so every refusal here is a 4xx.

use std::sync::Arc;
use std::time::SystemTime;

use crate::auth::{AuthError, TokenAuthority, SCOPED_PREFIX};
use crate::registry::DbName;
use crate::tokens::{token_id, Scope, TokenRecord, TokenStore};

/// Id named by data-path tokens issued for the access token.
const ROOT_ID: &str = "root";

/// Who is calling, as established from a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    /// The scoped token, or `None` for the access token.
    pub token: Option<TokenRecord>,
    /// What it may do.
    pub scope: Scope,
}

/// The server's authorization policy (see the module contract).
pub(crate) struct Access {
    authority: TokenAuthority,
    store: Option<Arc<TokenStore>>,
}

impl Access {
    /// The policy for `authority` and, if scoped tokens are configured, `store`.
    pub fn new(authority: TokenAuthority, store: Option<Arc<TokenStore>>) -> Access {
        Access { authority, store }
    }

    /// Whether `token` is the server's access token (the admin credential of every database).
    pub fn is_access_token(&self, token: &str) -> bool {
        self.authority.is_access_token(token)
    }

    /// The token store, if any.
    pub fn store(&self) -> Option<&Arc<TokenStore>> {
        self.store.as_ref()
    }

    /// The scoped token `token` (a `kvt_` secret), checked for `database` at `now`.
    fn scoped(
        &self,
        token: &str,
        database: Option<&DbName>,
        now: SystemTime,
    ) -> Result<Grant, AuthError> {
        let record = self
            .store
            .as_ref()
            .and_then(|s| s.find(token))
            .ok_or(AuthError::InvalidAccessToken)?;
        check_record(&record, database, now)?;
        Ok(Grant {
            scope: record.scope,
            token: Some(record),
        })
    }

    /// Authenticates the credential of a metadata exchange or an admin request: the access
    /// token or a scoped token valid for `database` (`None` = the single database, or the
    /// server as a whole for the admin API).
    pub fn credential(
        &self,
        token: &str,
        database: Option<&DbName>,
        now: SystemTime,
    ) -> Result<Grant, AuthError> {
        if self.authority.is_access_token(token) {
            return Ok(Grant {
                token: None,
                scope: Scope::Admin,
            });
        }
        if token_id(token).is_some() {
            return self.scoped(token, database, now);
        }
        Err(AuthError::InvalidAccessToken)
    }

    /// The data-path token handed out for `grant` on `database` at `now`, and its expiry.
    pub fn issue(
        &self,
        grant: &Grant,
        database: Option<&DbName>,
        now: SystemTime,
    ) -> (String, SystemTime) {
        match (&grant.token, database) {
            (None, None) => self.authority.issue(now),
            (token, _) => {
                let mut expires = now + self.authority.ttl();
                let id = match token {
                    Some(record) => {
                        if let Some(ms) = record.expires_at_ms {
                            let own = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
                            expires = expires.min(own);
                        }
                        record.id.as_str()
                    }
                    None => ROOT_ID,
                };
                self.authority
                    .issue_scoped(id, database.map_or("", DbName::as_str), expires)
            }
        }
    }

    /// For a scoped token, or a data-path token issued for one: a check that stays `true`
    /// while that token exists and has not expired (long-lived responses end when it turns
    /// `false`). `None` for every other credential (nothing to re-check).
    pub fn still_valid(
        self: &Arc<Self>,
        token: &str,
    ) -> Option<impl Fn() -> bool + Send + Sync + 'static> {
        let id = named_token_id(token)?.to_string();
        let access = self.clone();
        Some(move || {
            access
                .store
                .as_ref()
                .and_then(|s| s.by_id(&id))
                .is_some_and(|r| !r.expired(SystemTime::now()))
        })
    }

    /// Authorizes a data-path request on `database` that needs `needed` (see the contract).
    pub fn data_path(
        &self,
        token: &str,
        database: Option<&DbName>,
        needed: Scope,
        now: SystemTime,
    ) -> Result<Scope, AuthError> {
        let scope = if self.authority.is_access_token(token) {
            Scope::Admin
        } else if token.starts_with(SCOPED_PREFIX) {
            let id =
                self.authority
                    .verify_scoped(token, database.map_or("", DbName::as_str), now)?;
            if id == ROOT_ID {
                Scope::Admin
            } else {
                let record = self
                    .store
                    .as_ref()
                    .and_then(|s| s.by_id(id))
                    .ok_or(AuthError::Revoked)?;
                check_record(&record, database, now)?;
                record.scope
            }
        } else if token_id(token).is_some() {
            self.scoped(token, database, now)?.scope
        } else if database.is_none() {
            // The stateless tokens of single-database mode.
            self.authority.verify(token, now)?;
            Scope::Admin
        } else {
            return Err(AuthError::InvalidToken);
        };
        require(scope, needed)?;
        Ok(scope)
    }
}

/// The id of the scoped token behind `token`: a `kvt_<id>_<secret>` token itself, or a `kvc2`
/// data-path token issued for one (not for the access token). Unverified: callers use it only
/// for requests the router has already authorized.
pub(crate) fn named_token_id(token: &str) -> Option<&str> {
    if let Some(id) = token_id(token) {
        return Some(id);
    }
    let rest = token.strip_prefix(SCOPED_PREFIX)?.strip_prefix('.')?;
    let (id, _) = rest.split_once('.')?;
    (id != ROOT_ID).then_some(id)
}

/// Refuses `scope` if it does not allow `needed` (403).
pub(crate) fn require(scope: Scope, needed: Scope) -> Result<(), AuthError> {
    if scope.allows(needed) {
        Ok(())
    } else {
        Err(AuthError::Forbidden {
            scope,
            needed,
            what: match needed {
                Scope::Read => "reads and watch",
                Scope::Write => "atomic writes and enqueues",
                Scope::Queue => "dequeuing and finishing queue messages",
                Scope::Admin => "managing databases and tokens",
            },
        })
    }
}

fn check_record(
    record: &TokenRecord,
    database: Option<&DbName>,
    now: SystemTime,
) -> Result<(), AuthError> {
    if record.expired(now) {
        return Err(AuthError::TokenExpired);
    }
    if !record.covers(database.map(DbName::as_str)) {
        return Err(AuthError::WrongDatabase {
            database: database.map(|d| d.to_string()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::NewToken;
    use std::time::Duration;

    #[test]
    fn named_token_ids_for_per_token_limits() {
        let authority = TokenAuthority::new("access", Duration::from_secs(600));
        let now = SystemTime::now() + Duration::from_secs(600);
        let (a, _) = authority.issue_scoped("0123456789abcdef", "app", now);
        let (b, _) =
            authority.issue_scoped("0123456789abcdef", "app", now + Duration::from_secs(1));
        assert_ne!(a, b);
        assert_eq!(named_token_id(&a), Some("0123456789abcdef"));
        assert_eq!(named_token_id(&b), Some("0123456789abcdef"));
        let secret = format!("kvt_0123456789abcdef_{}", "0".repeat(64));
        assert_eq!(named_token_id(&secret), Some("0123456789abcdef"));
        let (root, _) = authority.issue_scoped(ROOT_ID, "app", now);
        assert_eq!(named_token_id(&root), None);
        let (session, _) = authority.issue(SystemTime::now());
        assert_eq!(named_token_id(&session), None);
        assert_eq!(named_token_id("access"), None);
    }

    fn setup() -> (Access, Arc<TokenStore>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "kv-access-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let store = Arc::new(TokenStore::new(dir.join("tokens.json")));
        let access = Access::new(
            TokenAuthority::new("root-secret", Duration::from_secs(3600)),
            Some(store.clone()),
        );
        (access, store, dir)
    }

    #[test]
    fn scoped_data_path_tokens_follow_the_store() {
        let (access, store, dir) = setup();
        let now = SystemTime::now();
        let app = DbName::parse("app").unwrap();
        let other = DbName::parse("other").unwrap();
        let (secret, _) = store
            .create(
                NewToken {
                    name: "reader".into(),
                    scope: Scope::Read,
                    database: Some("app".into()),
                    expires_at: Some(now + Duration::from_secs(600)),
                },
                now,
            )
            .unwrap();
        let grant = access.credential(&secret, Some(&app), now).unwrap();
        assert_eq!(grant.scope, Scope::Read);
        assert!(matches!(
            access.credential(&secret, Some(&other), now),
            Err(AuthError::WrongDatabase { .. })
        ));
        let (dp, expires) = access.issue(&grant, Some(&app), now);
        // The token's own expiry caps the data-path token's.
        assert!(expires <= now + Duration::from_secs(600));
        assert_eq!(
            access.data_path(&dp, Some(&app), Scope::Read, now),
            Ok(Scope::Read)
        );
        assert!(matches!(
            access.data_path(&dp, Some(&app), Scope::Write, now),
            Err(AuthError::Forbidden { .. })
        ));
        // Bound to its database.
        assert_eq!(
            access.data_path(&dp, Some(&other), Scope::Read, now),
            Err(AuthError::InvalidToken)
        );
        // Expiry of the scoped token.
        assert_eq!(
            access.data_path(&dp, Some(&app), Scope::Read, now + Duration::from_secs(601)),
            Err(AuthError::TokenExpired)
        );
        // Revocation cuts off the data-path token at once.
        store.revoke("reader", None).unwrap();
        assert_eq!(
            access.data_path(&dp, Some(&app), Scope::Read, now),
            Err(AuthError::Revoked)
        );
        assert_eq!(
            access.credential(&secret, Some(&app), now),
            Err(AuthError::InvalidAccessToken)
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_access_token_is_admin_everywhere() {
        let (access, _store, dir) = setup();
        let now = SystemTime::now();
        let app = DbName::parse("app").unwrap();
        let grant = access.credential("root-secret", Some(&app), now).unwrap();
        assert_eq!(grant.scope, Scope::Admin);
        let (dp, _) = access.issue(&grant, Some(&app), now);
        assert!(dp.starts_with("kvc2.root."));
        assert_eq!(
            access.data_path(&dp, Some(&app), Scope::Queue, now),
            Ok(Scope::Admin)
        );
        // Single-database mode keeps the stateless kvc1 tokens.
        let (single, _) = access.issue(&grant, None, now);
        assert!(single.starts_with("kvc1."));
        assert_eq!(
            access.data_path(&single, None, Scope::Write, now),
            Ok(Scope::Admin)
        );
        assert_eq!(
            access.data_path(&single, Some(&app), Scope::Read, now),
            Err(AuthError::InvalidToken)
        );
        assert_eq!(
            access.credential("nope", None, now),
            Err(AuthError::InvalidAccessToken)
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
