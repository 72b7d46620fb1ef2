//! The `kv-connect-server` binary: CLI, the listening line, engines, persistence, SIGTERM.

mod common;

use std::process::Command;

use common::*;

async fn kv_at(addr: std::net::SocketAddr) -> Kv {
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
    Kv {
        proto: Proto::H2c,
        base: format!("http://{addr}/v2"),
        token: json["token"].as_str().unwrap().into(),
        database_id: json["databaseId"].as_str().unwrap().into(),
    }
}

#[test]
fn help_explains_every_option() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for opt in [
        "--engine",
        "--path",
        "--access-token",
        "--addr",
        "--tls-cert",
        "--tls-key",
        "--read-only",
        "--database-id",
        "--token-ttl-secs",
        "--shutdown-timeout-secs",
        "DENO_KV_ACCESS_TOKEN",
        "RUST_LOG",
    ] {
        assert!(help.contains(opt), "--help lacks {opt}:\n{help}");
    }
}

#[test]
fn missing_token_is_an_error() {
    let out = Command::new(BIN)
        .env_remove("DENO_KV_ACCESS_TOKEN")
        .args(["--engine", "memory"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("access-token"));
}

#[tokio::test]
async fn memory_engine_serves_and_exits_cleanly_on_sigterm() {
    let p = spawn(&["--engine", "memory", "--addr", "127.0.0.1:0"]);
    let kv = kv_at(p.addr).await;
    assert_eq!(
        kv.write(&write_of(vec![set(&key("a"), b"1")])).await.status,
        1
    );
    assert_eq!(kv.get(&key("a")).await.unwrap().value, b"1");
    let status = tokio::task::spawn_blocking(move || p.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[cfg(any(feature = "sqlite", feature = "redb"))]
async fn persists_across_restart(engine: &str) {
    let dir = std::env::temp_dir().join(format!(
        "kvcs-bin-{engine}-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("data.db");
    let path = path.to_str().unwrap();
    let p = spawn(&["--engine", engine, "--path", path, "--addr", "127.0.0.1:0"]);
    let kv = kv_at(p.addr).await;
    assert_eq!(
        kv.write(&write_of(vec![set(&key("p"), b"kept")]))
            .await
            .status,
        1
    );
    assert!(tokio::task::spawn_blocking(move || p.terminate())
        .await
        .unwrap()
        .success());
    let p = spawn(&["--engine", engine, "--path", path, "--addr", "127.0.0.1:0"]);
    // The old token and database id still work after the restart.
    let old = Kv {
        base: format!("http://{}/v2", p.addr),
        ..kv
    };
    assert_eq!(old.get(&key("p")).await.unwrap().value, b"kept");
    assert!(tokio::task::spawn_blocking(move || p.terminate())
        .await
        .unwrap()
        .success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_engine_persists_across_restart() {
    persists_across_restart("sqlite").await;
}

#[cfg(feature = "redb")]
#[tokio::test]
async fn redb_engine_persists_across_restart() {
    persists_across_restart("redb").await;
}

#[test]
fn read_only_flag_is_accepted() {
    let p = spawn(&["--engine", "memory", "--addr", "127.0.0.1:0", "--read-only"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let kv = kv_at(p.addr).await;
        let out = kv.write(&write_of(vec![set(&key("a"), b"1")])).await;
        assert_eq!(
            out.status,
            kv_proto::pb::AtomicWriteStatus::AwWriteDisabled as i32
        );
    });
    assert!(p.terminate().success());
}
