//! Scoped tokens: the scope each route needs, tokens bound to their database, revocation and
//! expiry taking effect on a running server (also for data-path tokens already handed out),
//! only hashes on disk, the admin API's own authorization, and tokens in single-database mode.
//!
//! The server binary runs on a fresh data directory; requests are raw HTTP, so every status
//! and message is checked as the clients receive it (`real_clients_multidb.rs` runs Deno and
//! `@deno/kv` against the same refusals).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::multidb::{cli, connect, exchange, DirServer};
use common::{client, key, set, spawn, write_of, Kv, Proto, TOKEN};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use kv_proto::{pb, queue_pb};
use prost::Message;

/// The status of a data-path call, without reading the body (watch answers stream forever).
async fn status_of(kv: &Kv, method: &str, body: Vec<u8>) -> (StatusCode, String) {
    let req = Request::post(format!("{}/{method}", kv.base))
        .header("authorization", format!("Bearer {}", kv.token))
        .header("x-denokv-version", "3")
        .header("x-denokv-database-id", &kv.database_id)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let res = client(Proto::Http1).request(req).await.unwrap();
    let status = res.status();
    let text = if status == StatusCode::OK {
        String::new()
    } else {
        use http_body_util::BodyExt;
        let body = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    };
    (status, text)
}

/// Builds a request body.
type BodyFn = fn() -> Vec<u8>;

fn read_body() -> Vec<u8> {
    pb::SnapshotRead {
        ranges: vec![pb::ReadRange {
            start: key("a"),
            end: key("b"),
            limit: 10,
            reverse: false,
        }],
    }
    .encode_to_vec()
}

fn write_body() -> Vec<u8> {
    write_of(vec![set(&key("k"), b"v")]).encode_to_vec()
}

fn watch_body() -> Vec<u8> {
    pb::Watch {
        keys: vec![pb::WatchKey { key: key("k") }],
    }
    .encode_to_vec()
}

fn dequeue_body() -> Vec<u8> {
    queue_pb::DequeueRequest { wait_ms: 0 }.encode_to_vec()
}

