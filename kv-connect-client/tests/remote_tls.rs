//! KV Connect over TLS (rustls, ALPN `h2`/`http/1.1`) against the in-process server with a
//! self-signed certificate.

mod common;

use std::sync::Arc;
use std::time::Duration;

use kv_connect_client::{HttpVersionPolicy, Kv, KvError, RemoteConfig, RemoteDatabase};
use kv_connect_server::{KvConnectServer, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const TOKEN: &str = "tls-token";

struct TlsServer {
    port: u16,
    cert: CertificateDer<'static>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn tls_server() -> TlsServer {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let mut config = ServerConfig::new(TOKEN);
    config.tls = Some(kv_connect_server::tls::tls_config(vec![cert.clone()], key).unwrap());
    let bound = KvConnectServer::new(common::embedded_db().await, config)
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let port = bound.local_addr().port();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(bound.serve_with_shutdown(async move {
        let _ = rx.await;
    }));
    TlsServer {
        port,
        cert,
        _stop: tx,
    }
}

fn client_tls(cert: &CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_alpn() {
    for policy in [HttpVersionPolicy::Auto, HttpVersionPolicy::Http1Only] {
        let s = tls_server().await;
        let mut c = RemoteConfig::new(format!("https://localhost:{}", s.port), TOKEN);
        c.tls = Some(client_tls(&s.cert));
        c.http_version = policy;
        let kv = Kv::open_remote_with(c).await.unwrap();
        common::get_set_delete(&kv).await;
        common::watch_keys(&kv).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_certificate_is_rejected() {
    let s = tls_server().await;
    // The default configuration trusts the Mozilla roots only.
    let mut c = RemoteConfig::new(format!("https://localhost:{}", s.port), TOKEN);
    c.max_retries = Some(1);
    c.backoff.base = Duration::from_millis(10);
    let err = RemoteDatabase::open_with(c).await.unwrap_err();
    assert!(matches!(err, KvError::Transport(_)), "{err:?}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
}
