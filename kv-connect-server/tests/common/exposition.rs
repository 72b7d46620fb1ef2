//! Reading the server's `/metrics` exposition (OpenMetrics text) in tests.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;

use super::{send, Proto, TestServer, TOKEN};

/// The value of the sample `name{labels...}` (every given label must match; others may be
/// present), if the exposition has one.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels.iter().all(|(k, v)| {
                label_text
                    .split(',')
                    .any(|pair| pair == format!("{k}=\"{v}\""))
            });
            all.then(|| value.parse().ok()).flatten()
        })
}

/// Like [`sample`], 0 when absent (a counter that never moved has no series yet).
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or(0.0)
}

/// `GET /metrics` on the main port with the access token; the exposition text.
pub async fn scrape(server: &TestServer) -> String {
    scrape_at(server.addr).await
}

/// `GET /metrics` with the access token on the main port at `addr` (e.g. a spawned binary).
pub async fn scrape_at(addr: SocketAddr) -> String {
    let req = Request::get(format!("http://{addr}/metrics"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = send(Proto::Http1, req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let text = r.text();
    assert!(text.ends_with("# EOF\n"), "{text}");
    text
}

/// `GET /metrics` on the unauthenticated metrics listener at `addr`.
pub async fn scrape_listener(addr: SocketAddr) -> String {
    let req = Request::get(format!("http://{addr}/metrics"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = send(Proto::Http1, req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.text()
}

/// Scrapes until `check` holds (fails the test after 30 s, a bound on a hang only); returns
/// the exposition that satisfied it.
pub async fn scrape_until(server: &TestServer, check: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = scrape(server).await;
        if check(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within 30 s; last scrape:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
