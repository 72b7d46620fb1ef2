//! `kv-connect-server healthcheck`: a container health probe that needs no other program (the
//! runtime image has no shell and no curl).
//!
//! Contract: one plain-HTTP/1.1 `GET /healthz` to `--addr` (default `KV_CONNECT_ADDR`, the
//! address the server listens on; an unspecified address such as `0.0.0.0` or `[::]` means
//! this host's loopback), bounded by `--timeout-secs` as a whole. Status 200 prints the body on
//! stdout and succeeds; anything else (no connection, another status, a timeout) is a
//! [`HealthcheckError`] that names the address, so the binary exits non-zero.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use clap::Args;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// Options of `healthcheck`.
#[derive(Args, Debug, Clone)]
pub(crate) struct HealthcheckArgs {
    /// The server's address (`0.0.0.0` / `[::]` mean this host's loopback).
    #[arg(long, env = "KV_CONNECT_ADDR", default_value = "127.0.0.1:4512")]
    pub addr: SocketAddr,
    /// Seconds to wait for the whole exchange.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_secs: u64,
}

/// Why the server is not healthy (or could not be asked).
#[derive(Debug, thiserror::Error)]
pub(crate) enum HealthcheckError {
    #[error("healthcheck: cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("healthcheck: GET http://{addr}/healthz failed: {source}")]
    Http {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("healthcheck: GET http://{addr}/healthz answered {status}: {body}")]
    Status {
        addr: SocketAddr,
        status: http::StatusCode,
        body: String,
    },
    #[error("healthcheck: cannot build the request: {0}")]
    Request(#[source] http::Error),
    #[error("healthcheck: no answer from {addr} within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
}

/// The address to probe for a listening address (unspecified means loopback).
pub(crate) fn probe_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Probes the server; its `/healthz` body on success.
async fn probe(addr: SocketAddr) -> Result<String, HealthcheckError> {
    let http = |source| HealthcheckError::Http { addr, source };
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| HealthcheckError::Connect { addr, source })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let driver = tokio::spawn(conn);
    let request = http::Request::get("/healthz")
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<bytes::Bytes>::new())
        .map_err(HealthcheckError::Request)?;
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(http)?;
    driver.abort();
    let body = String::from_utf8_lossy(&body.to_bytes()).into_owned();
    if status != http::StatusCode::OK {
        return Err(HealthcheckError::Status { addr, status, body });
    }
    Ok(body)
}

/// Runs `healthcheck`.
pub(crate) async fn run(args: &HealthcheckArgs) -> Result<(), HealthcheckError> {
    let addr = probe_addr(args.addr);
    let timeout = Duration::from_secs(args.timeout_secs);
    let body = tokio::time::timeout(timeout, probe(addr))
        .await
        .map_err(|_| HealthcheckError::Timeout { addr, timeout })??;
    print!("{body}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_probe_the_loopback() {
        let p = |s: &str| probe_addr(s.parse().unwrap()).to_string();
        assert_eq!(p("0.0.0.0:4512"), "127.0.0.1:4512");
        assert_eq!(p("[::]:4512"), "[::1]:4512");
        assert_eq!(p("10.1.2.3:80"), "10.1.2.3:80");
    }
}
