//! Abuse limits: for each bound, one client misbehaves and is refused or cut off while another
//! client keeps being served normally.
//!
//! Waits are bounded at 30 s only to turn a hang into a failure; nothing asserts how fast
//! anything happens.

mod common;

use std::num::NonZeroU32;
use std::time::Duration;

use bytes::Bytes;
use common::exposition::{scrape, scrape_until, value};
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kv_connect_server::{RateLimit, ServerLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on a hang.
const HANG: Duration = Duration::from_secs(30);

fn limits(
    tweak: impl FnOnce(&mut ServerLimits),
) -> impl FnOnce(&mut kv_connect_server::ServerConfig) {
    move |c| tweak(&mut c.limits)
}

/// A well-behaved client: a fresh metadata exchange, a write and a read of its own key.
async fn well_behaved(server: &TestServer, name: &str) {
    let kv = Kv::connect(Proto::H2c, server).await;
    let out = kv.write(&write_of(vec![set(&key(name), b"ok")])).await;
    assert_eq!(
        out.status,
        kv_proto::pb::AtomicWriteStatus::AwSuccess as i32
    );
    assert_eq!(kv.get(&key(name)).await.unwrap().value, b"ok");
}

/// Reads from `s` until the server closes it; everything read.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    tokio::time::timeout(HANG, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server did not close the connection");
    all
}

