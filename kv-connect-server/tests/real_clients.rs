//! End-to-end tests with the real clients: the Deno runtime (2.9.6, `Deno.openKv(url)`) and the
//! `@deno/kv` npm client (0.14.0, on the machine's Node), against the `kv-connect-server` binary
//! on every engine (memory, sqlite, redb, and postgres with two servers).
//!
//! Both clients run the shared scenario in `tests/js/scenario.mjs` (through `deno_scenario.ts`
//! and `node_scenario.mjs`), which prints a transcript: one JSON line per step, with values
//! described by explicit type tags and versionstamps replaced by ordinal names.
//!
//! - The Deno transcript against our server must equal the transcript of the same scenario run
//!   against Deno's own embedded database (`Deno.openKv(":memory:")`), except for the few
//!   differences the spec documents (see [`compare_with_reference`]).
//! - The Node transcript must match `tests/js/node_expected.jsonl` (exact lines; `⟨*⟩` in an
//!   expected line matches any text, used only for free-form detail in server error messages).
//! - `postgres_two_servers_with_real_clients` (issue 13): both transcripts through two
//!   `--engine postgres` servers on one database behind a round-robin balancer
//!   (`common/balancer.rs`), compared the same way.
//!
//! Smaller tests: Deno's `openKv` with a wrong token; 5,000 concurrent watches on one `Deno.Kv`; (sqlite, redb) data written by Deno
//! surviving a SIGKILL and restart of the server with its versionstamps; data written by each
//! client read identically by the other.
//!
//! The clients are installed by `scripts/install-test-clients.sh` (npm registry only; a no-op
//! when already installed). If that fails the tests fail: they are never skipped silently.
//! Actual transcripts are written to `$CARGO_TARGET_TMPDIR/real-clients/` for inspection.

mod common;

use common::balancer::Balancer;
use common::clients::{
    deno_command, js_dir, node_command, run_interop, run_with_timeout, tail, tools, ChildGuard,
    TOKEN,
};
use common::cluster::Cluster;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::Duration;

/// Upper bound for one scenario run (the scenario itself takes ~5–25 s).
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(150);
/// Upper bound for the server to print its listening line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Wildcard usable in `node_expected.jsonl`.
const WILDCARD: &str = "⟨*⟩";

fn out_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("real-clients");
    fs::create_dir_all(&dir).unwrap();
    dir
}

// --------------------------------------------------------------------------- processes

/// A running `kv-connect-server` with its own data folder (removed on drop).
struct Server {
    child: ChildGuard,
    url: String,
    dir: PathBuf,
    stderr_path: PathBuf,
    remove_dir: bool,
}