fn finish_body() -> Vec<u8> {
    queue_pb::FinishRequest {
        lease: vec![7; 24],
        success: true,
    }
    .encode_to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_route_needs_its_scope() {
    let server = DirServer::start("scopes", &[]);
    server.create_db("app").await;
    let url = server.url("/db/app");
    let routes: [(&str, BodyFn); 5] = [
        ("snapshot_read", read_body),
        ("atomic_write", write_body),
        ("watch", watch_body),
        ("queue/dequeue", dequeue_body),
        ("queue/finish", finish_body),
    ];
    // Expected status per route, in the order above (finish of an unknown lease is a 409).
    let table: [(&str, [u16; 5]); 4] = [
        ("read", [200, 403, 200, 403, 403]),
        ("write", [200, 200, 200, 403, 403]),
        ("queue", [403, 403, 403, 200, 409]),
        ("admin", [200, 200, 200, 200, 409]),
    ];
    for (scope, expected) in table {
        let (secret, _) = server
            .create_token(&format!("t-{scope}"), scope, Some("app"))
            .await;
        let kv = connect(&url, &secret).await;
        assert!(kv.token.starts_with("kvc2."), "{}", kv.token);
        for ((route, body), want) in routes.iter().zip(expected) {
            let (status, text) = status_of(&kv, route, body()).await;
            assert_eq!(status.as_u16(), want, "scope {scope}, {route}: {text}");
            if want == 403 {
                assert!(
                    text.contains(&format!("scope '{scope}'")),
                    "scope {scope}, {route}: {text}"
                );
            }
        }
    }
    // The access token is admin everywhere.
    let kv = connect(&url, TOKEN).await;
    assert_eq!(status_of(&kv, "queue/dequeue", dequeue_body()).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_bound_to_their_database() {
    let server = DirServer::start("bound", &[]);
    server.create_db("app").await;
    server.create_db("other").await;
    let (app_token, _) = server.create_token("w", "write", Some("app")).await;
    let (everywhere, _) = server.create_token("all", "read", None).await;
    let r = exchange(&server.url("/db/other"), &app_token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert!(
        r.text().contains("not valid for database \"other\""),
        "{}",
        r.text()
    );
    // A data-path token of app does not open other.
    let mut kv = connect(&server.url("/db/app"), &app_token).await;
    let other = connect(&server.url("/db/other"), TOKEN).await;
    kv.base = other.base.clone();
    kv.database_id = other.database_id.clone();
    assert_eq!(status_of(&kv, "snapshot_read", read_body()).await.0, 401);
    // A token for every database works on each.
    for db in ["app", "other"] {
        let kv = connect(&server.url(&format!("/db/{db}")), &everywhere).await;
        assert_eq!(status_of(&kv, "snapshot_read", read_body()).await.0, 200);
    }
    let r = exchange(&server.url("/db/app"), "kvt_0000000000000000_nope").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn revocation_cuts_off_handed_out_tokens_without_a_restart() {
    let server = DirServer::start("revoke", &[]);
    server.create_db("app").await;
    let (secret, record) = server.create_token("reader", "read", Some("app")).await;
    let url = server.url("/db/app");
    let kv = connect(&url, &secret).await;
    assert_eq!(status_of(&kv, "snapshot_read", read_body()).await.0, 200);
    // Revoked by the CLI on the data directory, while the server runs: it re-reads the file.
    let data = server.data();
    let (ok, stdout, stderr) = cli(
        &[
            "token",
            "revoke",
            "reader",
            "--database",
            "app",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        TOKEN,
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains(record["id"].as_str().unwrap()), "{stdout}");
    let (status, text) = status_of(&kv, "snapshot_read", read_body()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(text.contains("revoked"), "{text}");
    assert_eq!(
        exchange(&url, &secret).await.status,
        StatusCode::UNAUTHORIZED
    );

    // The same through the admin API.
    let (secret, _) = server.create_token("reader2", "write", Some("app")).await;
    let kv = connect(&url, &secret).await;
    assert_eq!(status_of(&kv, "atomic_write", write_body()).await.0, 200);
    let r = server
        .admin(
            Method::DELETE,
            "/admin/tokens/reader2?database=app",
            TOKEN,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(status_of(&kv, "atomic_write", write_body()).await.0, 401);
    let r = server
        .admin(Method::DELETE, "/admin/tokens/reader2", TOKEN, None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_token_fails() {
    let server = DirServer::start("expiry", &[]);
    server.create_db("app").await;
    let data = server.data();
    let (ok, stdout, stderr) = cli(
        &[
            "token",
            "create",
            "--name",
            "brief",
            "--scope",
            "read",
            "--database",
            "app",
            "--expires-in",
            "1s",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        TOKEN,
    );
    assert!(ok, "{stderr}");
    let secret = stdout.trim().to_string();
    assert!(secret.starts_with("kvt_"), "{stdout}");
    // Whatever the machine's speed, it has expired after this.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = exchange(&server.url("/db/app"), &secret).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text().contains("expired"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn only_hashes_are_stored() {
    use sha2::Digest;
    let server = DirServer::start("hashes", &[]);
    server.create_db("app").await;
    let mut secrets = Vec::new();
    for scope in ["read", "write", "queue", "admin"] {
        secrets.push(server.create_token(scope, scope, Some("app")).await.0);
    }
    let on_disk = std::fs::read_to_string(server.data().join("tokens.json")).unwrap();
    let listed = server
        .admin(Method::GET, "/admin/tokens?database=app", TOKEN, None)
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    let listed: serde_json::Value = serde_json::from_slice(&listed.body).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 4);
    for secret in &secrets {
        let (_, secret_part) = secret.rsplit_once('_').unwrap();
        assert!(!on_disk.contains(secret_part), "a secret is on disk");
        assert!(!listed.to_string().contains(secret_part));
        let hash = hex::encode(sha2::Sha256::digest(secret.as_bytes()));
        assert!(on_disk.contains(&hash), "the hash of a token is missing");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_needs_admin_scope_where_it_acts() {
    let server = DirServer::start("adminscope", &[]);
    server.create_db("app").await;
    server.create_db("other").await;
    let (app_admin, _) = server.create_token("boss", "admin", Some("app")).await;
    let (writer, _) = server.create_token("w", "write", Some("app")).await;
    let token_body =
        |db: &str| Some(serde_json::json!({ "name": "made", "scope": "read", "database": db }));
    let r = server
        .admin(Method::POST, "/admin/tokens", &app_admin, token_body("app"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = server
        .admin(
            Method::POST,
            "/admin/tokens",
            &app_admin,
            token_body("other"),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    let r = server
        .admin(
            Method::POST,
            "/admin/databases",
            &app_admin,
            Some(serde_json::json!({ "name": "new" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert!(
        r.text().contains("needs a token for every database"),
        "{}",
        r.text()
    );
    let r = server
        .admin(Method::GET, "/admin/tokens?database=app", &writer, None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert!(r.text().contains("scope 'write'"), "{}", r.text());
    let r = server
        .admin(Method::GET, "/admin/databases", "nonsense", None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = server
        .admin(
            Method::POST,
            "/admin/tokens",
            TOKEN,
            Some(serde_json::json!({ "name": "x", "scope": "root", "database": "app" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let r = server
        .admin(Method::PUT, "/admin/databases", TOKEN, None)
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    // Deleting a database removes its tokens.
    let r = server
        .admin(Method::DELETE, "/admin/databases/app", &app_admin, None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let on_disk = std::fs::read_to_string(server.data().join("tokens.json")).unwrap();
    assert!(!on_disk.contains("\"app\""), "{on_disk}");
}

#[tokio::test(flavor = "multi_thread")]
async fn single_database_mode_keeps_its_tokens_beside_the_file() {
    let dir = common::multidb::fresh_dir("single-tokens");
    let path = dir.join("data.sqlite");
    let path_s = path.to_str().unwrap();
    let proc = spawn(&["--path", path_s, "--addr", "127.0.0.1:0"]);
    let url = format!("http://{}/", proc.addr);
    // Created directly beside the database file while the server runs.
    let (ok, stdout, stderr) = cli(
        &[
            "token", "create", "--name", "r", "--scope", "read", "--path", path_s,
        ],
        TOKEN,
    );
    assert!(ok, "{stderr}");
    assert!(dir.join("data.sqlite.tokens.json").exists());
    let kv = connect(&url, stdout.trim()).await;
    assert_eq!(status_of(&kv, "snapshot_read", read_body()).await.0, 200);
    assert_eq!(status_of(&kv, "atomic_write", write_body()).await.0, 403);
    // The access token's data-path tokens are the stateless ones of before.
    let root = connect(&url, TOKEN).await;
    assert!(root.token.starts_with("kvc1."));
    // And the admin API manages them.
    let (ok, stdout, stderr) = cli(&["token", "list", "--url", &url], TOKEN);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("\"r\""), "{stdout}");
    let (ok, _, stderr) = cli(&["token", "revoke", "r", "--url", &url], TOKEN);
    assert!(ok, "{stderr}");
    assert_eq!(status_of(&kv, "snapshot_read", read_body()).await.0, 401);
    tokio::task::spawn_blocking(move || assert!(proc.terminate().success()))
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_watch_stream_ends_when_its_token_is_revoked() {
    use http_body_util::BodyExt;
    let server = DirServer::start("watch-revoke", &[]);
    server.create_db("app").await;
    let (secret, _) = server.create_token("watcher", "read", Some("app")).await;
    let root_watch = connect(&server.url("/db/app"), TOKEN).await;
    let kv = connect(&server.url("/db/app"), &secret).await;
    let open = |kv: &Kv| {
        Request::post(format!("{}/watch", kv.base))
            .header("authorization", format!("Bearer {}", kv.token))
            .header("x-denokv-version", "3")
            .header("x-denokv-database-id", &kv.database_id)
            .body(Full::new(Bytes::from(watch_body())))
            .unwrap()
    };
    let mut scoped = client(Proto::Http1)
        .request(open(&kv))
        .await
        .unwrap()
        .into_body();
    let mut root = client(Proto::Http1)
        .request(open(&root_watch))
        .await
        .unwrap()
        .into_body();
    // Both streams deliver their first snapshot.
    assert!(scoped.frame().await.is_some());
    assert!(root.frame().await.is_some());
    let r = server
        .admin(
            Method::DELETE,
            "/admin/tokens/watcher?database=app",
            TOKEN,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // The scoped stream ends at its next keep-alive at the latest (bounded wait, no timing
    // assert); the access token's stream goes on.
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(frame) = scoped.frame().await {
            if frame.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the revoked token's watch stream did not end"
    );
    let more = tokio::time::timeout(Duration::from_secs(60), root.frame())
        .await
        .expect("the access token's stream keeps sending keep-alives");
    assert!(matches!(more, Some(Ok(_))));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_dequeue_ends_with_the_refusal_when_its_token_is_revoked() {
    let server = DirServer::start("dequeue-revoke", &[]);
    server.create_db("app").await;
    let (secret, _) = server.create_token("worker", "queue", Some("app")).await;
    let kv = connect(&server.url("/db/app"), &secret).await;
    // The longest poll: without the re-check it would answer an empty 200 after 30 s.
    let poll = tokio::spawn(async move {
        let body = queue_pb::DequeueRequest {
            wait_ms: kv_proto::MAX_DEQUEUE_WAIT_MS,
        };
        kv.raw("queue/dequeue", body.encode_to_vec()).await
    });
    // Give the poll time to start waiting (if the revocation came first, the answer is the
    // same refusal, from the router).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = server
        .admin(
            Method::DELETE,
            "/admin/tokens/worker?database=app",
            TOKEN,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let answer = poll.await.unwrap();
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text());
    assert!(answer.text().contains("revoked"), "{}", answer.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_opened_with_the_scoped_token_itself_ends_when_it_is_revoked() {
    use http_body_util::BodyExt;
    let server = DirServer::start("watch-revoke-raw", &[]);
    server.create_db("app").await;
    let (secret, _) = server.create_token("watcher", "read", Some("app")).await;
    // The scoped token itself on the data path (what the reference server hands out), not the
    // data-path token of the metadata exchange.
    let mut kv = connect(&server.url("/db/app"), &secret).await;
    kv.token = secret.clone();
    let req = Request::post(format!("{}/watch", kv.base))
        .header("authorization", format!("Bearer {}", kv.token))
        .header("x-denokv-version", "3")
        .header("x-denokv-database-id", &kv.database_id)
        .body(Full::new(Bytes::from(watch_body())))
        .unwrap();
    let res = client(Proto::Http1).request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut stream = res.into_body();
    assert!(stream.frame().await.is_some());
    let r = server
        .admin(
            Method::DELETE,
            "/admin/tokens/watcher?database=app",
            TOKEN,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(frame) = stream.frame().await {
            if frame.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the revoked token's watch stream did not end"
    );
}
