//! The binary as a drop-in for the reference server: the command lines of denokv's README
//! (github.com/denoland/denokv, README.md: "Docker on a VPS", "HTTPS with a reverse proxy",
//! "Fly.io", "Running as a replica of a hosted KV database"), copied verbatim below, run
//! against this binary: the server starts, clients use it with the token, the replica follows
//! a backup in an S3-compatible store (moto), and `pitr sync|list|checkout|info` work on it.
//!
//! Only placeholders are substituted: `/data` by a temporary folder, `<random-token>` by the
//! test token, `your-bucket` by a fresh bucket; the docker prefix (`docker run ...
//! ghcr.io/denoland/denokv`, or `denokv`) is the binary. The reference's fixed address
//! (0.0.0.0:4512) is replaced through `KV_CONNECT_ADDR=127.0.0.1:0`, which this server honours
//! when a denokv command line has no `--addr`; the S3 endpoint through `DENO_KV_S3_ENDPOINT`.
#![cfg(all(feature = "pitr", feature = "sqlite"))]

mod common;

use std::process::{Command, Output};

use common::denokv_readme::*;
use common::*;
use kv_connect_client::{key, Kv, Value};

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Runs the binary to completion with `args` and `envs`.
fn run(args: &[String], envs: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("DENO_KV_ACCESS_TOKEN")
        .env("RUST_LOG", "warn")
        .envs(envs.iter().copied())
        .output()
        .unwrap()
}

