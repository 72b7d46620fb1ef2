//! Transport: HTTP/1.1 and h2c on one port, TLS with ALPN h2 / http/1.1, concurrency, garbage.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kv_proto::pb;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

#[tokio::test]
async fn one_port_speaks_http1_and_h2c() {
    let server = TestServer::start().await;
    let h1 = Kv::connect(Proto::Http1, &server).await;
    let h2 = Kv::connect(Proto::H2c, &server).await;
    assert_eq!(
        h1.write(&write_of(vec![set(&key("x"), b"1")])).await.status,
        1
    );
    assert_eq!(h2.get(&key("x")).await.unwrap().value, b"1");
    let r = h2
        .raw("snapshot_read", pb::SnapshotRead::default().encode_to_vec())
        .await;
    assert_eq!(r.version, http::Version::HTTP_2);
    let r = h1
        .raw("snapshot_read", pb::SnapshotRead::default().encode_to_vec())
        .await;
    assert_eq!(r.version, http::Version::HTTP_11);
}

#[tokio::test]
async fn many_concurrent_writes_over_h2_get_distinct_increasing_versionstamps() {
    let server = TestServer::start().await;
    let kv = Arc::new(Kv::connect(Proto::H2c, &server).await);
    let mut tasks = vec![];
    for i in 0..50u8 {
        let kv = kv.clone();
        tasks.push(tokio::spawn(async move {
            kv.write(&write_of(vec![set(&key(&format!("c{i}")), &[i])]))
                .await
        }));
    }
    let mut stamps = vec![];
    for t in tasks {
        let out = t.await.unwrap();
        assert_eq!(out.status, 1);
        stamps.push(out.versionstamp);
    }
    stamps.sort();
    stamps.dedup();
    assert_eq!(stamps.len(), 50);
}

#[tokio::test]
async fn garbage_on_the_socket_does_not_hurt_the_server() {
    let server = TestServer::start().await;
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"\x00\x01\x02 this is not http\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
    drop(s);
    // A half-sent h2 preface, then hang up.
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    drop(s);
    let kv = Kv::connect(Proto::H2c, &server).await;
    assert!(kv.get(&key("g")).await.is_none());
}

struct Tls {
    server: TestServer,
    connector: tokio_rustls::TlsConnector,
}

async fn tls_server(alpn: &[&[u8]]) -> Tls {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = ck.cert.pem();
    let key_pem = ck.signing_key.serialize_pem();
    // Load through the PEM path the binary uses.
    let dir = std::env::temp_dir().join(format!(
        "kvcs-tls-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &key_pem).unwrap();
    let config =
        kv_connect_server::tls::load_tls_config(&dir.join("cert.pem"), &dir.join("key.pem"))
            .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let server = TestServer::start_with(|c| c.tls = Some(config)).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Tls {
        server,
        connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
    }
}

async fn tls_metadata(t: &Tls, h2: bool) -> (StatusCode, String, Option<Vec<u8>>) {
    let tcp = tokio::net::TcpStream::connect(t.server.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = t.connector.connect(name, tcp).await.unwrap();
    let alpn = stream.get_ref().1.alpn_protocol().map(|p| p.to_vec());
    let req = http::Request::post(format!("https://localhost:{}/", t.server.addr.port()))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("host", format!("localhost:{}", t.server.addr.port()))
        .body(Full::new(Bytes::from_static(
            br#"{"supportedVersions":[1]}"#,
        )))
        .unwrap();
    let io = TokioIo::new(stream);
    let res = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    };
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), alpn)
}

#[tokio::test]
async fn tls_negotiates_h2_and_http11_by_alpn() {
    let t = tls_server(&[b"h2"]).await;
    let (status, body, alpn) = tls_metadata(&t, true).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(status, StatusCode::OK, "{body}");
    // v1 endpoints are absolute and use https behind TLS.
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json["endpoints"][0]["url"],
        format!("https://localhost:{}/v2", t.server.addr.port())
    );

    let t = tls_server(&[b"http/1.1"]).await;
    let (status, _, alpn) = tls_metadata(&t, false).await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn bad_tls_files_are_reported() {
    let dir = std::env::temp_dir().join(format!(
        "kvcs-badtls-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("empty.pem"), "").unwrap();
    let e = kv_connect_server::tls::load_tls_config(&dir.join("empty.pem"), &dir.join("empty.pem"))
        .unwrap_err();
    assert!(e.to_string().contains("empty.pem"), "{e}");
    let e =
        kv_connect_server::tls::load_tls_config(&dir.join("missing.pem"), &dir.join("empty.pem"))
            .unwrap_err();
    assert!(e.to_string().contains("missing.pem"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
