//! Options of [`crate::PostgresBackend::connect`] and the parsing of the connection URL.
//!
//! The URL is a libpq connection URI (`postgres://user:password@host:port/dbname?param=value`)
//! or keyword string (`host=... user=... dbname=...`), as understood by tokio-postgres, plus two
//! parameters this crate handles itself:
//!
//! - `sslmode`: `disable` (plain TCP), `prefer` (the default: TLS when the server offers it,
//!   without certificate verification, as libpq does), `require` (TLS, without certificate
//!   verification, as libpq does), `verify-ca` (TLS, the certificate chain must lead to a trusted
//!   root) or `verify-full` (`verify-ca` and the certificate must name the host);
//! - `sslrootcert`: a PEM file of trusted root certificates for `verify-ca`/`verify-full`;
//!   without it the Mozilla roots (webpki-roots) are trusted.

use std::path::PathBuf;
use std::time::Duration;

use kv_traits::BackendError;

/// Options of a [`crate::PostgresBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// Maximum number of pooled connections of this process (default 16). Each open read or
    /// write transaction holds one.
    pub pool_size: usize,
    /// Limit on establishing one connection, TLS included (default 10 s); also the longest
    /// wait for a free pooled connection.
    pub connect_timeout: Duration,
    /// Server-side limit on each statement (`statement_timeout`, default 30 s; `None` = the
    /// server's setting). It also bounds how long `begin_write` waits for another process's
    /// write transaction.
    pub statement_timeout: Option<Duration>,
    /// The schema holding the tables (created if missing); `None` = the connection's current
    /// schema (normally `public`).
    pub schema: Option<String>,
    /// How long the ids that resolve unknown commit outcomes are kept (default 10 minutes).
    pub outcome_retention: Duration,
    /// Open read-only, e.g. a hot standby (a read replica) of the primary other processes
    /// write to (default `false`). Such a backend never writes and never `LISTEN`s (a standby
    /// allows neither): opening checks the store's format without creating or changing
    /// anything, waiting up to [`PostgresOptions::connect_timeout`] for a store that is not
    /// there yet (the primary may have created it a moment ago); `begin_write` fails.
    pub read_only: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            pool_size: 16,
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Some(Duration::from_secs(30)),
            schema: None,
            outcome_retention: Duration::from_secs(600),
            read_only: false,
        }
    }
}

/// The `sslmode` of the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A parsed connection URL.
pub(crate) struct ConnectSpec {
    pub config: tokio_postgres::Config,
    pub ssl: SslMode,
    pub root_cert: Option<PathBuf>,
}

impl ConnectSpec {
    /// Parses `url`; errors never quote the URL (it may hold a password).
    pub fn parse(url: &str, options: &PostgresOptions) -> Result<ConnectSpec, BackendError> {
        let (rest, params) = take_params(url, &["sslmode", "sslrootcert"]);
        let mut ssl = SslMode::Prefer;
        let mut root_cert = None;
        for (key, value) in params {
            match key.as_str() {
                "sslmode" => {
                    ssl = match value.as_str() {
                        "disable" => SslMode::Disable,
                        "prefer" | "allow" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(BackendError::Io(
                                format!(
                                    "invalid PostgreSQL URL: unknown sslmode {other:?} (expected \
                                 disable, prefer, require, verify-ca or verify-full)"
                                )
                                .into(),
                            ))
                        }
                    }
                }
                _ => root_cert = Some(PathBuf::from(value)),
            }
        }
        let mut config: tokio_postgres::Config = rest
            .parse()
            .map_err(|e| BackendError::Io(format!("invalid PostgreSQL URL: {e}").into()))?;
        if config.get_hosts().is_empty() {
            return Err(BackendError::Io(
                "invalid PostgreSQL URL: no host (expected postgres://user:password@host:port/dbname)"
                    .into(),
            ));
        }
        if config.get_user().is_none() {
            return Err(BackendError::Io(
                "invalid PostgreSQL URL: no user (expected postgres://user:password@host:port/dbname)"
                    .into(),
            ));
        }
        config.ssl_mode(match ssl {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        config.connect_timeout(options.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("kv-engine-postgres");
        }
        if let Some(t) = options.statement_timeout {
            let mut opts = config.get_options().unwrap_or("").to_string();
            if !opts.is_empty() {
                opts.push(' ');
            }
            opts.push_str(&format!("-c statement_timeout={}", t.as_millis().max(1)));
            config.options(&opts);
        }
        Ok(ConnectSpec {
            config,
            ssl,
            root_cert,
        })
    }

    /// `host:port database "db" user "user"`, for messages.
    pub fn target(&self) -> String {
        target(&self.config)
    }
}

/// Describes where `config` connects, without the password.
pub(crate) fn target(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = ports
                .get(i)
                .or_else(|| ports.first())
                .copied()
                .unwrap_or(5432);
            match h {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    format!(
        "{} (database {:?}, user {:?})",
        hosts.join(","),
        config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or_default(),
        config.get_user().unwrap_or_default()
    )
}

/// Removes the parameters named in `keys` from a URL's query string or a keyword string and
/// returns the rest of the string and the removed `(key, value)` pairs, in order.
fn take_params(url: &str, keys: &[&str]) -> (String, Vec<(String, String)>) {
    let mut taken = Vec::new();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_string(), taken);
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if keys.contains(&k) {
                taken.push((k.to_string(), percent_decode(v)));
            } else if !pair.is_empty() {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        (rest, taken)
    } else {
        let mut kept = Vec::new();
        for word in url.split_whitespace() {
            match word.split_once('=') {
                Some((k, v)) if keys.contains(&k) => taken.push((k.to_string(), v.to_string())),
                _ => kept.push(word),
            }
        }
        (kept.join(" "), taken)
    }
}

/// Decodes `%XX` escapes (invalid escapes are kept as they are).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_rootcert_are_taken_out_of_the_url() {
        let (rest, taken) = take_params(
            "postgres://u:p@h:5/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.pem",
            &["sslmode", "sslrootcert"],
        );
        assert_eq!(rest, "postgres://u:p@h:5/db?application_name=x");
        assert_eq!(
            taken,
            vec![
                ("sslmode".to_string(), "verify-full".to_string()),
                ("sslrootcert".to_string(), "/tmp/ca.pem".to_string())
            ]
        );
        let (rest, taken) = take_params("host=h user=u sslmode=disable", &["sslmode"]);
        assert_eq!(rest, "host=h user=u");
        assert_eq!(taken, vec![("sslmode".into(), "disable".into())]);
    }

    #[test]
    fn parse_sets_modes_and_never_quotes_the_password() {
        let o = PostgresOptions::default();
        let spec =
            ConnectSpec::parse("postgres://u:secret@h:5/db?sslmode=verify-full", &o).unwrap();
        assert_eq!(spec.ssl, SslMode::VerifyFull);
        assert_eq!(spec.target(), "h:5 (database \"db\", user \"u\")");
        let spec = ConnectSpec::parse("postgres://u:secret@h/db", &o).unwrap();
        assert_eq!(spec.ssl, SslMode::Prefer);
        assert_eq!(
            spec.config.get_options(),
            Some("-c statement_timeout=30000")
        );
        for bad in [
            "postgres://u:secret@h:notaport/db",
            "postgres://u:secret@h/db?sslmode=sometimes",
            "postgres://u:secret@h/db?bogus_option=1",
        ] {
            let err = ConnectSpec::parse(bad, &o).err().unwrap();
            let text = err.to_string();
            assert!(text.contains("invalid PostgreSQL URL"), "{text}");
            assert!(!text.contains("secret"), "{text}");
        }
    }
}