/// [`run`], which must succeed; its stdout.
fn run_ok(args: &[String], envs: &[(&str, &str)]) -> String {
    let out = run(args, envs);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn client(addr: std::net::SocketAddr, token: &str) -> Kv {
    Kv::open_remote(format!("http://{addr}"), token)
        .await
        .unwrap()
}

async fn stop(p: Proc) {
    let status = tokio::task::spawn_blocking(move || p.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}

const LOCAL: [(&str, &str); 1] = [("KV_CONNECT_ADDR", "127.0.0.1:0")];

#[tokio::test]
async fn readme_docker_command_serves_clients_with_the_token_and_persists() {
    let data = temp_dir("dropin-docker");
    let args = readme_args(README_DOCKER, &data, "");
    assert_eq!(
        args[..2],
        [
            "--sqlite-path",
            &format!("{}/denokv.sqlite", data.display())
        ]
    );

    let p = spawn_with(&strs(&args), &LOCAL);
    let kv = client(p.addr, TOKEN).await;
    let vs = kv.set(&key!["greeting"], "hello").await.unwrap();
    // The database is the file --sqlite-path names (created by this server, in its format).
    assert!(data.join("denokv.sqlite").is_file());
    // Another token is refused at the metadata exchange.
    let wrong = Kv::open_remote(format!("http://{}", p.addr), "not-the-token-at-all").await;
    assert!(wrong.is_err(), "a wrong token was accepted");
    drop(kv);
    stop(p).await;

    let p = spawn_with(&strs(&args), &LOCAL);
    let kv = client(p.addr, TOKEN).await;
    let got = kv.get(&key!["greeting"]).await.unwrap();
    assert_eq!(got.value, Some(Value::from("hello")));
    assert_eq!(got.versionstamp, Some(vs));
    drop(kv);
    stop(p).await;
    std::fs::remove_dir_all(&data).unwrap();
}

/// The README's client side: `Deno.openKv("http://localhost:4512")` with the access token in
/// `DENO_KV_ACCESS_TOKEN`, with the real Deno client, against the README's server command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deno_uses_the_readme_docker_command_with_the_token() {
    use common::clients::{deno_command, run_with_timeout};
    let data = temp_dir("dropin-deno");
    let p = spawn_with(&strs(&readme_args(README_DOCKER, &data, "")), &LOCAL);
    let url = format!("http://{}", p.addr);
    let deno = move |mode: &str| {
        let mut cmd = deno_command("deno_persist.ts", &url);
        cmd.arg(mode).env("DENO_KV_ACCESS_TOKEN", TOKEN);
        let out = run_with_timeout(cmd, std::time::Duration::from_secs(120));
        assert_eq!(
            out.status.map(|s| s.success()),
            Some(true),
            "deno_persist.ts {mode}: {}",
            out.stderr
        );
        out.stdout
    };
    let written = tokio::task::spawn_blocking({
        let deno = deno.clone();
        move || deno("write")
    })
    .await
    .unwrap();
    assert!(written.lines().any(|l| l.starts_with("last ")), "{written}");
    let read = tokio::task::spawn_blocking(move || deno("read"))
        .await
        .unwrap();
    assert!(read.contains("entry string \"hello\""), "{read}");
    stop(p).await;
    std::fs::remove_dir_all(&data).unwrap();
}

/// "Fly.io": the image's default command (`serve`) with `DENO_KV_SQLITE_PATH` and
/// `DENO_KV_ACCESS_TOKEN` in the environment.
#[tokio::test]
async fn fly_io_environment_selects_the_reference_syntax() {
    let data = temp_dir("dropin-fly");
    let db = data.join("denokv.sqlite3");
    let p = spawn_with(
        &["serve"],
        &[
            ("DENO_KV_SQLITE_PATH", db.to_str().unwrap()),
            ("KV_CONNECT_ADDR", "127.0.0.1:0"),
        ],
    );
    let kv = client(p.addr, TOKEN).await;
    kv.set(&key!["fly"], 1.0).await.unwrap();
    assert!(db.is_file(), "DENO_KV_SQLITE_PATH was not used");
    drop(kv);
    stop(p).await;
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn reference_refusals_and_unsupported_cases_are_clear_errors() {
    let data = temp_dir("dropin-errors");
    let expect_err = |args: &[&str], envs: &[(&str, &str)], needle: &str| {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let out = run(&args, envs);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    };
    let db = data.join("x.sqlite");
    let db = db.to_str().unwrap();
    // denokv's own checks, with its messages.
    expect_err(
        &["--sqlite-path", db, "serve", "--access-token", "short"],
        &[],
        "Access token must be at minimum 12 chars long.",
    );
    expect_err(
        &[
            "--sqlite-path",
            db,
            "serve",
            "--access-token",
            TOKEN,
            "--sync-from-s3",
        ],
        &[],
        "--s3-bucket not set",
    );
    expect_err(
        &[
            "--sqlite-path",
            db,
            "serve",
            "--read-only",
            "--sync-from-s3",
        ],
        &[("DENO_KV_ACCESS_TOKEN", TOKEN)],
        "cannot be used with",
    );
    // Selected by DENO_KV_SQLITE_PATH alone, denokv's own errors are reported.
    expect_err(
        &["serve"],
        &[("DENO_KV_SQLITE_PATH", db)],
        "--sqlite-path <SQLITE_PATH> serve --access-token <ACCESS_TOKEN>",
    );
    // A flag denokv does not have is refused in its syntax, not ignored.
    expect_err(
        &[
            "--sqlite-path",
            db,
            "serve",
            "--access-token",
            TOKEN,
            "--engine",
            "redb",
        ],
        &[],
        "unexpected argument '--engine'",
    );
    // pitr list/checkout need a backup; the message says how to name one.
    expect_err(&["--sqlite-path", db, "pitr", "list"], &[], "pitr sync");
    expect_err(
        &[
            "--sqlite-path",
            db,
            "pitr",
            "checkout",
            "00000000000000010000",
        ],
        &[],
        "pitr sync",
    );
    std::fs::remove_dir_all(&data).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_replica_and_pitr_commands_follow_a_backup_in_s3() {
    if kv_test_support::s3::skip() {
        return;
    }
    let s3 = kv_test_support::s3::server();
    let bucket = kv_test_support::s3::create_bucket(s3, "kv-dropin");
    let aws = [
        ("AWS_ACCESS_KEY_ID", "test-access-key"),
        ("AWS_SECRET_ACCESS_KEY", "test-secret-key"),
        ("AWS_REGION", "us-east-1"),
    ];
    let backup_to = format!("s3://{bucket}/{README_PREFIX}");
    // The primary: denokv's command line, plus this server's continuous backup from the
    // environment (what a deployment adds after switching).
    let primary_data = temp_dir("dropin-primary");
    let mut primary_env = aws.to_vec();
    primary_env.extend([
        ("KV_CONNECT_ADDR", "127.0.0.1:0"),
        ("KV_CONNECT_BACKUP_TO", backup_to.as_str()),
        ("AWS_ENDPOINT_URL", s3.endpoint.as_str()),
    ]);
    let primary = spawn_with(
        &strs(&readme_args(README_DOCKER, &primary_data, &bucket)),
        &primary_env,
    );
    // Once the initial snapshot is shipped, every commit is a recovery point of the log.
    wait_until_shipped(primary.addr).await;
    let kv = client(primary.addr, TOKEN).await;
    let vs1 = kv.set(&key!["greeting"], "v1").await.unwrap();
    let vs2 = kv.set(&key!["greeting"], "v2").await.unwrap();
    wait_until_shipped(primary.addr).await;

    // The replica command: serves the backup's latest state, refuses writes, follows.
    let mut replica_env = aws.to_vec();
    replica_env.extend([
        ("KV_CONNECT_ADDR", "127.0.0.1:0"),
        ("DENO_KV_S3_ENDPOINT", s3.endpoint.as_str()),
    ]);
    let replica_data = temp_dir("dropin-replica");
    let replica = spawn_with(
        &strs(&readme_args(README_REPLICA, &replica_data, &bucket)),
        &replica_env,
    );
    let rkv = client(replica.addr, TOKEN).await;
    let got = rkv.get(&key!["greeting"]).await.unwrap();
    assert_eq!(got.value, Some(Value::from("v2")));
    assert_eq!(got.versionstamp, Some(vs2));
    assert!(rkv.set(&key!["greeting"], "no").await.is_err());
    kv.set(&key!["greeting"], "v3").await.unwrap();
    wait_until_shipped(primary.addr).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let got = rkv.get(&key!["greeting"]).await.unwrap();
        if got.value == Some(Value::from("v3")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replica did not follow"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    drop(rkv);
    stop(replica).await;

    // pitr sync into a fresh file restores the latest point and records the backup.
    let pitr_data = temp_dir("dropin-pitr");
    let pitr_env = [
        aws[0],
        aws[1],
        aws[2],
        ("DENO_KV_S3_ENDPOINT", s3.endpoint.as_str()),
    ];
    run_ok(
        &readme_args(README_PITR_SYNC, &pitr_data, &bucket),
        &pitr_env,
    );
    assert!(pitr_data.join("denokv.sqlite.backup-source").is_file());
    // Without the S3 settings: the recorded backup is used (as denokv keeps it in its file).
    let aws_only = [aws[0], aws[1], aws[2]];
    let listed = run_ok(
        &readme_args(README_PITR_LIST, &pitr_data, &bucket),
        &aws_only,
    );
    let points: Vec<&str> = listed
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    for vs in [vs1, vs2] {
        assert!(
            points.contains(&vs.to_string().as_str()),
            "{vs} not in {listed}"
        );
    }
    let info = run_ok(&readme_args(PITR_INFO, &pitr_data, &bucket), &aws_only);
    assert!(info.contains("Current versionstamp: "), "{info}");
    assert!(!info.contains(&vs1.to_string()), "{info}");

    // Checkout of an earlier point, then serve it: the state at that point.
    let checkout_line = README_PITR_CHECKOUT.replace("0100000002c0f4c10000", &vs1.to_string());
    let out = run_ok(&readme_args(&checkout_line, &pitr_data, &bucket), &aws_only);
    assert!(
        out.contains(&format!("Snapshot is now at versionstamp {vs1}")),
        "{out}"
    );
    let info = run_ok(&readme_args(PITR_INFO, &pitr_data, &bucket), &aws_only);
    assert!(
        info.contains(&format!("Current versionstamp: {vs1}")),
        "{info}"
    );
    let restored = spawn_with(&strs(&readme_args(README_DOCKER, &pitr_data, "")), &LOCAL);
    let pkv = client(restored.addr, TOKEN).await;
    let got = pkv.get(&key!["greeting"]).await.unwrap();
    assert_eq!(got.value, Some(Value::from("v1")));
    assert_eq!(got.versionstamp, Some(vs1));
    drop(pkv);
    stop(restored).await;

    // pitr sync on a database that exists leaves its point alone and describes the backup.
    let out = run_ok(
        &readme_args(README_PITR_SYNC, &pitr_data, &bucket),
        &pitr_env,
    );
    assert!(out.contains("Latest point: "), "{out}");
    let info = run_ok(&readme_args(PITR_INFO, &pitr_data, &bucket), &aws_only);
    assert!(
        info.contains(&format!("Current versionstamp: {vs1}")),
        "{info}"
    );

    drop(kv);
    stop(primary).await;
    for d in [primary_data, replica_data, pitr_data] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// A database file in the reference server's layout (its `kv`, `data_version` and `queue`
/// tables) holding a V8 string, a `KvU64`, bytes that expire in the future and bytes that
/// already expired; the database version is 42.
fn reference_database(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE data_version (k INTEGER PRIMARY KEY, version INTEGER NOT NULL,
                                    seq INTEGER NOT NULL DEFAULT 0);
         INSERT INTO data_version (k, version) VALUES (0, 42);
         CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB NOT NULL, v_encoding INTEGER NOT NULL,
                          version INTEGER NOT NULL, seq INTEGER NOT NULL DEFAULT 0,
                          expiration_ms INTEGER NOT NULL DEFAULT -1) WITHOUT ROWID;
         CREATE TABLE queue (ts INTEGER NOT NULL, id TEXT NOT NULL, data BLOB NOT NULL,
                             backoff_schedule TEXT NOT NULL, keys_if_undelivered BLOB NOT NULL,
                             PRIMARY KEY (ts, id));
         INSERT INTO queue VALUES (1, 'm', x'00', '[]', x'');",
    )
    .unwrap();
    let key_of = |s: &str| {
        let mut k = vec![0x02];
        k.extend_from_slice(s.as_bytes());
        k.push(0);
        k
    };
    let mut insert = conn
        .prepare(
            "INSERT INTO kv (k, v, v_encoding, version, expiration_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .unwrap();
    // V8: version 15 header, one-byte string "hello".
    let rows: [(&str, Vec<u8>, i64, i64, i64); 4] = [
        ("greeting", b"\xff\x0f\x22\x05hello".to_vec(), 1, 40, -1),
        ("counter", 7u64.to_le_bytes().to_vec(), 2, 41, -1),
        ("session", b"token".to_vec(), 3, 42, 4_102_444_800_000),
        ("stale", b"gone".to_vec(), 3, 39, 1_000),
    ];
    for (k, v, enc, version, exp) in rows {
        insert
            .execute(rusqlite::params![key_of(k), v, enc, version, exp])
            .unwrap();
    }
}

#[tokio::test]
async fn a_denokv_database_file_is_refused_then_imported_and_served() {
    let data = temp_dir("dropin-import");
    let old = data.join("denokv.sqlite");
    reference_database(&old);
    // The reference's command line on its own file: refused, with the way out.
    let out = run(&readme_args(README_DOCKER, &data, ""), &LOCAL);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("import-denokv --from"), "{err}");

    let new = data.join("kv.sqlite");
    let args: Vec<String> = [
        "import-denokv",
        "--from",
        old.to_str().unwrap(),
        "--path",
        new.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    let report = run_ok(&args, &[]);
    assert!(report.contains("Imported 4 keys"), "{report}");
    assert!(
        report.contains("at versionstamp 000000000000002a0000"),
        "{report}"
    );
    assert!(
        report.contains("1 queue messages were not imported"),
        "{report}"
    );
    // Importing twice into the same database is refused.
    let again = run(&args, &[]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    let serve = readme_args(README_DOCKER, &data, "")
        .into_iter()
        .map(|a| a.replace("denokv.sqlite", "kv.sqlite"))
        .collect::<Vec<_>>();
    let p = spawn_with(&strs(&serve), &LOCAL);
    let kv = client(p.addr, TOKEN).await;
    let vs = kv_connect_client::Versionstamp::from_version;
    let got = kv.get(&key!["greeting"]).await.unwrap();
    assert_eq!(got.value, Some(Value::from("hello")));
    assert_eq!(got.versionstamp, Some(vs(40)));
    let got = kv.get(&key!["counter"]).await.unwrap();
    assert_eq!(got.value, Some(Value::U64(7)));
    assert_eq!(got.versionstamp, Some(vs(41)));
    let got = kv.get(&key!["session"]).await.unwrap();
    assert_eq!(got.value, Some(Value::Bytes(b"token".to_vec())));
    assert_eq!(kv.get(&key!["stale"]).await.unwrap().value, None);
    // Later writes get larger versionstamps than every imported one.
    let next = kv.set(&key!["new"], "x").await.unwrap();
    assert!(next > vs(42), "{next}");
    drop(kv);
    stop(p).await;
    // The reference file is untouched.
    let conn = rusqlite::Connection::open(&old).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM kv", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 4);
    std::fs::remove_dir_all(&data).unwrap();
}
