//! The same scenarios as the embedded tests, through `RemoteDatabase` against the in-process
//! KV Connect server (`kv-connect-server`) over a memory database, over HTTP/2 (h2c) and
//! HTTP/1.1.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use kv_connect_client::{
    key, Error, HttpVersionPolicy, Kv, KvError, RemoteConfig, RemoteDatabase, Value,
};
use kv_connect_server::{KvConnectServer, ServerConfig};
use kv_traits::Database;

const TOKEN: &str = "remote-test-token";

/// A server on 127.0.0.1:0 over a fresh memory database; stops when the sender is dropped.
struct Server {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn server() -> Server {
    common::init_tracing();
    let db = common::embedded_db().await;
    let bound = KvConnectServer::new(db, ServerConfig::new(TOKEN))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = bound.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = bound
            .serve_with_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    Server { addr, _stop: tx }
}

fn config(s: &Server, http: HttpVersionPolicy) -> RemoteConfig {
    let mut c = RemoteConfig::new(format!("http://{}", s.addr), TOKEN);
    c.http_version = http;
    c
}

async fn remote(s: &Server) -> Kv {
    Kv::open_remote(format!("http://{}", s.addr), TOKEN)
        .await
        .unwrap()
}

async fn remote_http1(s: &Server) -> Kv {
    Kv::open_remote_with(config(s, HttpVersionPolicy::Http1Only))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_and_protocol() {
    let s = server().await;
    let db = RemoteDatabase::open(format!("http://{}", s.addr), TOKEN)
        .await
        .unwrap();
    assert_eq!(db.protocol_version(), 3);
    assert_eq!(db.database_id().len(), 36);
    db.refresh_metadata().await.unwrap();

    // A wrong token is a client error at open.
    let err = RemoteDatabase::open(format!("http://{}", s.addr), "wrong")
        .await
        .unwrap_err();
    assert!(
        matches!(err, KvError::Remote { status: 401, .. }),
        "{err:?}"
    );
    assert!(err.is_client_error());
    // A wrong path too (404), and it is not retried.
    let err = RemoteDatabase::open(format!("http://{}/nope", s.addr), TOKEN)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            KvError::Remote {
                status: 404 | 405,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_set_delete() {
    let s = server().await;
    common::get_set_delete(&remote(&s).await).await;
    common::get_set_delete(&remote_http1(&s).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_with_expiry() {
    let s = server().await;
    common::set_with_expiry(&remote(&s).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_selectors() {
    let s = server().await;
    common::list_selectors(&remote(&s).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_paging_and_cursors() {
    let s = server().await;
    common::list_paging_and_cursors(&remote(&s).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_requests_match_deno() {
    let s = server().await;
    let db = RemoteDatabase::open(format!("http://{}", s.addr), TOKEN)
        .await
        .unwrap();
    common::list_requests_match_deno(common::Recording::new(db)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_checks() {
    let s = server().await;
    common::atomic_checks(&remote(&s).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_sum_min_max() {
    let s = server().await;
    common::atomic_sum_min_max(&remote(&s).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_keys() {
    let s = server().await;
    common::watch_keys(&remote(&s).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_keys_http1() {
    let s = server().await;
    common::watch_keys(&remote_http1(&s).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_and_remote_share_data() {
    // The remote client sees what an embedded client of the same database wrote, and back.
    let db = common::embedded_db().await;
    let local = Kv::from_database(db.clone());
    let bound = KvConnectServer::new(db, ServerConfig::new(TOKEN))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = bound.local_addr();
    let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(bound.serve_with_shutdown(async move {
        let _ = rx.await;
    }));
    let remote = Kv::open_remote(format!("http://{addr}"), TOKEN)
        .await
        .unwrap();
    let vs = local.set(&key!["shared"], "from local").await.unwrap();
    let got = remote.get(&key!["shared"]).await.unwrap();
    assert_eq!(got.value, Some(Value::from("from local")));
    assert_eq!(got.versionstamp, Some(vs));
    remote.set(&key!["shared"], 2.5).await.unwrap();
    assert_eq!(
        local.get(&key!["shared"]).await.unwrap().value,
        Some(Value::Number(2.5))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues() {
    let s = server().await;
    let db = RemoteDatabase::open(format!("http://{}", s.addr), TOKEN)
        .await
        .unwrap();
    let kv = Kv::from_database(db.clone());
    if db.supports_queues() {
        common::queue_listener(&kv).await;
        // Finishing an unknown lease is LeaseNotFound (409).
        let bogus = kv_traits::QueueLease {
            id: [7; 16],
            deadline_ms: 1,
        };
        assert_eq!(db.finish(bogus, true).await, Err(KvError::LeaseNotFound));
        common::queue_listener_stops_on_close(kv).await;
    } else {
        // Without the extension, queue calls fail at once with a clear client error.
        let err = db.dequeue(Duration::from_millis(10)).await.unwrap_err();
        assert!(err.is_client_error());
        assert!(
            err.to_string().contains("does not support remote queues"),
            "{err}"
        );
        let r = tokio::time::timeout(
            Duration::from_secs(30),
            kv.listen_queue(|_d| async { Ok::<(), String>(()) }),
        )
        .await
        .expect("listen_queue must not hang");
        assert!(
            matches!(r, Err(Error::Kv(KvError::InvalidRequest(_)))),
            "{r:?}"
        );
        // Enqueue still works (the server stores the message).
        kv.enqueue("stored", Default::default()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_concurrent_listener() {
    let s = server().await;
    let db = RemoteDatabase::open(format!("http://{}", s.addr), TOKEN)
        .await
        .unwrap();
    if db.supports_queues() {
        common::queue_concurrent_listener(&Kv::from_database(db)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_remote_database() {
    let s = server().await;
    let kv = remote(&s).await;
    kv.close().await.unwrap();
    assert_eq!(
        kv.get(&key!["x"]).await.unwrap_err(),
        Error::Kv(KvError::Closed)
    );
}
