//! TLS settings from PEM files, with ALPN `h2` and `http/1.1`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

/// Why TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is unreadable or not PEM.
    #[error("cannot read certificates from {}: {source}", path.display())]
    Cert {
        /// File.
        path: PathBuf,
        /// Cause.
        source: pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("cannot read certificates from {}: no certificate found", path.display())]
    NoCert {
        /// File.
        path: PathBuf,
    },
    /// The key file is unreadable or holds no private key.
    #[error("cannot read the private key from {}: {source}", path.display())]
    Key {
        /// File.
        path: PathBuf,
        /// Cause.
        source: pem::Error,
    },
    /// rustls rejected the certificate/key pair.
    #[error("invalid TLS certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds a rustls server configuration from a PEM certificate chain and a PEM private key
/// (PKCS#8, PKCS#1 or SEC1), advertising ALPN `h2` then `http/1.1`.
pub fn load_tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_err = |source: pem::Error| TlsError::Cert {
        path: cert.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(cert_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(cert_err)?;
    if certs.is_empty() {
        return Err(TlsError::NoCert {
            path: cert.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.to_path_buf(),
        source,
    })?;
    tls_config(certs, key)
}

/// Builds a rustls server configuration from DER certificates and key (ring provider), with
/// ALPN `h2` then `http/1.1`.
pub fn tls_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