/// A persistent HTTP/1.1 connection (hyper's low-level client).
async fn h1_connection(
    server: &TestServer,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

async fn healthz_on(send: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>) -> StatusCode {
    let req = Request::get("/healthz")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    send.send_request(req).await.unwrap().status()
}

#[tokio::test]
async fn connections_over_the_limit_get_503_while_served_ones_go_on() {
    let server = TestServer::start_with(limits(|l| l.max_connections = 2)).await;
    let mut first = h1_connection(&server).await;
    let mut second = h1_connection(&server).await;
    assert_eq!(healthz_on(&mut first).await, StatusCode::OK);
    assert_eq!(healthz_on(&mut second).await, StatusCode::OK);

    // HTTP/1.1 over the limit: 503, Retry-After, then the server closes.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&read_until_closed(&mut s).await).to_lowercase();
    assert!(answer.starts_with("http/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");

    // HTTP/2 over the limit: 503 too.
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get(server.url("/healthz"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = h2.send_request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers().get("retry-after").unwrap(), "1");

    // The connections being served are unaffected.
    assert_eq!(healthz_on(&mut first).await, StatusCode::OK);
    assert_eq!(healthz_on(&mut second).await, StatusCode::OK);

    // Once one closes, a new client gets its slot.
    drop(second);
    tokio::time::timeout(HANG, async {
        loop {
            let mut s = TcpStream::connect(server.addr).await.unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let answer = read_until_closed(&mut s).await;
            if answer.starts_with(b"HTTP/1.1 200") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a freed slot was never given to a new connection");
    assert_eq!(healthz_on(&mut first).await, StatusCode::OK);
    let text = scrape(&server).await;
    assert!(
        value(
            &text,
            "kv_limit_refusals_total",
            &[("limit", "connections")]
        ) >= 2.0
    );
}

#[tokio::test]
async fn watch_streams_over_the_per_token_bound_get_429_other_tokens_go_on() {
    let server = TestServer::start_with(limits(|l| l.max_watches_per_token = 2)).await;
    let greedy = Kv::connect(Proto::H2c, &server).await;
    let mut open = Vec::new();
    for i in 0..2 {
        let res = greedy.start_watch(&[key(&format!("w{i}"))]).await;
        assert_eq!(res.status(), StatusCode::OK);
        open.push(res);
    }
    let refused = greedy.start_watch(&[key("w2")]).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    let body = refused.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("watch streams"),
        "{body:?}"
    );

    // Another client (its own token) watches, writes and reads normally.
    let other = Kv::connect(Proto::H2c, &server).await;
    let mut watch = other.start_watch(&[key("mine")]).await;
    assert_eq!(watch.status(), StatusCode::OK);
    assert!(watch.body_mut().frame().await.is_some());
    well_behaved(&server, "other").await;

    // Closing a stream gives its slot back.
    open.pop();
    tokio::time::timeout(HANG, async {
        loop {
            let res = greedy.start_watch(&[key("w3")]).await;
            if res.status() == StatusCode::OK {
                return;
            }
            assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a closed watch stream never freed its slot");
    let text = scrape(&server).await;
    assert!(value(&text, "kv_limit_refusals_total", &[("limit", "watches")]) >= 1.0);
}

#[tokio::test]
async fn requests_over_the_per_token_rate_get_429_with_retry_after_other_tokens_go_on() {
    let server = TestServer::start_with(limits(|l| {
        l.rate_per_token = Some(RateLimit {
            per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(5).unwrap(),
        })
    }))
    .await;
    let flooder = Kv::connect(Proto::Http1, &server).await;
    let read = kv_proto::pb::SnapshotRead::default();
    let mut admitted = 0;
    let refused = loop {
        let r = flooder
            .raw("snapshot_read", prost::Message::encode_to_vec(&read))
            .await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            break r;
        }
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        admitted += 1;
        assert!(admitted < 100, "the rate limit never refused a request");
    };
    assert!(admitted >= 5, "the burst admits 5 at once, got {admitted}");
    let after: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(after >= 1);
    assert!(
        refused.text().contains("Too many requests"),
        "{}",
        refused.text()
    );

    // Another client (its own token) is served normally.
    well_behaved(&server, "calm").await;
    let text = scrape(&server).await;
    assert!(value(&text, "kv_limit_refusals_total", &[("limit", "rate")]) >= 1.0);
    assert!(
        value(
            &text,
            "kv_http_requests_total",
            &[("route", "snapshot_read"), ("status", "429")]
        ) >= 1.0
    );
}

/// Writes `bytes` one at a time, 100 ms apart, until the server closes the connection or they
/// run out.
async fn trickle(mut w: tokio::net::tcp::OwnedWriteHalf, bytes: Vec<u8>) {
    for b in bytes {
        if w.write_all(&[b]).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then hold the connection open without sending more.
    std::future::pending::<()>().await;
}

#[tokio::test]
async fn clients_trickling_request_heads_are_cut_off() {
    let server = TestServer::start_with(limits(|l| {
        l.header_read_timeout = Duration::from_secs(1);
    }))
    .await;
    let long_head = {
        let mut h = b"POST /v2/snapshot_read HTTP/1.1\r\nhost: x\r\n".to_vec();
        h.extend(std::iter::repeat_n(b'x', 400));
        h
    };
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // An HTTP/1.1 head trickled from the start; an HTTP/2 preface trickled; a connection that
    // sends nothing; a keep-alive connection whose second head is trickled.
    let cases: [(&str, Vec<u8>, bool); 4] = [
        ("http/1.1 head", long_head.clone(), false),
        ("h2 preface", preface, false),
        ("silent", Vec::new(), false),
        ("second head", long_head, true),
    ];
    for (what, bytes, after_a_request) in cases {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        if after_a_request {
            s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{what}");
        }
        let (mut r, w) = s.into_split();
        let slow = tokio::spawn(trickle(w, bytes));
        // Meanwhile another client is served normally.
        well_behaved(&server, what).await;
        let cut = tokio::time::timeout(HANG, async {
            let mut buf = [0u8; 1024];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {} // e.g. a 408 answer before the close
                }
            }
        })
        .await;
        slow.abort();
        assert!(cut.is_ok(), "{what}: the slow client was never cut off");
    }
    let text = scrape(&server).await;
    assert!(
        value(
            &text,
            "kv_limit_refusals_total",
            &[("limit", "header_timeout")]
        ) >= 3.0
    );
}

#[tokio::test]
async fn clients_trickling_request_bodies_get_408() {
    let server = TestServer::start_with(limits(|l| {
        l.body_read_timeout = Duration::from_secs(1);
    }))
    .await;
    let slow = Kv::connect(Proto::Http1, &server).await;

    // HTTP/1.1: a declared body of 200 bytes, sent a byte at a time.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /v2/snapshot_read HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\nx-denokv-version: 3\r\nx-denokv-database-id: {}\r\ncontent-length: 200\r\n\r\n",
        slow.token, slow.database_id
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (mut r, w) = s.into_split();
    let trickler = tokio::spawn(trickle(w, vec![0u8; 200]));
    well_behaved(&server, "h1-neighbour").await;
    let mut answer = Vec::new();
    tokio::time::timeout(HANG, async {
        let mut buf = [0u8; 1024];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("no answer to the slow body");
    trickler.abort();
    assert!(
        answer.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // HTTP/2: a streamed body that stalls.
    let slow2 = Kv::connect(Proto::H2c, &server).await;
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::io::Error>>(1);
    let body = http_body_util::StreamBody::new(Box::pin(tokio_stream_from(rx)));
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::post(server.url("/v2/snapshot_read"))
        .header("authorization", format!("Bearer {}", slow2.token))
        .header("x-denokv-version", "3")
        .header("x-denokv-database-id", &slow2.database_id)
        .body(body)
        .unwrap();
    tx.send(Ok(hyper::body::Frame::data(Bytes::from_static(b"\x0a"))))
        .await
        .unwrap();
    let pending = tokio::spawn(h2.send_request(req));
    well_behaved(&server, "h2-neighbour").await;
    let res = tokio::time::timeout(HANG, pending)
        .await
        .expect("no answer to the stalled body")
        .unwrap()
        .unwrap();
    assert_eq!(res.status(), StatusCode::REQUEST_TIMEOUT);
    drop(tx);
    let text = scrape(&server).await;
    assert!(
        value(
            &text,
            "kv_limit_refusals_total",
            &[("limit", "body_timeout")]
        ) >= 2.0
    );
}

/// A stream of the frames sent into `rx`.
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

#[tokio::test]
async fn an_http2_client_that_stops_answering_pings_is_disconnected() {
    let server = TestServer::start_with(limits(|l| {
        l.http2_keepalive_interval = Duration::from_secs(1);
        l.http2_keepalive_timeout = Duration::from_secs(1);
    }))
    .await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    // Preface, empty SETTINGS, then HEADERS (END_STREAM | END_HEADERS) on stream 1 for
    // `GET /healthz` in HPACK: :method GET (0x82), :scheme http (0x86), :path literal.
    let mut frames = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frames.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let mut block = vec![0x82, 0x86, 0x44, 8];
    block.extend_from_slice(b"/healthz");
    frames.extend_from_slice(&[0, 0, block.len() as u8, 1, 0x05, 0, 0, 0, 1]);
    frames.extend_from_slice(&block);
    s.write_all(&frames).await.unwrap();
    // Never acknowledge anything (no SETTINGS ack, no PING ack): only read until closed.
    let (mut r, _w) = s.into_split();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    well_behaved(&server, "pinged-neighbour").await;
    tokio::time::timeout(HANG, reader)
        .await
        .expect("the unresponsive HTTP/2 client was never disconnected")
        .unwrap();
    // Only the scrape's own connection is left.
    scrape_until(&server, |t| value(t, "kv_connections_open", &[]) == 1.0).await;
}

#[tokio::test]
async fn the_binary_applies_the_limit_flags_and_their_environment_variables() {
    let p = spawn_with(
        &[
            "serve",
            "--engine",
            "memory",
            "--addr",
            "127.0.0.1:0",
            // The rate flags only have to parse here; the rate limit is tested above.
            "--rate-limit-per-token",
            "1",
            "--rate-limit-burst",
            "1000",
        ],
        &[("KV_CONNECT_MAX_WATCHES_PER_TOKEN", "1")],
    );
    let kv = Kv::at(Proto::H2c, p.addr).await;
    let first = kv.start_watch(&[key("a")]).await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = kv.start_watch(&[key("b")]).await;
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    drop(first);
    assert!(tokio::task::spawn_blocking(move || p.terminate())
        .await
        .unwrap()
        .success());
}

#[test]
fn help_lists_every_limit_and_metrics_flag_with_its_environment_variable() {
    let out = std::process::Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, env) in [
        ("--metrics-addr", "KV_CONNECT_METRICS_ADDR"),
        ("--max-connections", "KV_CONNECT_MAX_CONNECTIONS"),
        (
            "--max-watches-per-token",
            "KV_CONNECT_MAX_WATCHES_PER_TOKEN",
        ),
        ("--rate-limit-per-token", "KV_CONNECT_RATE_LIMIT"),
        ("--rate-limit-burst", "KV_CONNECT_RATE_LIMIT_BURST"),
        (
            "--header-read-timeout-secs",
            "KV_CONNECT_HEADER_READ_TIMEOUT",
        ),
        ("--body-read-timeout-secs", "KV_CONNECT_BODY_READ_TIMEOUT"),
        (
            "--http2-keepalive-interval-secs",
            "KV_CONNECT_HTTP2_KEEPALIVE_INTERVAL",
        ),
        (
            "--http2-keepalive-timeout-secs",
            "KV_CONNECT_HTTP2_KEEPALIVE_TIMEOUT",
        ),
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
        assert!(
            help.contains(&format!("env: {env}")),
            "--help lacks {env}:\n{help}"
        );
    }
}
