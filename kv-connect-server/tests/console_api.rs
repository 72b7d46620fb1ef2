//! The web console's JSON API (`/console/api/...`) in-process: off by default, admin token
//! required and never taken from a URL, cross-origin calls refused, security headers, typed
//! keys with paging, versionstamp-checked edits (a concurrent change is never overwritten),
//! the watch stream, and a 4xx JSON error for every bad input.

mod common;

use bytes::Bytes;
use common::{send, Proto, Resp, TestServer, TOKEN};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use kv_connect_server::console::ConsoleConfig;
use kv_traits::key::{encode_key, KeyPart};
use kv_traits::{Consistency, Database, KvValue, Mutation, ReadRange};
use serde_json::{json, Value};

async fn console_server() -> TestServer {
    TestServer::start_with(|c| c.console = Some(ConsoleConfig::default())).await
}

fn auth() -> String {
    format!("Bearer {TOKEN}")
}

async fn get(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut b = Request::get(server.url(path));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(Proto::Http1, b.body(Full::new(Bytes::new())).unwrap()).await
}

/// A POST to `/console/api/<path>` with the admin token and a JSON body.
async fn api(server: &TestServer, path: &str, body: Value) -> (StatusCode, Value) {
    let r = common::post(
        Proto::Http1,
        &server.url(&format!("/console/api/{path}")),
        &[
            ("authorization", &auth()),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await;
    assert_eq!(r.content_type(), "application/json", "{}", r.text());
    let json = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, json)
}

fn s(text: &str) -> Value {
    json!({"type": "string", "value": text})
}

fn u64v(n: u64) -> Value {
    json!({"$u64": n.to_string()})
}

#[tokio::test]
async fn the_console_is_off_unless_configured() {
    let server = TestServer::start().await;
    for path in ["/console", "/console/app.js", "/console/api/status"] {
        let r = get(&server, path, &[("authorization", &auth())]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn the_page_is_served_with_strict_security_headers() {
    let server = console_server().await;
    for (path, ty) in [
        ("/console", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
    ] {
        let r = get(&server, path, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(
            r.content_type().starts_with(ty),
            "{path}: {}",
            r.content_type()
        );
        let csp = r.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(r.headers["x-frame-options"], "DENY");
        assert_eq!(r.headers["x-content-type-options"], "nosniff");
        assert_eq!(r.headers["cache-control"], "no-store");
        assert!(!r.headers.contains_key("access-control-allow-origin"));
    }
    let page = get(&server, "/console", &[]).await.text();
    assert!(page.contains("/console/app.js") && !page.contains("<script>"));
}

#[tokio::test]
async fn the_api_needs_the_admin_token_in_the_authorization_header() {
    let server = console_server().await;
    let data_token = common::metadata(Proto::Http1, &server).await.token;
    for (header, status) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("Bearer wrong".to_string()), StatusCode::UNAUTHORIZED),
        (Some(format!("Basic {TOKEN}")), StatusCode::UNAUTHORIZED),
        (
            Some(format!("Bearer {data_token}")),
            StatusCode::UNAUTHORIZED,
        ),
        (Some(auth()), StatusCode::OK),
    ] {
        let headers: Vec<(&str, &str)> = header
            .as_deref()
            .map(|h| vec![("authorization", h)])
            .unwrap_or_default();
        let r = get(&server, "/console/api/status", &headers).await;
        assert_eq!(r.status, status, "{header:?}: {}", r.text());
        assert_eq!(r.content_type(), "application/json");
        if status != StatusCode::OK {
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
        }
    }
}

#[tokio::test]
async fn a_token_in_the_query_string_is_refused_not_read() {
    let server = console_server().await;
    for query in [
        format!("access_token={TOKEN}"),
        format!("token={TOKEN}"),
        format!("x=1&Authorization=Bearer%20{TOKEN}"),
    ] {
        let path = format!("/console/api/status?{query}");
        let r = get(&server, &path, &[]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {}", r.text());
        assert!(
            r.text().contains("Never put the token in a URL"),
            "{}",
            r.text()
        );
        // Not even together with a valid header.
        let r = get(&server, &path, &[("authorization", &auth())]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}");
    }
}

#[tokio::test]
async fn cross_origin_calls_are_refused() {
    let server = console_server().await;
    let own = format!("http://{}", server.addr);
    let a = auth();
    let ok = get(
        &server,
        "/console/api/status",
        &[("authorization", &a), ("origin", &own)],
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    for headers in [
        vec![("origin", "http://evil.example")],
        vec![("origin", "null")],
        vec![("sec-fetch-site", "cross-site")],
    ] {
        let mut h = headers.clone();
        h.push(("authorization", &a));
        let r = get(&server, "/console/api/status", &h).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{headers:?}: {}", r.text());
    }
    // A form post (no JSON content type) cannot reach a handler.
    let r = common::post(
        Proto::Http1,
        &server.url("/console/api/set"),
        &[("authorization", &a), ("content-type", "text/plain")],
        json!({"key": [s("x")], "value": u64v(1)}).to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", r.text());
    assert!(read(&server, &[KeyPart::String("x".into())])
        .await
        .is_none());
}

async fn read(server: &TestServer, parts: &[KeyPart]) -> Option<kv_traits::KvEntry> {
    let key = encode_key(parts).unwrap();
    let mut out = server
        .db
        .snapshot_read(vec![ReadRange::single(&key)], Consistency::Strong)
        .await
        .unwrap();
    out.pop().and_then(|mut r| r.pop())
}

#[tokio::test]
async fn edits_are_checked_against_the_versionstamp_read() {
    let server = console_server().await;
    let key = json!([s("users"), {"type": "bigint", "value": "7"}]);
    let parts = [KeyPart::String("users".into()), KeyPart::Int(7.into())];
    // Create: only while absent.
    let (st, created) = api(
        &server,
        "set",
        json!({"key": key, "value": u64v(1), "versionstamp": null}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{created}");
    let vs1 = created["versionstamp"].as_str().unwrap().to_string();
    let (st, again) = api(&server, "set", json!({"key": key, "value": u64v(2)})).await;
    assert_eq!(st, StatusCode::CONFLICT, "{again}");
    assert_eq!(again["conflict"], true);
    assert_eq!(again["current"]["versionstamp"], vs1.as_str());

    // Open it, then someone else writes, then save: conflict, nothing overwritten.
    let (st, opened) = api(&server, "get", json!({"key": key})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(opened["versionstamp"], vs1.as_str());
    assert_eq!(opened["key"], key);
    let concurrent = server
        .db
        .atomic_write(kv_traits::AtomicWrite {
            mutations: vec![Mutation::set(encode_key(&parts).unwrap(), KvValue::U64(99))],
            ..Default::default()
        })
        .await
        .unwrap()
        .versionstamp()
        .unwrap();
    let (st, conflict) = api(
        &server,
        "set",
        json!({"key": key, "value": u64v(3), "versionstamp": vs1}),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "{conflict}");
    let msg = conflict["error"].as_str().unwrap();
    assert!(
        msg.contains("Conflict") && msg.contains("Nothing was written"),
        "{msg}"
    );
    assert_eq!(conflict["current"]["versionstamp"], concurrent.to_string());
    let stored = read(&server, &parts).await.unwrap();
    assert_eq!(stored.value, KvValue::U64(99));

    // With the current versionstamp the edit goes through.
    let (st, saved) = api(
        &server,
        "set",
        json!({"key": key, "value": u64v(3), "versionstamp": concurrent.to_string()}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{saved}");
    assert_eq!(read(&server, &parts).await.unwrap().value, KvValue::U64(3));
    let vs3 = saved["versionstamp"].as_str().unwrap().to_string();

    // Delete: a stale versionstamp conflicts, the current one deletes.
    let (st, _) = api(&server, "delete", json!({"key": key, "versionstamp": vs1})).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert!(read(&server, &parts).await.is_some());
    let (st, _) = api(&server, "delete", json!({"key": key, "versionstamp": vs3})).await;
    assert_eq!(st, StatusCode::OK);
    assert!(read(&server, &parts).await.is_none());
    let (st, gone) = api(&server, "get", json!({"key": key})).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{gone}");
}

#[tokio::test]
async fn listing_pages_through_a_typed_prefix_in_key_order() {
    let server = console_server().await;
    for i in 0..7 {
        let key = json!([s("items"), {"type": "number", "value": i}]);
        let (st, _) = api(&server, "set", json!({"key": key, "value": u64v(i)})).await;
        assert_eq!(st, StatusCode::OK);
    }
    api(
        &server,
        "set",
        json!({"key": [s("other")], "value": u64v(0)}),
    )
    .await;
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    let mut pages = 0;
    loop {
        let mut body = json!({"prefix": [s("items")], "limit": 3});
        if !cursor.is_null() {
            body["cursor"] = cursor.clone();
        }
        let (st, page) = api(&server, "list", body).await;
        assert_eq!(st, StatusCode::OK, "{page}");
        pages += 1;
        for e in page["entries"].as_array().unwrap() {
            assert_eq!(e["key"][0], s("items"));
            assert_eq!(e["encoding"], "u64");
            seen.push(e["key"][1]["value"].as_f64().unwrap());
        }
        cursor = page["cursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(seen, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(pages, 3);
    let (_, all) = api(&server, "list", json!({})).await;
    assert_eq!(all["entries"].as_array().unwrap().len(), 8);
}

#[tokio::test]
async fn every_bad_input_gets_a_clear_4xx_json_error() {
    let server = console_server().await;
    let long = "x".repeat(3000);
    let cases: Vec<(&str, Value, StatusCode, &str)> = vec![
        (
            "list",
            json!({"prefix": [{"type": "string", "value": 5}]}),
            StatusCode::BAD_REQUEST,
            "Key part 0",
        ),
        (
            "list",
            json!({"prefix": [{"type": "date", "value": 5}]}),
            StatusCode::BAD_REQUEST,
            "unknown part type",
        ),
        (
            "list",
            json!({"limit": 0}),
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            "list",
            json!({"limit": 501}),
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            "list",
            json!({"cursor": "zz"}),
            StatusCode::BAD_REQUEST,
            "cursor",
        ),
        (
            "list",
            json!({"prefix": [s("a")], "cursor": "026200"}),
            StatusCode::BAD_REQUEST,
            "cursor",
        ),
        (
            "list",
            json!({"bogus": 1}),
            StatusCode::BAD_REQUEST,
            "bogus",
        ),
        ("get", json!({}), StatusCode::BAD_REQUEST, "key"),
        (
            "get",
            json!({"key": [s("missing")]}),
            StatusCode::NOT_FOUND,
            "No entry",
        ),
        (
            "set",
            json!({"key": [], "value": u64v(1)}),
            StatusCode::BAD_REQUEST,
            "at least one part",
        ),
        (
            "set",
            json!({"key": [s("a")], "value": u64v(1), "versionstamp": "xyz"}),
            StatusCode::BAD_REQUEST,
            "versionstamp",
        ),
        (
            "set",
            json!({"key": [s(&long)], "value": u64v(1)}),
            StatusCode::BAD_REQUEST,
            "key",
        ),
        (
            "set",
            json!({"key": [s("a")], "value": {"$nonsense": 1}}),
            StatusCode::BAD_REQUEST,
            "value",
        ),
        (
            "delete",
            json!({"key": [s("a")]}),
            StatusCode::BAD_REQUEST,
            "versionstamp",
        ),
        (
            "watch",
            json!({"key": [s(&long)]}),
            StatusCode::BAD_REQUEST,
            "key",
        ),
        ("nope", json!({}), StatusCode::NOT_FOUND, "not found"),
    ];
    for (path, body, status, needle) in cases {
        let (st, out) = api(&server, path, body.clone()).await;
        assert_eq!(st, status, "{path} {body}: {out}");
        let msg = out["error"].as_str().unwrap_or_default();
        assert!(
            msg.to_lowercase().contains(&needle.to_lowercase()),
            "{path} {body}: {msg:?} lacks {needle:?}"
        );
    }
    let r = common::post(
        Proto::Http1,
        &server.url("/console/api/list"),
        &[
            ("authorization", &auth()),
            ("content-type", "application/json"),
        ],
        "{not json",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let r = get(&server, "/console/api/list", &[("authorization", &auth())]).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers["allow"], "POST");
    let r = common::post(
        Proto::Http1,
        &server.url("/console/api/status"),
        &[("authorization", &auth())],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers["allow"], "GET, HEAD");
    // Nothing of the above was written.
    let (_, all) = api(&server, "list", json!({})).await;
    assert_eq!(all["entries"], json!([]));
}

/// Reads server-sent events from `body` until one `entry` event arrives; returns its data.
async fn next_event(body: &mut hyper::body::Incoming, buffer: &mut String) -> Value {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                return serde_json::from_str(data).unwrap();
            }
            continue;
        }
        let frame = tokio::time::timeout(std::time::Duration::from_secs(20), body.frame())
            .await
            .expect("an event within 20 s")
            .expect("the stream is open")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            buffer.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
}

#[tokio::test]
async fn watch_streams_the_entry_and_every_change() {
    let server = console_server().await;
    let key = json!([s("counter")]);
    let (_, first) = api(&server, "set", json!({"key": key, "value": u64v(1)})).await;
    let req = Request::post(server.url("/console/api/watch"))
        .header("authorization", auth())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(json!({"key": key}).to_string())))
        .unwrap();
    let res = common::client(Proto::Http1).request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();
    let mut buffer = String::new();
    let initial = next_event(&mut body, &mut buffer).await;
    assert_eq!(initial["entry"]["versionstamp"], first["versionstamp"]);
    assert_eq!(initial["entry"]["notation"], u64v(1));
    let (_, second) = api(
        &server,
        "set",
        json!({"key": key, "value": u64v(2), "versionstamp": first["versionstamp"]}),
    )
    .await;
    let changed = next_event(&mut body, &mut buffer).await;
    assert_eq!(changed["entry"]["versionstamp"], second["versionstamp"]);
    assert_eq!(changed["entry"]["notation"], u64v(2));
    api(
        &server,
        "delete",
        json!({"key": key, "versionstamp": second["versionstamp"]}),
    )
    .await;
    let deleted = next_event(&mut body, &mut buffer).await;
    assert_eq!(deleted["entry"], Value::Null);
}

#[tokio::test]
async fn a_watch_ends_when_its_token_is_revoked() {
    use kv_connect_server::tokens::{NewToken, Scope, TokenStore};
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "console-watch-revoke-{}-{}",
        std::process::id(),
        nonce()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tokens.json");
    let store = TokenStore::new(&file);
    let new = NewToken {
        name: "operator".into(),
        scope: Scope::Admin,
        database: None,
        expires_at: None,
    };
    let (admin, _) = store.create(new, std::time::SystemTime::now()).unwrap();
    let server = TestServer::start_with(|c| {
        c.console = Some(ConsoleConfig::default());
        c.token_file = Some(file.clone());
        c.watch_keepalive = std::time::Duration::from_millis(100);
    })
    .await;
    let open = |token: &str| {
        Request::post(server.url("/console/api/watch"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                json!({"key": [s("watched")]}).to_string(),
            )))
            .unwrap()
    };
    let client = common::client(Proto::Http1);
    let scoped = client.request(open(&admin)).await.unwrap();
    assert_eq!(scoped.status(), StatusCode::OK);
    let root = client.request(open(TOKEN)).await.unwrap();
    let (mut scoped, mut root) = (scoped.into_body(), root.into_body());
    let (mut a, mut b) = (String::new(), String::new());
    assert_eq!(next_event(&mut scoped, &mut a).await["entry"], Value::Null);
    assert_eq!(next_event(&mut root, &mut b).await["entry"], Value::Null);
    store.revoke("operator", None).unwrap();
    // The revoked token's stream ends at its next keep-alive (bounded wait, no timing assert).
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(frame) = scoped.frame().await {
            if frame.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the revoked token's console watch did not end"
    );
    // The access token's stream goes on.
    let more = tokio::time::timeout(std::time::Duration::from_secs(30), root.frame())
        .await
        .expect("the access token's stream keeps sending keep-alives");
    assert!(matches!(more, Some(Ok(_))));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn status_reports_health_and_the_configured_reports() {
    let server = TestServer::start_with(|c| {
        c.health_report = Some(std::sync::Arc::new(|| "backup_lag_ms: 12\n".to_string()));
        c.console = Some(ConsoleConfig {
            queues: Some(std::sync::Arc::new(|| {
                Box::pin(async { Ok(json!({"ready": 3, "delayed": 0, "leased": 1})) })
            })),
            backup: None,
            shared_store: true,
        });
    })
    .await;
    let r = get(
        &server,
        "/console/api/status",
        &[("authorization", &auth())],
    )
    .await;
    let status: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(status["ok"], true);
    assert_eq!(status["health"]["backup_lag_ms"], "12");
    assert_eq!(status["queues"]["ready"], 3);
    // Dead letters always come from the counters, beside the scan.
    assert_eq!(status["queues"]["dead_lettered"], 0);
    assert_eq!(status["backup"], false);
    let r = get(
        &server,
        "/console/api/backup",
        &[("authorization", &auth())],
    )
    .await;
    let backup: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(backup["enabled"], false);
}

#[tokio::test]
async fn values_are_written_from_notation_and_shown_as_trees() {
    let server = console_server().await;
    let key = json!([s("users"), s("alice")]);
    let value = json!({
        "name": "Alice",
        "tags": ["admin", "ops"],
        "address": {"city": "Lisbon"},
        "visits": {"$bigint": "42"},
    });
    let (st, out) = api(&server, "set", json!({"key": key, "value": value})).await;
    assert_eq!(st, StatusCode::OK, "{out}");
    let (_, entry) = api(&server, "get", json!({"key": key})).await;
    assert_eq!(entry["encoding"], "v8");
    assert_eq!(entry["notation"], value);
    let tree = &entry["tree"];
    assert_eq!(tree["type"], "object");
    let address = tree["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e[0] == "address")
        .unwrap();
    assert_eq!(
        address[1]["entries"][0],
        json!(["city", {"type": "string", "value": "Lisbon"}])
    );
    let (_, page) = api(&server, "list", json!({"prefix": [s("users")]})).await;
    assert_eq!(
        page["entries"][0]["summary"],
        r#"{name: "Alice", tags: ["admin", "ops"], address: {city: "Lisbon"}, visits: 42n}"#
    );

    // A value over the database's limit is refused whole.
    let big = "x".repeat(70_000);
    let (st, out) = api(&server, "set", json!({"key": [s("big")], "value": big})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{out}");
    assert!(read(&server, &[KeyPart::String("big".into())])
        .await
        .is_none());
}

#[tokio::test]
async fn scoped_tokens_need_the_admin_scope() {
    use kv_connect_server::tokens::{NewToken, Scope, TokenStore};
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "console-tokens-{}-{}",
        std::process::id(),
        nonce()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tokens.json");
    let store = TokenStore::new(&file);
    let create = |name: &str, scope: Scope| {
        let new = NewToken {
            name: name.to_string(),
            scope,
            database: None,
            expires_at: None,
        };
        store.create(new, std::time::SystemTime::now()).unwrap().0
    };
    let reader = create("reader", Scope::Read);
    let writer = create("writer", Scope::Write);
    let admin = create("admin", Scope::Admin);
    let server = TestServer::start_with(|c| {
        c.console = Some(ConsoleConfig::default());
        c.token_file = Some(file.clone());
    })
    .await;
    for (token, status) in [
        (reader, StatusCode::FORBIDDEN),
        (writer, StatusCode::FORBIDDEN),
        (admin, StatusCode::OK),
        ("kvt_00_00".to_string(), StatusCode::UNAUTHORIZED),
    ] {
        let h = format!("Bearer {token}");
        let r = get(&server, "/console/api/status", &[("authorization", &h)]).await;
        assert_eq!(r.status, status, "{}", r.text());
        assert_eq!(r.content_type(), "application/json");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn nonce() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

#[tokio::test]
async fn queue_counts_and_dead_letters_come_from_the_counters_without_a_scan() {
    use kv_traits::{AtomicWrite, Enqueue};
    // No scan report: the counters of an unshared store are exact.
    let server = console_server().await;
    let enqueue = |dead_letter: &str| AtomicWrite {
        enqueues: vec![Enqueue {
            payload: vec![1],
            deadline_ms: 0,
            keys_if_undelivered: vec![encode_key(&[KeyPart::String(dead_letter.into())]).unwrap()],
            backoff_schedule: Some(vec![]),
        }],
        ..Default::default()
    };
    for dl in ["dl-1", "dl-2"] {
        server.db.atomic_write(enqueue(dl)).await.unwrap();
    }
    // One delivery fails for good (no retries): it is dead-lettered.
    let message = server
        .db
        .dequeue(std::time::Duration::ZERO)
        .await
        .unwrap()
        .expect("a message is ready");
    server.db.finish(message.lease, false).await.unwrap();
    let r = get(
        &server,
        "/console/api/status",
        &[("authorization", &auth())],
    )
    .await;
    let status: Value = serde_json::from_slice(&r.body).unwrap();
    let queues = &status["queues"];
    assert_eq!(queues["waiting"], 1, "{queues}");
    assert_eq!(queues["leased"], 0, "{queues}");
    assert_eq!(queues["dead_lettered"], 1, "{queues}");
    assert_eq!(queues["dropped"], 0, "{queues}");
    assert!(queues["source"]
        .as_str()
        .is_some_and(|s| s.contains("counters")));
}

/// A `/console/api/<path>` call on `server` (a binary with many databases) as `token`.
async fn dir_api(
    server: &common::multidb::DirServer,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let auth = format!("Bearer {token}");
    let r = match body {
        Some(body) => {
            common::post(
                Proto::Http1,
                &server.url(&format!("/console/api/{path}")),
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                body.to_string(),
            )
            .await
        }
        None => {
            let req = Request::get(server.url(&format!("/console/api/{path}")))
                .header("authorization", &auth)
                .body(Full::new(Bytes::new()))
                .unwrap();
            send(Proto::Http1, req).await
        }
    };
    assert_eq!(r.content_type(), "application/json", "{}", r.text());
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn with_many_databases_the_console_serves_the_one_picked_that_the_token_may_see() {
    let server = common::multidb::DirServer::start("console", &["--console"]);
    server.create_db("app").await;
    server.create_db("other").await;
    let (app_admin, _) = server.create_token("app-admin", "admin", Some("app")).await;
    let (reader, _) = server.create_token("reader", "read", None).await;

    // The picker's list: every database for the access token, only its own for a bound token.
    let names = |v: &Value| -> Vec<String> {
        v["databases"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|d| d["name"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (st, all) = dir_api(&server, "databases", TOKEN, None).await;
    assert_eq!(st, StatusCode::OK, "{all}");
    assert_eq!(all["many"], true);
    assert_eq!(names(&all), ["app", "other"]);
    let (st, own) = dir_api(&server, "databases", &app_admin, None).await;
    assert_eq!(st, StatusCode::OK, "{own}");
    assert_eq!(names(&own), ["app"]);
    let (_, none) = dir_api(&server, "databases", &reader, None).await;
    assert_eq!(names(&none), Vec::<String>::new());
    let (st, _) = dir_api(&server, "databases", "kvt_00_00", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // Each call names its database; writes land in that one only.
    let key = json!([s("greeting")]);
    let (st, out) = dir_api(
        &server,
        "set?database=app",
        &app_admin,
        Some(json!({"key": key, "value": "hello"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{out}");
    let (st, entry) = dir_api(
        &server,
        "get?database=app",
        TOKEN,
        Some(json!({"key": key})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{entry}");
    assert_eq!(entry["notation"], "hello");
    let (st, _) = dir_api(
        &server,
        "get?database=other",
        TOKEN,
        Some(json!({"key": key})),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, status) = dir_api(&server, "status?database=app", &app_admin, None).await;
    assert_eq!(st, StatusCode::OK, "{status}");
    assert_eq!(status["database"], "app");
    assert_eq!(status["queues"]["waiting"], 0, "{status}");
    assert_eq!(status["queues"]["dead_lettered"], 0, "{status}");
    let (st, backup) = dir_api(&server, "backup?database=app", TOKEN, None).await;
    assert_eq!(st, StatusCode::OK, "{backup}");
    assert_eq!(backup["enabled"], false);

    // A token bound to one database sees nothing of another; bad picks are clear 4xx.
    for (path, token, want) in [
        (
            "list?database=other",
            app_admin.as_str(),
            StatusCode::FORBIDDEN,
        ),
        ("list?database=app", reader.as_str(), StatusCode::FORBIDDEN),
        ("list", TOKEN, StatusCode::BAD_REQUEST),
        (
            "list?database=Not%20a%20name",
            TOKEN,
            StatusCode::BAD_REQUEST,
        ),
        ("list?database=missing", TOKEN, StatusCode::NOT_FOUND),
    ] {
        let (st, out) = dir_api(&server, path, token, Some(json!({"prefix": []}))).await;
        assert_eq!(st, want, "{path}: {out}");
        assert!(
            out["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{out}"
        );
    }
    let (st, out) = dir_api(&server, "status?database=other", &app_admin, None).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{out}");
}

#[tokio::test]
async fn a_single_database_server_refuses_a_database_pick() {
    let server = console_server().await;
    let r = get(
        &server,
        "/console/api/databases",
        &[("authorization", &auth())],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["many"], false);
    let r = get(
        &server,
        "/console/api/status?database=app",
        &[("authorization", &auth())],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
}
