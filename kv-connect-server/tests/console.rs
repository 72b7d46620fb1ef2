//! The web console in a real browser: the server binary with `--console`, data written by the
//! real Deno 2.9.6 client, and Debian's Chromium driven by `playwright-core` through
//! `tests/js/console_browser.mjs`: sign in, browse a prefix (typed parts, two pages), open a
//! nested value as a tree, edit with a conflict (another client writes between open and save:
//! the conflict is shown and nothing is overwritten), save, create and delete an entry, a new
//! key's parts dropped once another entry is opened, see a watch update arrive, queue counts
//! and dead letters, the backup's recovery points (the server runs with
//! `--backup-to` a local folder), phone width, sign out.
//!
//! With many databases (`--data-dir`), `tests/js/console_picker.mjs`: the database picker lists
//! every database for the access token and only its own for a bound admin token, and picking
//! one shows its data only.
//!
//! Chromium and `playwright-core` are installed by `scripts/install-browser.sh`, Deno and
//! `@deno/kv` by `scripts/install-test-clients.sh`; if either fails the test fails (never
//! skipped). The screenshots are kept in `target/test-artifacts/console/*.png`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::clients::{deno_command, node_command, run_with_timeout, tail, tools, TOKEN};

/// Upper bound of the browser script (it takes a few seconds).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(180);

/// Where the screenshots are kept: `<target>/test-artifacts/console`.
fn artifacts_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent()
        .unwrap_or(&tmp)
        .join("test-artifacts")
        .join("console")
}

#[test]
fn the_console_works_in_a_real_browser() {
    let browser = kv_test_support::browser::browser().unwrap_or_else(|e| panic!("{e}"));
    let _ = tools();
    let backup = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("console-backup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&backup);
    std::fs::create_dir_all(&backup).unwrap();
    let backup_arg = backup.to_str().unwrap().to_string();
    let server = common::spawn(&[
        "--engine",
        "memory",
        "--console",
        "--addr",
        "127.0.0.1:0",
        "--access-token",
        TOKEN,
        "--backup-to",
        &backup_arg,
    ]);
    let url = format!("http://{}", server.addr);

    let seed = run_with_timeout(
        deno_command("console_seed.mjs", &url),
        Duration::from_secs(60),
    );
    assert_eq!(
        seed.status.map(|s| s.success()),
        Some(true),
        "seeding with Deno failed: {}",
        tail(&seed.stderr, 3000)
    );
    assert!(seed.stdout.contains(r#"{"seeded":35}"#), "{}", seed.stdout);

    let artifacts = artifacts_dir();
    let _ = std::fs::remove_dir_all(&artifacts);
    let mut cmd = node_command("console_browser.mjs", &url);
    cmd.env("PLAYWRIGHT_CORE", &browser.playwright_core)
        .env("CHROMIUM", &browser.chromium)
        .env("CONSOLE_ARTIFACTS", &artifacts);
    let run = run_with_timeout(cmd, BROWSER_TIMEOUT);
    println!("{}", run.stdout);
    assert_eq!(
        run.status.map(|s| s.success()),
        Some(true),
        "the browser test failed after {:?} (screenshots in {}):\nstdout:\n{}\nstderr:\n{}",
        run.elapsed,
        artifacts.display(),
        tail(&run.stdout, 3000),
        tail(&run.stderr, 5000)
    );
    for name in [
        "01-sign-in",
        "02-browse",
        "03-value-tree",
        "04-conflict",
        "05-watch",
        "06-status",
        "07-phone-browse",
        "08-phone-entry",
    ] {
        let path = artifacts.join(format!("{name}.png"));
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert!(
            bytes.starts_with(b"\x89PNG"),
            "{} is missing or not a PNG",
            path.display()
        );
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&backup);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_picks_among_many_databases_in_a_real_browser() {
    use common::{key, set, write_of};
    let browser = kv_test_support::browser::browser().unwrap_or_else(|e| panic!("{e}"));
    let _ = tools();
    let server = common::multidb::DirServer::start("console-picker", &["--console"]);
    for name in ["alpha", "beta"] {
        server.create_db(name).await;
        let kv = common::multidb::connect(&server.url(&format!("/db/{name}")), common::TOKEN).await;
        let out = kv
            .write(&write_of(vec![set(&key(&format!("only-in-{name}")), b"1")]))
            .await;
        assert_eq!(
            out.status,
            kv_proto::pb::AtomicWriteStatus::AwSuccess as i32
        );
    }
    let (bound, _) = server
        .create_token("alpha-admin", "admin", Some("alpha"))
        .await;
    // Beside the other test's folder, which that test empties when it starts.
    let artifacts = artifacts_dir().with_file_name("console-picker");
    let mut cmd = node_command("console_picker.mjs", &server.url(""));
    cmd.env("DENO_KV_ACCESS_TOKEN", common::TOKEN)
        .env("CONSOLE_BOUND_TOKEN", &bound)
        .env("PLAYWRIGHT_CORE", &browser.playwright_core)
        .env("CHROMIUM", &browser.chromium)
        .env("CONSOLE_ARTIFACTS", &artifacts);
    let run = tokio::task::spawn_blocking(move || run_with_timeout(cmd, BROWSER_TIMEOUT))
        .await
        .unwrap();
    println!("{}", run.stdout);
    assert_eq!(
        run.status.map(|s| s.success()),
        Some(true),
        "the picker browser test failed after {:?} (screenshots in {}):\nstdout:\n{}\nstderr:\n{}",
        run.elapsed,
        artifacts.display(),
        tail(&run.stdout, 3000),
        tail(&run.stderr, 5000)
    );
}