impl Server {
    /// A server with a fresh data folder, removed again on drop.
    fn start(engine: &str, label: &str) -> Server {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = out_dir().join(format!(
            "server-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Server::start_in(engine, dir, true)
    }

    /// A server on the database in `dir` (kept on drop unless `remove_dir`).
    fn start_in(engine: &str, dir: PathBuf, remove_dir: bool) -> Server {
        let stderr_path = dir.join(format!("server-{}.stderr", std::process::id()));
        let db_path = dir.join(format!("data.{engine}"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kv-connect-server"));
        cmd.args([
            "--engine",
            engine,
            "--access-token",
            TOKEN,
            "--addr",
            "127.0.0.1:0",
            "--path",
        ])
        .arg(&db_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(&stderr_path).unwrap())
        .env("RUST_LOG", "warn");
        common::clear_server_env(&mut cmd);
        let mut child = ChildGuard(cmd.spawn().expect("spawn kv-connect-server"));
        let stdout = child.0.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            // Forward the listening line, then keep draining stdout.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("kv-connect-server listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let url = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.0.kill();
                let _ = child.0.wait();
                panic!(
                    "kv-connect-server --engine {engine} did not print its listening line; stderr:\n{}",
                    fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
        };
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "unexpected listening URL {url}"
        );
        Server {
            child,
            url,
            dir,
            stderr_path,
            remove_dir,
        }
    }

    fn stderr_tail(&self) -> String {
        let text = fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        if self.remove_dir {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

// -------------------------------------------------------------------------- transcripts

/// One transcript line: step name and the whole JSON line.
type Line = (String, String);

/// Runs a scenario and parses its transcript; panics with the process output if it did not
/// finish cleanly. The raw transcript is saved as `<label>.jsonl` in the output folder.
fn run_scenario(cmd: Command, label: &str) -> Vec<Line> {
    let out = run_with_timeout(cmd, SCENARIO_TIMEOUT);
    let path = out_dir().join(format!("{label}.jsonl"));
    fs::write(&path, &out.stdout).unwrap();
    fs::write(out_dir().join(format!("{label}.stderr")), &out.stderr).unwrap();
    let ok = out.status.map(|s| s.success()).unwrap_or(false);
    assert!(
        ok,
        "{label}: scenario {} after {:?} (transcript so far: {}).\nstderr:\n{}",
        match out.status {
            Some(s) => format!("exited with {s}"),
            None => format!("timed out (killed after {SCENARIO_TIMEOUT:?})"),
        },
        out.elapsed,
        path.display(),
        tail(&out.stderr, 4000)
    );
    parse_transcript(&out.stdout)
        .unwrap_or_else(|e| panic!("{label}: bad transcript ({}): {e}", path.display()))
}

fn parse_transcript(text: &str) -> Result<Vec<Line>, String> {
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let rest = line
            .strip_prefix("{\"step\":\"")
            .ok_or_else(|| format!("line {}: not a step line: {}", i + 1, tail(line, 200)))?;
        let end = rest
            .find("\",\"result\":")
            .ok_or_else(|| format!("line {}: no result: {}", i + 1, tail(line, 200)))?;
        lines.push((rest[..end].to_string(), line.to_string()));
    }
    if lines.is_empty() {
        return Err("empty transcript".into());
    }
    Ok(lines)
}

/// Shows where two lines first differ.
fn explain_difference(expected: &str, actual: &str) -> String {
    let pos = expected
        .char_indices()
        .zip(actual.chars())
        .find(|((_, a), b)| a != b)
        .map(|((i, _), _)| i)
        .unwrap_or_else(|| expected.len().min(actual.len()));
    let window = |s: &str| {
        let mut from = pos.saturating_sub(150);
        while from > 0 && !s.is_char_boundary(from) {
            from -= 1;
        }
        let mut to = (pos + 250).min(s.len());
        while to < s.len() && !s.is_char_boundary(to) {
            to += 1;
        }
        s.get(from..to).unwrap_or(s).to_string()
    };
    format!(
        "    first difference at byte {pos}\n    expected: …{}…\n    actual:   …{}…",
        window(expected),
        window(actual)
    )
}

/// The transcript of the Deno scenario against Deno's own embedded database (computed once).
fn deno_reference() -> &'static [Line] {
    static REF: OnceLock<Vec<Line>> = OnceLock::new();
    REF.get_or_init(|| {
        let lines = run_scenario(
            deno_command("deno_scenario.ts", ":memory:"),
            "deno-reference-memory",
        );
        assert!(
            lines.len() > 100,
            "reference transcript too short ({} steps)",
            lines.len()
        );
        lines
    })
}

// ---------------------------------------------------------------------------- comparing

/// Removes every `,"kvConnect":{"status":N,"url":"..."}` object (how the scenario records the
/// KV Connect wrapper Deno puts around a 4xx response body) and returns the statuses found.
fn strip_kv_connect(line: &str) -> (String, Vec<String>) {
    const MARK: &str = ",\"kvConnect\":{\"status\":";
    let mut out = String::new();
    let mut statuses = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find(MARK) {
        out.push_str(&rest[..i]);
        let after = &rest[i + MARK.len()..];
        let status: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
        statuses.push(status);
        // The object holds a number and a URL without braces or quotes inside; skip to its `}`.
        match after.find('}') {
            Some(j) => rest = &after[j + 1..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    (out, statuses)
}

/// What our server must show for the steps whose result depends on expiry being enforced at
/// read time. semantics.md §5: expired keys may stay visible until a sweep in Deno's local
/// database (it did not sweep within these seconds when this test was written), while our
/// server hides them from reads and checks alike, as the spec allows ("reads and checks must
/// agree"). Keys `a` and `b` were set with `expireIn: 3000`; `c` (overwritten without expiry),
/// `keep` (no expiry) and `s` (a `sum` clears the expiry, semantics.md §4) must survive.
fn expiry_expectation(step: &str) -> Option<&'static str> {
    Some(match step {
        "expiry.gone.after_expiry" => {
            r#"{"step":"expiry.gone.after_expiry","result":{"goneEarly":false,"goneWithin5sAfterExpiry":true}}"#
        }
        "expiry.gone.listed" => {
            r#"{"step":"expiry.gone.listed","result":[[{"t":"string","v":"exp"},{"t":"string","v":"c"}],[{"t":"string","v":"exp"},{"t":"string","v":"keep"}],[{"t":"string","v":"exp"},{"t":"string","v":"s"}]]}"#
        }
        "expiry.gone.check_absent" => {
            r#"{"step":"expiry.gone.check_absent","result":{"ok":true,"fresh":true}}"#
        }
        _ => return None,
    })
}

/// Compares the Deno transcript against our server with the reference transcript from Deno's
/// embedded database. Returns one message per problem.
///
/// Documented differences handled here (and nowhere else):
/// 1. A 4xx from a KV Connect server reaches Deno code as a plain `Error` whose message is
///    `KV Connect failed to call '<url>' (status=<code> <reason>): <body>` (kv-connect.md §3.2),
///    where the embedded database throws a `TypeError` with the message alone. The scenario
///    splits the wrapper into a `kvConnect` field; here the status must be 4xx and the rest
///    (the body) must equal the embedded database's message.
/// 2. `atomic.all_or_nothing.state`: Deno's embedded database (denokv_sqlite) keeps the earlier
///    mutations of a write whose later `sum` fails; semantics.md §3 requires all-or-nothing, so
///    our server must show the key as absent.
/// 3. `expiry.gone.*`: see [`expiry_expectation`].
fn compare_with_reference(reference: &[Line], actual: &[Line]) -> Vec<String> {
    let mut problems = Vec::new();
    let ref_steps: Vec<&str> = reference.iter().map(|(s, _)| s.as_str()).collect();
    let act_steps: Vec<&str> = actual.iter().map(|(s, _)| s.as_str()).collect();
    if ref_steps != act_steps {
        problems.push(format!(
            "step lists differ:\n  reference: {ref_steps:?}\n  actual:    {act_steps:?}"
        ));
    }
    for (step, actual_line) in actual {
        let Some((_, ref_line)) = reference.iter().find(|(s, _)| s == step) else {
            continue;
        };
        if let Some(expected) = expiry_expectation(step) {
            if actual_line != expected {
                problems.push(format!(
                    "{step}: expired keys must be hidden (semantics.md §5)\n{}",
                    explain_difference(expected, actual_line)
                ));
            }
            continue;
        }
        let (stripped, statuses) = strip_kv_connect(actual_line);
        let mut expected = ref_line.clone();
        if !statuses.is_empty() {
            if let Some(bad) = statuses
                .iter()
                .find(|s| !s.starts_with('4') || s.len() != 3)
            {
                problems.push(format!("{step}: the server answered HTTP {bad}; deterministic failures must be 4xx (kv-connect.md §3.2)"));
            }
            expected = expected.replace(
                r#"{"error":{"name":"TypeError","class":"TypeError","#,
                r#"{"error":{"name":"Error","class":"Error","#,
            );
        }
        if step == "atomic.all_or_nothing.state" {
            expected = expected.replace(
                r#""a":{"t":"string","v":"must not be applied"}"#,
                r#""a":{"t":"null"}"#,
            );
        }
        if stripped != expected {
            problems.push(format!(
                "{step}: differs from Deno's embedded database\n{}",
                explain_difference(&expected, &stripped)
            ));
        }
    }
    problems
}

/// `pattern` with `⟨*⟩` wildcards matching any (possibly empty) text.
fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split(WILDCARD).collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first)
        || !text[first.len()..].ends_with(last)
        || text.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

fn node_expected() -> Vec<Line> {
    let path = js_dir().join("node_expected.jsonl");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    parse_transcript(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn compare_with_expected(expected: &[Line], actual: &[Line]) -> Vec<String> {
    let mut problems = Vec::new();
    let exp_steps: Vec<&str> = expected.iter().map(|(s, _)| s.as_str()).collect();
    let act_steps: Vec<&str> = actual.iter().map(|(s, _)| s.as_str()).collect();
    if exp_steps != act_steps {
        problems.push(format!(
            "step lists differ:\n  expected: {exp_steps:?}\n  actual:   {act_steps:?}"
        ));
    }
    for (step, actual_line) in actual {
        let Some((_, exp_line)) = expected.iter().find(|(s, _)| s == step) else {
            continue;
        };
        if !glob_match(exp_line, actual_line) {
            problems.push(format!(
                "{step}: differs from node_expected.jsonl\n{}",
                explain_difference(exp_line, actual_line)
            ));
        }
    }
    problems
}

// -------------------------------------------------------------------------------- tests

/// Where a scenario runs: the URL the client opens, and the server log to show on failure.
trait Target {
    fn url(&self) -> String;
    fn log_tail(&self) -> String;
}

impl Target for Server {
    fn url(&self) -> String {
        self.url.clone()
    }
    fn log_tail(&self) -> String {
        self.stderr_tail()
    }
}

/// Two `--engine postgres` servers on one fresh schema behind a round-robin balancer.
struct Balanced {
    cluster: Cluster,
    balancer: Balancer,
}

impl Balanced {
    fn start(tag: &str) -> Balanced {
        let cluster = Cluster::start(2, tag, &[]);
        let balancer = Balancer::start(cluster.addrs.clone());
        Balanced { cluster, balancer }
    }
}

impl Target for Balanced {
    fn url(&self) -> String {
        self.balancer.url()
    }
    fn log_tail(&self) -> String {
        format!(
            "requests per server: {:?}\n{}",
            self.balancer.served(),
            self.cluster.stderr_tails()
        )
    }
}

fn run_engine(engine: &str) {
    run_clients(
        &format!("kv-connect-server --engine {engine}"),
        engine,
        |label| Server::start(engine, label),
    );
}

/// Runs both scenarios, each against its own target from `start` (`what` names it in the
/// report, `tag` in the transcript file names), and compares their transcripts with the
/// reference and the expected lines. Returns the targets (their servers still running).
fn run_clients<T: Target + Send>(
    what: &str,
    tag: &str,
    start: impl Fn(&str) -> T + Sync,
) -> (T, T) {
    tools();
    // Both clients run at the same time, each against its own server and database.
    let (deno, node) = thread::scope(|s| {
        // The reference run (once per test process) overlaps with the first clients' runs.
        s.spawn(deno_reference);
        let deno = s.spawn(|| {
            let target = start(&format!("{tag}-deno"));
            let lines = run_scenario_with_server_log(
                deno_command("deno_scenario.ts", &target.url()),
                &format!("deno-{tag}"),
                &target,
            );
            (lines, target)
        });
        let node = s.spawn(|| {
            let target = start(&format!("{tag}-node"));
            let lines = run_scenario_with_server_log(
                node_command("node_scenario.mjs", &target.url()),
                &format!("node-{tag}"),
                &target,
            );
            (lines, target)
        });
        (deno.join(), node.join())
    });
    let (deno_lines, deno_target) = deno.unwrap_or_else(|e| std::panic::resume_unwind(e));
    let (node_lines, node_target) = node.unwrap_or_else(|e| std::panic::resume_unwind(e));

    let mut report = String::new();
    let deno_problems = compare_with_reference(deno_reference(), &deno_lines);
    if !deno_problems.is_empty() {
        report.push_str(&format!(
            "\n=== Deno 2.9.6 against {what}: {} problem(s) (transcripts in {}: deno-{tag}.jsonl vs deno-reference-memory.jsonl)\n{}\n--- server log tail:\n{}\n",
            deno_problems.len(),
            out_dir().display(),
            deno_problems.join("\n"),
            deno_target.log_tail()
        ));
    }
    let node_problems = compare_with_expected(&node_expected(), &node_lines);
    if !node_problems.is_empty() {
        report.push_str(&format!(
            "\n=== @deno/kv 0.14.0 (Node) against {what}: {} problem(s) (transcript in {}: node-{tag}.jsonl)\n{}\n--- server log tail:\n{}\n",
            node_problems.len(),
            out_dir().display(),
            node_problems.join("\n"),
            node_target.log_tail()
        ));
    }
    assert!(report.is_empty(), "{report}");
    (deno_target, node_target)
}

fn run_scenario_with_server_log(cmd: Command, label: &str, target: &dyn Target) -> Vec<Line> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_scenario(cmd, label))) {
        Ok(lines) => lines,
        Err(e) => {
            eprintln!("--- {label}: server log tail:\n{}", target.log_tail());
            std::panic::resume_unwind(e)
        }
    }
}

#[test]
fn memory_engine_with_real_clients() {
    run_engine("memory");
}

#[test]
fn sqlite_engine_with_real_clients() {
    run_engine("sqlite");
}

#[test]
fn redb_engine_with_real_clients() {
    run_engine("redb");
}

/// Issue 13: the same transcripts through two servers on one PostgreSQL database behind a
/// round-robin balancer (each client on its own fresh schema, since the scenarios write fixed
/// keys): requests alternate between the servers, so writes, reads, lists and watches of one
/// client cross servers all the time. The transcripts must equal the single-server ones.
#[test]
fn postgres_two_servers_with_real_clients() {
    let (deno, node) = run_clients(
        "two kv-connect-servers --engine postgres behind a round-robin balancer",
        "postgres-2-servers",
        Balanced::start,
    );
    for (client, target) in [("Deno", deno), ("Node", node)] {
        let served = target.balancer.served();
        eprintln!("{client}: requests per server {served:?}");
        assert!(
            served.iter().all(|&n| n > 10),
            "{client}: requests per server {served:?}: both servers must have served the scenario"
        );
    }
}

/// Deno's view of metadata-exchange failures (kv-connect.md §2.5): `Deno.openKv` itself rejects,
/// with the server's 401 text, and a right token still works afterwards.
#[test]
fn deno_open_with_wrong_token_fails_clearly() {
    tools();
    let server = Server::start("memory", "memory-deno-auth");
    let run = |token: &str| {
        let mut cmd = deno_command("deno_open_error.ts", &server.url);
        cmd.env("DENO_KV_ACCESS_TOKEN", token);
        let out = run_with_timeout(cmd, Duration::from_secs(60));
        assert_eq!(
            out.status.map(|s| s.success()),
            Some(true),
            "deno_open_error.ts failed: {}",
            tail(&out.stderr, 3000)
        );
        out.stdout.trim().to_string()
    };
    let wrong = run("definitely-not-the-token");
    assert!(
        wrong.starts_with(r#"{"error":{"name":"#) && wrong.contains("401") && wrong.contains("Invalid access token"),
        "Deno with a wrong token should fail at openKv with the server's 401 text, got {wrong}\nserver log:\n{}",
        server.stderr_tail()
    );
    assert_eq!(
        run(TOKEN),
        r#"{"ok":true}"#,
        "server log:\n{}",
        server.stderr_tail()
    );
}

/// Acknowledged writes survive a crash (SIGKILL) and restart of the server, with their
/// versionstamps, and versionstamps keep increasing after the restart.
fn persistence_across_restart(engine: &str) {
    tools();
    let dir = out_dir().join(format!("persist-{engine}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let run = |server: &Server, mode: &str| -> Vec<String> {
        let mut cmd = deno_command("deno_persist.ts", &server.url);
        cmd.arg(mode);
        let out = run_with_timeout(cmd, Duration::from_secs(60));
        assert_eq!(
            out.status.map(|s| s.success()),
            Some(true),
            "deno_persist.ts {mode} failed: {}\nserver log:\n{}",
            tail(&out.stderr, 3000),
            server.stderr_tail()
        );
        out.stdout.lines().map(str::to_string).collect()
    };
    let written = {
        let server = Server::start_in(engine, dir.clone(), false);
        run(&server, "write")
        // dropped here: SIGKILL, no graceful shutdown
    };
    let value_of = |prefix: &str| -> Vec<String> {
        written
            .iter()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(str::to_string)
            .collect()
    };
    let commits = value_of("commit ");
    let last = value_of("last ");
    assert_eq!(
        (commits.len(), last.len()),
        (3, 1),
        "unexpected write output: {written:?}"
    );
    let server = Server::start_in(engine, dir.clone(), true);
    let read = run(&server, "read");
    let (c0, c1, c2) = (&commits[0], &commits[1], &commits[2]);
    let expected_entries = vec![
        format!("entry bytes bytes(1,2,3) {c1}"),
        format!(r#"entry object {{"a":[1,"2n","1970-01-01T00:00:00.000Z"]}} {c2}"#),
        format!(r#"entry stamped/{c2} "s" {c2}"#),
        format!(r#"entry string "hello" {c0}"#),
        format!("entry u64 KvU64(42) {c2}"),
    ];
    let entries: Vec<String> = read
        .iter()
        .filter(|l| l.starts_with("entry "))
        .cloned()
        .collect();
    assert_eq!(
        entries, expected_entries,
        "{engine}: data after a crash and restart differs"
    );
    let next = read
        .iter()
        .find_map(|l| l.strip_prefix("next "))
        .expect("next line");
    assert!(
        next.len() == 20 && next > last[0].as_str(),
        "{engine}: versionstamp after restart ({next}) must be greater than before ({})",
        last[0]
    );
}

#[test]
fn sqlite_data_survives_server_crash() {
    persistence_across_restart("sqlite");
}

#[test]
fn redb_data_survives_server_crash() {
    persistence_across_restart("redb");
}

/// Data written by one client is read identically by the other through the server (keys of
/// every part type, V8/bytes/U64 values, versionstamps), on the sqlite engine.
///
/// Client limitation recorded here: `@deno/kv` 0.14.0 on Node 20 cannot decode V8 values written
/// by Deno 2.9.6 (V8 serialization format 16, semantics.md §2.1) with its default decoder; the
/// Node side therefore reads with a decoder that rewrites the format byte (see `interop.mjs`).
#[test]
fn deno_and_node_read_each_others_data() {
    tools();
    let server = Server::start("sqlite", "sqlite-interop");
    let run = |client: &str, mode: &str, prefix: &str| -> Vec<String> {
        run_interop(client, &server.url, mode, prefix, || {
            format!("server log:\n{}", server.stderr_tail())
        })
    };
    assert_eq!(
        run("deno", "write", "fromdeno"),
        vec![r#"{"written":true}"#]
    );
    assert_eq!(
        run("node", "write", "fromnode"),
        vec![r#"{"written":true}"#]
    );
    for prefix in ["fromdeno", "fromnode"] {
        let by_deno = run("deno", "read", prefix);
        let mut by_node = run("node", "read", prefix);
        let default_decoder = by_node.remove(0);
        let expected_default = if prefix == "fromdeno" {
            r#"{"defaultDecoder":{"error":{"name":"Error","class":"Error","message":"Unable to deserialize cloned data due to invalid or unsupported version."}}}"#
        } else {
            r#"{"defaultDecoder":"ok"}"#
        };
        assert_eq!(
            default_decoder, expected_default,
            "{prefix}: @deno/kv default decoder"
        );
        assert_eq!(
            by_deno.len(),
            15,
            "{prefix}: entries seen by Deno: {by_deno:#?}"
        );
        assert_eq!(
            by_deno, by_node,
            "{prefix}: Deno and Node see different data"
        );
    }
    // Both clients wrote the same logical data.
    let normalise = |lines: Vec<String>, prefix: &str| -> Vec<String> {
        lines
            .into_iter()
            .map(|l| {
                let l = l.replacen(prefix, "P", 1);
                match l.find(r#","versionstamp":""#) {
                    Some(i) => l[..i].to_string(),
                    None => l,
                }
            })
            .collect()
    };
    assert_eq!(
        normalise(run("deno", "read", "fromdeno"), "fromdeno"),
        normalise(run("deno", "read", "fromnode"), "fromnode"),
        "values written by Deno and by Node differ"
    );
}

/// Deno carries every `watch()` of one `Deno.Kv` as a stream of one HTTP/2 connection: 5,000
/// concurrent watches all deliver their first value, and a write to every 100th key reaches
/// exactly those streams (`deno_many_watches.ts`). With hyper's default stream limit (200)
/// the script hung after opening its 200th watch.
#[test]
fn deno_keeps_five_thousand_watches_on_one_connection() {
    tools();
    let server = Server::start("sqlite", "sqlite-many-watches");
    let mut cmd = deno_command("deno_many_watches.ts", &server.url);
    cmd.args(["5000", "100"]);
    let out = run_with_timeout(cmd, Duration::from_secs(120));
    assert_eq!(
        out.status.map(|s| s.success()),
        Some(true),
        "deno_many_watches.ts failed after {:?}: {}\nserver log:\n{}",
        out.elapsed,
        tail(&out.stderr, 3000),
        server.stderr_tail()
    );
    assert_eq!(
        out.stdout.trim(),
        r#"{"watches":5000,"initial":5000,"changed":50,"notified":50,"spurious":0}"#
    );
}

#[test]
fn comparison_helpers() {
    assert!(glob_match("abc", "abc"));
    assert!(!glob_match("abc", "abd"));
    assert!(glob_match("a⟨*⟩c", "abbbc"));
    assert!(glob_match("a⟨*⟩c", "ac"));
    assert!(!glob_match("a⟨*⟩c", "ab"));
    assert!(glob_match("a⟨*⟩b⟨*⟩c", "a1b2c"));
    assert!(!glob_match("a⟨*⟩b⟨*⟩c", "a1c"));
    assert!(!glob_match("ab⟨*⟩bc", "abc"));
    let (s, st) = strip_kv_connect(
        r#"{"error":{"name":"Error","message":"x","kvConnect":{"status":400,"url":"<URL>/v2/atomic_write"}}}"#,
    );
    assert_eq!(s, r#"{"error":{"name":"Error","message":"x"}}"#);
    assert_eq!(st, vec!["400".to_string()]);
    let reference = vec![(
        "a".to_string(),
        r#"{"step":"a","result":{"error":{"name":"TypeError","class":"TypeError","message":"m"}}}"#
            .to_string(),
    )];
    let ok = vec![("a".to_string(), r#"{"step":"a","result":{"error":{"name":"Error","class":"Error","message":"m","kvConnect":{"status":400,"url":"u"}}}}"#.to_string())];
    assert!(compare_with_reference(&reference, &ok).is_empty());
    let server_error = vec![("a".to_string(), r#"{"step":"a","result":{"error":{"name":"Error","class":"Error","message":"m","kvConnect":{"status":500,"url":"u"}}}}"#.to_string())];
    assert_eq!(compare_with_reference(&reference, &server_error).len(), 1);
    let other_message = vec![("a".to_string(), r#"{"step":"a","result":{"error":{"name":"Error","class":"Error","message":"n","kvConnect":{"status":400,"url":"u"}}}}"#.to_string())];
    assert_eq!(compare_with_reference(&reference, &other_message).len(), 1);
}
