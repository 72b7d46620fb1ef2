//! Many databases and scoped tokens with the real clients: Deno 2.9.6 (`Deno.openKv(url)`)
//! and `@deno/kv` 0.14.0 on Node, against the server binary with `--data-dir`.
//!
//! Both open `http://HOST/db/<name>` (the advertised endpoint `/db/<name>/v2` resolves right
//! for both), and both turn the server's refusals into readable errors:
//!
//! - a `read` token reads and watches, its writes fail with the 403's message (Deno refreshes
//!   the metadata and retries once, then reports `KV Connect failed to call ... (status=403
//!   Forbidden): <message>`; npm reports `Unexpected response status: 403 <message>`);
//! - after revocation the next call fails (npm shows the data path's 401 "revoked"; Deno
//!   refreshes the metadata first and shows that exchange's 401 "Invalid access token.");
//! - an expired token, or a token of another database, fails at open (401 / 403 with the
//!   message; Deno: `Could not open Deno KV database: the metadata endpoint at ... responded
//!   with status ...`).
//!
//! `tests/js/scoped.mjs` runs the operations and prints one JSON line each.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::clients::{deno_command, node_command, run_with_timeout, tail};
use common::multidb::DirServer;
use common::TOKEN;
use http::{Method, StatusCode};

const CLIENTS: [&str; 2] = ["deno", "node"];

/// Runs `scoped.mjs` with `client` on `url` as `token`; one JSON value per op.
fn run(client: &str, url: &str, token: &str, ops: &[&str]) -> Vec<serde_json::Value> {
    let mut cmd = if client == "deno" {
        deno_command("scoped.mjs", url)
    } else {
        node_command("scoped.mjs", url)
    };
    cmd.env("DENO_KV_ACCESS_TOKEN", token).args(ops);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    assert_eq!(
        out.status.map(|s| s.success()),
        Some(true),
        "scoped.mjs ({client} {ops:?}) failed: {}",
        tail(&out.stderr, 3000)
    );
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn ok(line: &serde_json::Value) -> &serde_json::Value {
    assert!(line.get("error").is_none(), "{line}");
    &line["ok"]
}

fn error(line: &serde_json::Value) -> String {
    line["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error: {line}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn both_clients_open_databases_by_url_with_scoped_tokens() {
    let server = DirServer::start("real-clients", &[]);
    server.create_db("app").await;
    server.create_db("other").await;
    let app = server.url("/db/app");
    let other = server.url("/db/other");
    for client in CLIENTS {
        let k = format!("k-{client}");
        // A write token: write, read back, watch.
        let (writer, _) = server
            .create_token(&format!("writer-{client}"), "write", Some("app"))
            .await;
        let (w, app2, oth) = (writer.clone(), app.clone(), other.clone());
        let kk = k.clone();
        let lines = tokio::task::spawn_blocking(move || {
            run(
                client,
                &app2,
                &w,
                &[
                    "open",
                    &format!("write:{kk}=v1"),
                    &format!("read:{kk}"),
                    &format!("watch:{kk}"),
                ],
            )
        })
        .await
        .unwrap();
        assert_eq!(ok(&lines[1]), "committed", "{client}");
        assert_eq!(ok(&lines[2]), "v1", "{client}");
        assert_eq!(ok(&lines[3]), "v1", "{client}");
        // The same key in another database is another entry; app's token does not open it.
        let kk = k.clone();
        let lines = tokio::task::spawn_blocking(move || {
            let root = run(client, &oth, TOKEN, &["open", &format!("read:{kk}")]);
            let refused = run(client, &oth, &writer, &["open"]);
            [root, refused]
        })
        .await
        .unwrap();
        assert_eq!(ok(&lines[0][1]), &serde_json::Value::Null, "{client}");
        let msg = error(&lines[1][0]);
        assert!(msg.contains("403"), "{client}: {msg}");
        assert!(
            msg.contains("not valid for database \"other\""),
            "{client}: {msg}"
        );

        // A read token: reads and watches; its writes fail readably; revoked, it stops.
        let name = format!("reader-{client}");
        let (reader, _) = server.create_token(&name, "read", Some("app")).await;
        let (app2, kk) = (app.clone(), k.clone());
        let revoke = format!("revoke:{TOKEN}:{name}");
        let lines = tokio::task::spawn_blocking(move || {
            run(
                client,
                &app2,
                &reader,
                &[
                    "open",
                    &format!("read:{kk}"),
                    &format!("watch:{kk}"),
                    &format!("write:{kk}=v2"),
                    &revoke,
                    &format!("read:{kk}"),
                ],
            )
        })
        .await
        .unwrap();
        assert_eq!(ok(&lines[1]), "v1", "{client}");
        assert_eq!(ok(&lines[2]), "v1", "{client}");
        let msg = error(&lines[3]);
        assert!(msg.contains("403"), "{client}: {msg}");
        assert!(
            msg.contains("This token has scope 'read', which does not allow atomic writes"),
            "{client}: {msg}"
        );
        assert_eq!(ok(&lines[4]), 200, "{client}");
        let msg = error(&lines[5]);
        let expected = if client == "deno" {
            "Invalid access token."
        } else {
            "401 The token this data-path token was issued for has been revoked."
        };
        assert!(msg.contains(expected), "{client}: {msg}");

        // An expired token fails at open.
        let expires = SystemTime::now() + Duration::from_millis(500);
        let r = server
            .admin(
                Method::POST,
                "/admin/tokens",
                TOKEN,
                Some(serde_json::json!({
                    "name": format!("brief-{client}"),
                    "scope": "read",
                    "database": "app",
                    "expires_at_ms": expires.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64,
                })),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let brief = body["token"].as_str().unwrap().to_string();
        // Past its expiry, whatever the machine's speed.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let (app2, kk) = (app.clone(), k.clone());
        let lines = tokio::task::spawn_blocking(move || {
            run(client, &app2, &brief, &["open", &format!("read:{kk}")])
        })
        .await
        .unwrap();
        let failed = lines
            .iter()
            .find(|l| l.get("error").is_some())
            .unwrap_or_else(|| panic!("{client}: the expired token worked: {lines:?}"));
        let msg = error(failed);
        assert!(msg.contains("401"), "{client}: {msg}");
        assert!(msg.contains("The token has expired"), "{client}: {msg}");
    }
}
