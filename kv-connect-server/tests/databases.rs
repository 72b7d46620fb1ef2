//! Many databases per server (`--data-dir`): isolation (keys, versionstamps, watch, queues),
//! create and delete without a restart, name validation, the CLI on a data directory and
//! against a running server, per-database backups, and single-database mode left unchanged.
//!
//! Every test runs the server binary on a fresh data directory and reaches each database at
//! `/db/<name>` with the Rust client (`Kv::open_remote`, which resolves the advertised
//! endpoint like Deno and `@deno/kv`) or raw HTTP.

mod common;

use std::time::Duration;

use common::multidb::{cli, connect, exchange, has_files, DirServer};
use common::{key as wire_key, set, spawn, write_of, TOKEN};
use futures::StreamExt;
use http::{Method, StatusCode};
use kv_connect_client::{key, EnqueueOptions, Kv, Value};

/// The body of `GET url`.
async fn get_text(url: &str) -> String {
    let req = http::Request::get(url)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    common::send(common::Proto::Http1, req).await.text()
}

async fn open(server: &DirServer, name: &str) -> Kv {
    Kv::open_remote(server.url(&format!("/db/{name}")), TOKEN)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn databases_are_isolated() {
    let server = DirServer::start("isolated", &[]);
    let ia = server.create_db("app-a").await;
    let ib = server.create_db("app_b").await;
    assert_ne!(ia["database_id"], ib["database_id"]);
    let a = open(&server, "app-a").await;
    let b = open(&server, "app_b").await;
    // Each database advertises its own id and its own data path.
    let meta: serde_json::Value =
        serde_json::from_slice(&exchange(&server.url("/db/app-a"), TOKEN).await.body).unwrap();
    assert_eq!(meta["databaseId"], ia["database_id"]);
    assert_eq!(meta["endpoints"][0]["url"], "/db/app-a/v2");
    // Protocol 1 gets the absolute URL of the same endpoint.
    let auth = format!("Bearer {TOKEN}");
    let r = common::post(
        common::Proto::Http1,
        &server.url("/db/app-a"),
        &[("authorization", &auth)],
        r#"{"supportedVersions":[1]}"#,
    )
    .await;
    let v1: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v1["endpoints"][0]["url"], server.url("/db/app-a/v2"));

    // The same key holds different values.
    let k = key!["user", "alice"];
    a.set(&k, "in a").await.unwrap();
    let vb = b.set(&k, "in b").await.unwrap();
    assert_eq!(a.get(&k).await.unwrap().value, Some(Value::from("in a")));
    assert_eq!(b.get(&k).await.unwrap().value, Some(Value::from("in b")));

    // Separate versionstamps: b's write did not advance a's sequence, and b's first commit is
    // not ordered after a's three.
    let va1 = a.set(&key!["n"], 1).await.unwrap();
    let va2 = a.set(&key!["n"], 2).await.unwrap();
    assert!(va2 > va1);
    let vb2 = b.set(&key!["n"], 1).await.unwrap();
    assert!(vb2 > vb);
    assert_eq!(
        a.get(&key!["n"]).await.unwrap().versionstamp,
        Some(va2),
        "a's key kept a's versionstamp"
    );

    // Watch: a write to b never shows up on a's stream.
    let mut watch = a.watch(std::slice::from_ref(&k)).await.unwrap();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first[0].value, Some(Value::from("in a")));
    b.set(&k, "b again").await.unwrap();
    a.set(&k, "a again").await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("a's watch saw a's write")
        .unwrap()
        .unwrap();
    assert_eq!(next[0].value, Some(Value::from("a again")));
    drop(watch);

    // Queues: each database delivers only its own messages.
    a.enqueue("msg a", EnqueueOptions::default()).await.unwrap();
    b.enqueue("msg b", EnqueueOptions::default()).await.unwrap();
    for (kv, expected) in [(&a, "msg a"), (&b, "msg b")] {
        let msg = kv
            .database()
            .dequeue(Duration::from_secs(10))
            .await
            .unwrap()
            .expect("a message");
        let payload = Value::from(kv_traits::KvValue::V8(msg.payload.clone()));
        assert_eq!(
            format!("{payload:?}"),
            format!("{:?}", Value::from(expected))
        );
        kv.database().finish(msg.lease, true).await.unwrap();
        assert!(kv
            .database()
            .dequeue(Duration::from_millis(10))
            .await
            .unwrap()
            .is_none());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn create_and_delete_without_restart() {
    let server = DirServer::start("lifecycle", &[]);
    let before = server.create_db("temp").await;
    let kv = open(&server, "temp").await;
    kv.set(&key!["k"], "v").await.unwrap();
    assert!(server.data().join("databases/temp/data.sqlite").exists());
    let mut watch = kv.watch(&[key!["k"]]).await.unwrap();
    assert!(watch.next().await.unwrap().is_ok());

    // Delete while a watch stream is open: the stream ends, the files go, the name is unknown.
    let r = server
        .admin(Method::DELETE, "/admin/databases/temp", TOKEN, None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        // The client may reconnect once; it cannot get a value from a deleted database.
        loop {
            match watch.next().await {
                None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the watch stream did not end");
    assert!(!server.data().join("databases/temp").exists());
    let r = exchange(&server.url("/db/temp"), TOKEN).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    let r = server
        .admin(Method::DELETE, "/admin/databases/temp", TOKEN, None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Created again under the same name: empty, with a new id.
    let after = server.create_db("temp").await;
    assert_ne!(before["database_id"], after["database_id"]);
    let kv = open(&server, "temp").await;
    assert_eq!(kv.get(&key!["k"]).await.unwrap().value, None);

    let r = server
        .admin(Method::GET, "/admin/databases", TOKEN, None)
        .await;
    let list: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "temp");
    // A graceful stop closes the open databases.
    drop(kv);
    tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.stop();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_in_flight_data_path_client_of_a_deleted_database_fails_cleanly() {
    let server = DirServer::start("inflight", &[]);
    server.create_db("gone").await;
    let raw = connect(&server.url("/db/gone"), TOKEN).await;
    let write = write_of(vec![set(&wire_key("k"), b"v")]);
    assert_eq!(
        raw.write(&write).await.status,
        kv_proto::pb::AtomicWriteStatus::AwSuccess as i32
    );
    let r = server
        .admin(Method::DELETE, "/admin/databases/gone", TOKEN, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // A 4xx (clients do not retry it forever), not a 5xx.
    let r = raw
        .raw("atomic_write", prost::Message::encode_to_vec(&write))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    assert!(r.text().contains("does not exist"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn names_are_validated() {
    let server = DirServer::start("names", &[]);
    let long = "x".repeat(49);
    for bad in ["", "App", "-x", "../x", "a/b", "a.b", "a b", long.as_str()] {
        let r = server
            .admin(
                Method::POST,
                "/admin/databases",
                TOKEN,
                Some(serde_json::json!({ "name": bad })),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad:?}: {}", r.text());
        assert!(r.text().contains("Invalid database name"), "{}", r.text());
    }
    for path in ["/db/..%2f..%2fetc", "/db/A", "/db/a%20b/v2/snapshot_read"] {
        let r = exchange(&server.url(path), TOKEN).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.text());
    }
    // Nothing was created outside the databases directory.
    let entries: Vec<String> = std::fs::read_dir(server.data())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        entries
            .iter()
            .all(|e| e == ".server.lock" || e == "databases"),
        "{entries:?}"
    );
    server.create_db("ok").await;
    let r = server
        .admin(
            Method::POST,
            "/admin/databases",
            TOKEN,
            Some(serde_json::json!({ "name": "ok" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    let (ok, _, stderr) = cli(
        &["db", "create", "Bad/Name", "--url", &server.url("")],
        TOKEN,
    );
    assert!(!ok);
    assert!(stderr.contains("invalid database name"), "{stderr}");
    // `/` is not a database here, and says where the databases are.
    let r = exchange(&server.url("/"), TOKEN).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.text().contains("/db/<name>"), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_works_on_the_directory_and_through_the_server() {
    let dir = common::multidb::fresh_dir("cli");
    let data = dir.join("data");
    let data_s = data.to_str().unwrap();
    let (ok, stdout, stderr) = cli(&["db", "create", "first", "--data-dir", data_s], TOKEN);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("\"first\""), "{stdout}");
    let proc = spawn(&["--data-dir", data_s, "--addr", "127.0.0.1:0"]);
    let url = format!("http://{}", proc.addr);
    // Served without further ado.
    let kv = Kv::open_remote(format!("{url}/db/first"), TOKEN)
        .await
        .unwrap();
    kv.set(&key!["x"], 1).await.unwrap();
    // Database changes go through the running server.
    let (ok, _, stderr) = cli(&["db", "create", "second", "--data-dir", data_s], TOKEN);
    assert!(!ok);
    assert!(stderr.contains("a server is serving"), "{stderr}");
    let (ok, _, stderr) = cli(&["db", "create", "second", "--url", &url], TOKEN);
    assert!(ok, "{stderr}");
    let (ok, stdout, _) = cli(&["db", "list", "--url", &url], TOKEN);
    assert!(
        ok && stdout.contains("\"second\"") && stdout.contains("\"first\""),
        "{stdout}"
    );
    let (ok, _, stderr) = cli(&["db", "list", "--url", &url], "wrong-token");
    assert!(!ok);
    assert!(stderr.contains("401"), "{stderr}");
    let (ok, _, stderr) = cli(&["db", "delete", "first", "--url", &url], TOKEN);
    assert!(ok, "{stderr}");
    assert!(!data.join("databases/first").exists());
    drop(kv);
    tokio::task::spawn_blocking(move || assert!(proc.terminate().success()))
        .await
        .unwrap();
    // With the server gone, the directory is the CLI's.
    let (ok, _, stderr) = cli(&["db", "delete", "second", "--data-dir", data_s], TOKEN);
    assert!(ok, "{stderr}");
    let (ok, stdout, _) = cli(&["db", "list", "--data-dir", data_s], TOKEN);
    assert!(ok);
    assert_eq!(stdout.trim(), "[]");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_database_is_backed_up_under_its_own_prefix() {
    let backups = common::multidb::fresh_dir("backups");
    let server = DirServer::start("backup", &["--backup-to", backups.to_str().unwrap()]);
    server.create_db("one").await;
    server.create_db("two").await;
    let one = open(&server, "one").await;
    one.set(&key!["k"], "v").await.unwrap();
    // The backup ships within about a second; wait for it (bounded), without timing asserts.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !has_files(&backups.join("one")) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(has_files(&backups.join("one")), "nothing backed up for one");
    assert!(
        !has_files(&backups.join("two")),
        "two was never opened, so it has no backup yet"
    );
    let top: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(top, ["one"]);
    // `/healthz` reports each open database's backup.
    let health = get_text(&server.url("/healthz")).await;
    assert!(health.starts_with("ok\n"), "{health}");
    assert!(health.contains("one.backup_lag_ms: "), "{health}");
    assert!(!health.contains("two."), "{health}");
    drop(server);
    let _ = std::fs::remove_dir_all(backups);
}

#[tokio::test(flavor = "multi_thread")]
async fn single_database_mode_is_unchanged() {
    let dir = common::multidb::fresh_dir("single");
    let path = dir.join("data.sqlite");
    let proc = spawn(&["--path", path.to_str().unwrap(), "--addr", "127.0.0.1:0"]);
    let url = format!("http://{}", proc.addr);
    let r = exchange(&format!("{url}/"), TOKEN).await;
    assert_eq!(r.status, StatusCode::OK);
    let meta: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(meta["endpoints"][0]["url"], "/v2");
    assert!(meta["token"].as_str().unwrap().starts_with("kvc1."));
    let kv = Kv::open_remote(url.clone(), TOKEN).await.unwrap();
    kv.set(&key!["k"], "v").await.unwrap();
    assert_eq!(exchange(&format!("{url}/db/x"), TOKEN).await.status, 404);
    let (ok, _, stderr) = cli(&["db", "create", "x", "--url", &url], TOKEN);
    assert!(!ok);
    assert!(stderr.contains("single database"), "{stderr}");
    drop(kv);
    tokio::task::spawn_blocking(move || assert!(proc.terminate().success()))
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// Whether the PostgreSQL schema `schema` holds a store with key `k` (opening it creates an
/// empty store if the schema is gone).
async fn postgres_has_key(url: &str, schema: &str) -> bool {
    let options = kv_engine_postgres::PostgresOptions {
        schema: Some(schema.to_string()),
        ..Default::default()
    };
    let backend = kv_engine_postgres::PostgresBackend::connect(url, options)
        .await
        .unwrap();
    let db = kv_db::Db::open(backend, kv_db::DbConfig::default())
        .await
        .unwrap();
    let kv = Kv::from_database(db);
    let found = kv.get(&key!["k"]).await.unwrap().value.is_some();
    kv.close().await.unwrap();
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_databases_live_in_their_own_schemas() {
    let url = kv_test_support::postgres::test_url();
    let server = DirServer::start("postgres", &["--engine", "postgres", "--database-url", url]);
    let ia = server.create_db("pa").await;
    server.create_db("pb").await;
    let a = open(&server, "pa").await;
    let b = open(&server, "pb").await;
    a.set(&key!["k"], "a").await.unwrap();
    assert_eq!(b.get(&key!["k"]).await.unwrap().value, None);
    b.set(&key!["k"], "b").await.unwrap();
    assert_eq!(
        a.get(&key!["k"]).await.unwrap().value,
        Some(Value::from("a"))
    );
    let id = ia["database_id"].as_str().unwrap().replace('-', "");
    let schema = format!("kv_pa_{}", &id[..8]);
    assert!(
        postgres_has_key(url, &schema).await,
        "pa's data is in {schema}"
    );
    drop((a, b));
    let r = server
        .admin(Method::DELETE, "/admin/databases/pa", TOKEN, None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // The schema was dropped: opening it again finds an empty store.
    assert!(!postgres_has_key(url, &schema).await, "{schema} survived");

    // Deleted by the CLI on the directory (no server running): the schema goes too.
    let ic = server.create_db("pc").await;
    open(&server, "pc")
        .await
        .set(&key!["k"], "c")
        .await
        .unwrap();
    let id = ic["database_id"].as_str().unwrap().replace('-', "");
    let schema = format!("kv_pc_{}", &id[..8]);
    let data = server.data();
    let server = tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.stop();
        server
    })
    .await
    .unwrap();
    let (ok, _, stderr) = cli(
        &[
            "db",
            "delete",
            "pc",
            "--data-dir",
            data.to_str().unwrap(),
            "--database-url",
            url,
        ],
        TOKEN,
    );
    assert!(ok, "{stderr}");
    assert!(!postgres_has_key(url, &schema).await, "{schema} survived");
    drop(server);
}

/// An in-process provider: memory databases whose commits can be delayed.
struct MemoryProvider {
    faults: kv_test_support::backend::Faults,
    ids: std::sync::Mutex<std::collections::BTreeMap<String, uuid::Uuid>>,
}

impl MemoryProvider {
    fn info_of(name: &str, id: uuid::Uuid) -> kv_connect_server::registry::DatabaseInfo {
        kv_connect_server::registry::DatabaseInfo {
            name: name.to_string(),
            database_id: id,
            created_at_ms: 0,
            engine: "memory".into(),
        }
    }
}

impl kv_connect_server::DatabaseProvider<kv_db::Db> for MemoryProvider {
    fn list(
        &self,
    ) -> Result<
        Vec<kv_connect_server::registry::DatabaseInfo>,
        kv_connect_server::registry::RegistryError,
    > {
        let ids = self.ids.lock().unwrap();
        Ok(ids.iter().map(|(n, id)| Self::info_of(n, *id)).collect())
    }

    fn info(
        &self,
        name: &kv_connect_server::DbName,
    ) -> Result<
        Option<kv_connect_server::registry::DatabaseInfo>,
        kv_connect_server::registry::RegistryError,
    > {
        let ids = self.ids.lock().unwrap();
        Ok(ids
            .get(name.as_str())
            .map(|id| Self::info_of(name.as_str(), *id)))
    }

    fn create(
        &self,
        name: &kv_connect_server::DbName,
    ) -> futures::future::BoxFuture<
        '_,
        Result<
            kv_connect_server::registry::DatabaseInfo,
            kv_connect_server::registry::RegistryError,
        >,
    > {
        let id = uuid::Uuid::new_v4();
        self.ids.lock().unwrap().insert(name.to_string(), id);
        let info = Self::info_of(name.as_str(), id);
        Box::pin(async move { Ok(info) })
    }

    fn open<'a>(
        &'a self,
        name: &'a kv_connect_server::DbName,
    ) -> futures::future::BoxFuture<
        'a,
        Result<
            kv_connect_server::registry::OpenedDatabase<kv_db::Db>,
            kv_connect_server::registry::RegistryError,
        >,
    > {
        Box::pin(async move {
            let id = self.ids.lock().unwrap()[name.as_str()];
            let backend = kv_test_support::backend::FaultyBackend::with_faults(
                kv_engine_memory::MemoryBackend::new(),
                self.faults.clone(),
            );
            let db = kv_db::Db::open(backend, kv_db::DbConfig::default())
                .await
                .unwrap();
            Ok(kv_connect_server::registry::OpenedDatabase::new(db, id))
        })
    }

    fn destroy<'a>(
        &'a self,
        name: &'a kv_connect_server::DbName,
    ) -> futures::future::BoxFuture<'a, Result<(), kv_connect_server::registry::RegistryError>>
    {
        self.ids.lock().unwrap().remove(name.as_str());
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_database_lets_an_in_flight_write_finish() {
    let faults = kv_test_support::backend::Faults::new();
    let provider = MemoryProvider {
        faults: faults.clone(),
        ids: Default::default(),
    };
    let registry = kv_connect_server::Registry::new(provider, Duration::from_secs(30));
    let name = kv_connect_server::DbName::parse("busy").unwrap();
    registry.create(&name).await.unwrap();
    let server = kv_connect_server::KvConnectServer::with_registry(
        registry.clone(),
        kv_connect_server::ServerConfig::new(TOKEN),
    )
    .bind("127.0.0.1:0".parse().unwrap())
    .await
    .unwrap();
    let url = format!("http://{}/db/busy", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_with_shutdown(async move {
        let _ = stopped.await;
    }));
    let raw = connect(&url, TOKEN).await;
    let before = faults.calls().commit;
    faults.delay_commits(Duration::from_millis(500));
    let write =
        tokio::spawn(async move { raw.write(&write_of(vec![set(&wire_key("k"), b"v")])).await });
    // Wait until the write is inside its commit, then delete.
    while faults.calls().commit == before {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    registry.delete(&name).await.unwrap();
    // The delete waited for the write: its commit was accepted before the database closed.
    assert_eq!(faults.calls().committed, faults.calls().commit);
    let out = write.await.unwrap();
    assert_eq!(
        out.status,
        kv_proto::pb::AtomicWriteStatus::AwSuccess as i32
    );
    assert!(registry.info(&name).unwrap().is_none());
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_the_server_cannot_open_is_a_server_fault_that_says_which() {
    let server = DirServer::start("unservable", &[]);
    server.create_db("fine").await;
    let databases = server.data().join("databases");
    // Created by a server running another engine, and a record damaged on disk.
    let record = serde_json::json!({
        "database_id": uuid::Uuid::new_v4(),
        "created_at_ms": 0,
        "engine": "redb",
    });
    std::fs::create_dir_all(databases.join("elsewhere")).unwrap();
    std::fs::write(
        databases.join("elsewhere/database.json"),
        record.to_string(),
    )
    .unwrap();
    std::fs::create_dir_all(databases.join("broken")).unwrap();
    std::fs::write(databases.join("broken/database.json"), "{not json").unwrap();

    let r = exchange(&server.url("/db/elsewhere"), TOKEN).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.text());
    for part in [
        "created with the redb engine",
        "--engine sqlite",
        "server configuration error",
    ] {
        assert!(r.text().contains(part), "{part}: {}", r.text());
    }
    let r = exchange(&server.url("/db/broken"), TOKEN).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.text());
    assert!(r.text().contains("record of it is corrupt"), "{}", r.text());
    assert!(r.text().contains("server-side fault"), "{}", r.text());
    // The server's paths stay in its log.
    let root = server.data().display().to_string();
    assert!(!r.text().contains(&root), "{}", r.text());
    // The other databases are served as before.
    let r = exchange(&server.url("/db/fine"), TOKEN).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}
