//! The binary's backup features end to end: `serve --backup-to`, a `--replica-of` server
//! following it, and `pitr list|info|restore|checkout` on the backup it wrote.
#![cfg(all(
    feature = "pitr",
    feature = "sqlite",
    feature = "redb",
    feature = "memory"
))]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Runs a `pitr` subcommand; its stdout, or a panic with its stderr.
fn pitr(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("pitr")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pitr {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn connect(addr: std::net::SocketAddr) -> (Kv, serde_json::Value) {
    let auth = format!("Bearer {TOKEN}");
    let r = post(
        Proto::H2c,
        &format!("http://{addr}/"),
        &[("authorization", &auth)],
        r#"{"supportedVersions":[1,2,3]}"#,
    )
    .await;
    assert_eq!(r.status, http::StatusCode::OK, "{}", r.text());
    let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let kv = Kv {
        proto: Proto::H2c,
        base: format!("http://{addr}/v2"),
        token: json["token"].as_str().unwrap().into(),
        database_id: json["databaseId"].as_str().unwrap().into(),
    };
    (kv, json)
}

async fn value_of(kv: &Kv, k: &str) -> Option<Vec<u8>> {
    kv.get(&key(k)).await.map(|e| e.value)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Serves the SQLite database at `db` with a continuous backup to `backup` (plus `extra`
/// flags), connects to it and waits until the initial snapshot has shipped, so that each write
/// after it becomes its own recovery point.
async fn serve_backed_up(db: &Path, backup: &Path, extra: &[&str]) -> (Proc, Kv) {
    let mut args = vec![
        "serve",
        "--engine",
        "sqlite",
        "--path",
        s(db),
        "--addr",
        "127.0.0.1:0",
        "--backup-to",
        s(backup),
    ];
    args.extend_from_slice(extra);
    let primary = spawn(&args);
    let (kv, _) = connect(primary.addr).await;
    wait_until_shipped(primary.addr).await;
    (primary, kv)
}

/// Serves the redb database at `path` and connects to it.
async fn serve_redb(path: &Path) -> (Proc, Kv) {
    let p = spawn(&[
        "--engine",
        "redb",
        "--path",
        s(path),
        "--addr",
        "127.0.0.1:0",
    ]);
    let (kv, _) = connect(p.addr).await;
    (p, kv)
}

/// SIGTERM off the runtime (the client's connections must keep running while the server
/// drains) and a clean exit.
async fn stop(p: Proc) {
    assert!(tokio::task::spawn_blocking(move || p.terminate())
        .await
        .unwrap()
        .success());
}

#[tokio::test]
async fn backup_replica_and_point_in_time_restore_through_the_binary() {
    let dir = temp_dir("backup");
    let backup = dir.join("backup");
    let primary_db = dir.join("primary.db");
    let (primary, kv) = serve_backed_up(&primary_db, &backup, &[]).await;
    assert_eq!(
        kv.write(&write_of(vec![set(&key("a"), b"1")])).await.status,
        1
    );
    assert_eq!(
        kv.write(&write_of(vec![set(&key("b"), b"2"), set(&key("c"), b"3")]))
            .await
            .status,
        1
    );
    wait_until_shipped(primary.addr).await;
    // Recovery points so far; the newest first.
    let listed = pitr(&["list", "--from", s(&backup)]);
    let points: Vec<&str> = listed
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert!(points.len() >= 2, "{listed}");
    let after_bc = points[0].to_string();
    let info = pitr(&["info", "--from", s(&backup)]);
    assert!(info.contains("kv-pitr"), "{info}");
    assert!(info.contains(&after_bc), "{info}");

    // A replica follows the backup and refuses writes with a 400 that says why.
    let replica = spawn(&[
        "serve",
        "--engine",
        "memory",
        "--addr",
        "127.0.0.1:0",
        "--replica-of",
        s(&backup),
        "--replica-poll-ms",
        "100",
    ]);
    let (rkv, meta) = connect(replica.addr).await;
    let endpoints = meta["endpoints"].as_array().unwrap();
    assert_eq!(endpoints[0]["consistency"], "eventual");
    assert!(endpoints.iter().any(|e| e["consistency"] == "strong"));
    assert_eq!(value_of(&rkv, "c").await.as_deref(), Some(&b"3"[..]));
    let refused = rkv
        .raw(
            "atomic_write",
            prost::Message::encode_to_vec(&write_of(vec![set(&key("x"), b"1")])),
        )
        .await;
    assert_eq!(refused.status, http::StatusCode::BAD_REQUEST);
    assert!(
        refused.text().contains("read-only replica"),
        "{}",
        refused.text()
    );

    // New writes on the primary reach the replica.
    assert_eq!(
        kv.write(&write_of(vec![
            set(&key("a"), b"changed"),
            set(&key("d"), b"4")
        ]))
        .await
        .status,
        1
    );
    wait_until_shipped(primary.addr).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while value_of(&rkv, "d").await.is_none() {
        assert!(
            Instant::now() < deadline,
            "the replica never saw the new write"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(value_of(&rkv, "a").await.as_deref(), Some(&b"changed"[..]));
    assert!(field(&healthz(replica.addr).await, "replica_applied_through").len() == 20);

    // Restore the earlier point into a redb file: the later write is absent.
    let restored = dir.join("restored.redb");
    let out = pitr(&[
        "restore",
        "--from",
        s(&backup),
        "--engine",
        "redb",
        "--path",
        s(&restored),
        "--at",
        &after_bc,
    ]);
    assert!(out.contains(&after_bc), "{out}");
    {
        let (p, r) = serve_redb(&restored).await;
        assert_eq!(value_of(&r, "a").await.as_deref(), Some(&b"1"[..]));
        assert_eq!(value_of(&r, "c").await.as_deref(), Some(&b"3"[..]));
        assert_eq!(value_of(&r, "d").await, None);
        // Same versionstamps as on the primary.
        assert_eq!(
            r.get(&key("c")).await.unwrap().versionstamp,
            kv.get(&key("c")).await.unwrap().versionstamp
        );
        stop(p).await;
    }
    // Move it forward to the latest point.
    let out = pitr(&[
        "checkout",
        "--from",
        s(&backup),
        "--engine",
        "redb",
        "--path",
        s(&restored),
    ]);
    assert!(out.starts_with("Snapshot is now at versionstamp"), "{out}");
    {
        let (p, r) = serve_redb(&restored).await;
        assert_eq!(value_of(&r, "a").await.as_deref(), Some(&b"changed"[..]));
        assert_eq!(value_of(&r, "d").await.as_deref(), Some(&b"4"[..]));
        stop(p).await;
    }

    // And back again to the earlier point: a new copy replaces the old file.
    let out = pitr(&[
        "checkout",
        "--from",
        s(&backup),
        "--engine",
        "redb",
        "--path",
        s(&restored),
        "--at",
        &after_bc,
    ]);
    assert!(out.contains(&after_bc), "{out}");
    {
        let (p, r) = serve_redb(&restored).await;
        assert_eq!(value_of(&r, "a").await.as_deref(), Some(&b"1"[..]));
        assert_eq!(value_of(&r, "d").await, None);
        // A restored database takes writes again, with versionstamps after the point's.
        let out = r.write(&write_of(vec![set(&key("e"), b"5")])).await;
        assert_eq!(out.status, 1);
        assert!(out.versionstamp > kv.get(&key("c")).await.unwrap().versionstamp);
        stop(p).await;
    }

    // Once written to, it is no longer a copy of the backup: checkout refuses to touch it.
    let out = Command::new(BIN)
        .args(["pitr", "checkout", "--from", s(&backup), "--engine", "redb"])
        .args(["--path", s(&restored)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a restored copy"));

    // Restoring into a database that holds data is refused.
    let out = Command::new(BIN)
        .args(["pitr", "restore", "--from", s(&backup), "--engine", "redb"])
        .args(["--path", s(&restored)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!out.stderr.is_empty());

    stop(replica).await;
    stop(primary).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_backup_locations_and_arguments_are_clear_errors() {
    let out = Command::new(BIN)
        .args(["pitr", "list", "--from", "ftp://example.com/x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("s3://"), "{err}");

    let dir = temp_dir("empty-backup");
    let out = Command::new(BIN)
        .args(["pitr", "info", "--from", s(&dir)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!out.stderr.is_empty());

    let out = Command::new(BIN)
        .args(["pitr", "restore", "--from", s(&dir), "--engine", "memory"])
        .args(["--at", "not-hex"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--at"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_retention_values_are_clear_errors() {
    let dir = temp_dir("retention-args");
    let backup = dir.join("backup");
    let serve = |extra: &[&str]| {
        let mut cmd = Command::new(BIN);
        clear_server_env(&mut cmd);
        let out = cmd
            .args(["--engine", "memory", "--addr", "127.0.0.1:0"])
            .args(extra)
            .env("DENO_KV_ACCESS_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{extra:?} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = serve(&["--backup-to", s(&backup), "--backup-retention", "7x"]);
    assert!(err.contains("--backup-retention"), "{err}");
    let err = serve(&["--backup-to", s(&backup), "--backup-retention", "0s"]);
    assert!(err.contains("longer than zero"), "{err}");
    let err = serve(&["--backup-retention", "7d"]);
    assert!(err.contains("--backup-to"), "{err}");
    let err = serve(&[
        "--backup-to",
        s(&backup),
        "--backup-retention",
        "7d",
        "--backup-checkpoint-secs",
        "0",
    ]);
    assert!(err.contains("retention needs checkpoints"), "{err}");
    let err = serve(&[
        "--backup-to",
        s(&backup),
        "--backup-retention",
        "7d",
        "--backup-retention-grace",
        "soon",
    ]);
    assert!(err.contains("--backup-retention-grace"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The `.bin` objects under `dir` (log segments or checkpoint ranges).
fn objects_in(dir: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".bin"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn backup_retention_deletes_old_segments_and_the_latest_point_restores() {
    let dir = temp_dir("retention");
    let backup = dir.join("backup");
    let (primary, kv) = serve_backed_up(
        &dir.join("primary.db"),
        &backup,
        &[
            "--backup-checkpoint-secs",
            "1",
            "--backup-retention",
            "2s",
            "--backup-retention-grace",
            "0s",
        ],
    )
    .await;
    let t0 = Instant::now();
    let mut early = None;
    let mut i = 0u32;
    loop {
        let v = i.to_string();
        assert_eq!(
            kv.write(&write_of(vec![set(&key("k"), v.as_bytes())]))
                .await
                .status,
            1
        );
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let logs = objects_in(&backup.join("logs"));
        match &early {
            None if t0.elapsed() > Duration::from_secs(1) && !logs.is_empty() => {
                early = Some(logs.clone())
            }
            Some(e) if backup.join("compacted.json").exists() && !e.is_subset(&logs) => break,
            _ => {}
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "no segment deleted: {early:?} vs {logs:?}"
        );
    }
    wait_until_shipped(primary.addr).await;
    stop(primary).await;

    // The latest point restores from what is left.
    let restored = dir.join("restored.redb");
    pitr(&[
        "restore",
        "--from",
        s(&backup),
        "--engine",
        "redb",
        "--path",
        s(&restored),
    ]);
    let (p, kv) = serve_redb(&restored).await;
    assert_eq!(
        value_of(&kv, "k").await.as_deref(),
        Some((i - 1).to_string().as_bytes())
    );
    stop(p).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `pitr restore|checkout --engine postgres`: built in a staging schema and swapped in; a
/// checkout is refused while a server serves the schema, and goes back once it has stopped.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_restore_and_checkout_swap_schemas_through_the_binary() {
    let dir = temp_dir("pgbackup");
    let backup = dir.join("backup");
    let primary_db = dir.join("primary.db");
    let (primary, kv) = serve_backed_up(&primary_db, &backup, &[]).await;
    assert_eq!(
        kv.write(&write_of(vec![set(&key("a"), b"1")])).await.status,
        1
    );
    wait_until_shipped(primary.addr).await;
    let first = pitr(&["list", "--from", s(&backup)])
        .lines()
        .next()
        .and_then(|l| l.split('\t').next())
        .unwrap()
        .to_string();
    assert_eq!(
        kv.write(&write_of(vec![set(&key("b"), b"2")])).await.status,
        1
    );
    wait_until_shipped(primary.addr).await;
    stop(primary).await;

    let url = kv_test_support::postgres::test_url();
    let schema = kv_test_support::postgres::fresh_schema("pitr_cli");
    let pg = ["--engine", "postgres", "--database-url", url];
    let pg_args = |cmd: &'static str, at: Option<&str>| {
        let mut a = vec![cmd, "--from", s(&backup)];
        a.extend(pg);
        a.extend(["--database-schema", &schema]);
        if let Some(at) = at {
            a.extend(["--at", at]);
        }
        a.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| {
        Command::new(BIN)
            .arg("pitr")
            .args(&args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let serve = || {
        let mut a = vec!["serve", "--addr", "127.0.0.1:0"];
        a.extend(pg);
        a.extend(["--database-schema", &schema]);
        spawn(&a)
    };

    let out = run(pg_args("restore", Some(&first)));
    assert!(out.status.success(), "{out:?}");
    let out = run(pg_args("checkout", None));
    assert!(out.status.success(), "{out:?}");

    // Served: refused, untouched.
    let server = serve();
    let (skv, _) = connect(server.addr).await;
    assert_eq!(value_of(&skv, "b").await.as_deref(), Some(&b"2"[..]));
    let out = run(pg_args("checkout", Some(&first)));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("being served"), "{err}");
    assert_eq!(value_of(&skv, "b").await.as_deref(), Some(&b"2"[..]));
    stop(server).await;

    // Stopped: the earlier point replaces the store.
    let out = run(pg_args("checkout", Some(&first)));
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&first));
    let server = serve();
    let (skv, _) = connect(server.addr).await;
    assert_eq!(value_of(&skv, "a").await.as_deref(), Some(&b"1"[..]));
    assert_eq!(value_of(&skv, "b").await, None);
    stop(server).await;
    std::fs::remove_dir_all(&dir).unwrap();
}
