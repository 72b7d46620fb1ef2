//! `kv-connect-server data …`, run as the binary: set/get/list/delete/watch on a database file
//! and against a running server, export → import into a fresh database (keys, values,
//! versionstamp order and grouping, expiry), and bad input (an unparsable key, a value over
//! the limit, a broken import line, an existing key) failing with its line and writing
//! nothing.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{spawn, BIN, TOKEN};
use serde_json::{json, Value};

/// Where a command points: a database file, or a server URL.
#[derive(Clone)]
enum At {
    File(PathBuf),
    Url(String),
}

impl At {
    fn args(&self) -> Vec<String> {
        match self {
            At::File(p) => vec![
                "--engine".into(),
                "sqlite".into(),
                "--path".into(),
                p.display().to_string(),
            ],
            At::Url(u) => vec!["--url".into(), u.clone()],
        }
    }
}

fn data(at: &At, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("data")
        .args(args)
        .args(at.args())
        .env("DENO_KV_ACCESS_TOKEN", TOKEN)
        .env("RUST_LOG", "error")
        .env_remove("KV_CONNECT_ENGINE")
        .env_remove("KV_CONNECT_PATH")
        .env_remove("KV_DATA_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// Runs a command that must succeed; its stdout as JSON lines.
fn ok(at: &At, args: &[&str]) -> Vec<Value> {
    ok_stdin(at, args, None)
}

fn ok_stdin(at: &At, args: &[&str], stdin: Option<&str>) -> Vec<Value> {
    let out = data(at, args, stdin);
    assert!(
        out.status.success(),
        "data {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// Runs a command that must fail; its stderr.
fn fails(at: &At, args: &[&str], stdin: Option<&str>) -> String {
    let out = data(at, args, stdin);
    assert!(!out.status.success(), "data {args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "kvcs-data-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// set, get, list (prefix, start/end, limit, reverse), delete, checks.
fn crud(at: &At) {
    let vs1 = ok(
        at,
        &[
            "set",
            r#"["users", 1]"#,
            r#"{"name": "Ada", "born": {"$date": "1815-12-10T00:00:00.000Z"}, "tags": {"$set": ["math"]}}"#,
        ],
    )[0]["versionstamp"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(at, &["set", r#"["users", 2]"#, r#"{"$u64": "7"}"#]);
    ok(at, &["set", r#"["users", {"$bigint": "3"}]"#, r#""three""#]);
    ok(at, &["set", r#"["other"]"#, r#"{"$bytes": "AAEC"}"#]);

    let got = ok(at, &["get", r#"["users", 1]"#, "--tree"]);
    assert_eq!(
        got[0]["value"],
        json!({"name": "Ada", "born": {"$date": "1815-12-10T00:00:00.000Z"}, "tags": {"$set": ["math"]}})
    );
    assert_eq!(got[0]["versionstamp"], json!(vs1));
    assert_eq!(got[0]["tree"]["type"], "object");
    let missing = ok(at, &["get", r#"["users", 99]"#]);
    assert_eq!(missing[0]["versionstamp"], Value::Null);

    let keys = |lines: Vec<Value>| lines.iter().map(|l| l["key"].clone()).collect::<Vec<_>>();
    // Key order: bigints sort before numbers.
    assert_eq!(
        keys(ok(at, &["list", "--prefix", r#"["users"]"#])),
        vec![
            json!(["users", {"$bigint": "3"}]),
            json!(["users", 1]),
            json!(["users", 2])
        ]
    );
    assert_eq!(
        keys(ok(
            at,
            &[
                "list",
                "--prefix",
                r#"["users"]"#,
                "--reverse",
                "--limit",
                "2"
            ]
        )),
        vec![json!(["users", 2]), json!(["users", 1])]
    );
    assert_eq!(
        keys(ok(
            at,
            &[
                "list",
                "--start",
                r#"["users", 2]"#,
                "--end",
                r#"["users", 3]"#
            ]
        )),
        vec![json!(["users", 2])]
    );
    assert_eq!(ok(at, &["list"]).len(), 4);

    // Checks: --if-absent on an existing key, a stale --if-versionstamp.
    let err = fails(at, &["set", r#"["users", 2]"#, "1", "--if-absent"], None);
    assert!(err.contains("check failed"), "{err}");
    let err = fails(
        at,
        &[
            "set",
            r#"["users", 1]"#,
            "1",
            "--if-versionstamp",
            "00000000000000000001",
        ],
        None,
    );
    assert!(err.contains("versionstamp changed"), "{err}");
    ok(
        at,
        &["set", r#"["users", 1]"#, "2", "--if-versionstamp", &vs1],
    );

    // A value from stdin.
    ok_stdin(
        at,
        &["set", r#"["stdin"]"#, "-"],
        Some(r#"{"$map": [[1, "one"]]}"#),
    );
    assert_eq!(
        ok(at, &["get", r#"["stdin"]"#])[0]["value"],
        json!({"$map": [[1, "one"]]})
    );

    ok(at, &["delete", r#"["users", 2]"#]);
    assert_eq!(ok(at, &["get", r#"["users", 2]"#])[0]["value"], Value::Null);
}

#[test]
fn crud_on_a_database_file() {
    let dir = temp_dir("crud");
    crud(&At::File(dir.join("db.sqlite")));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn crud_and_watch_against_a_running_server() {
    let server = spawn(&["--engine", "memory", "--addr", "127.0.0.1:0"]);
    let at = At::Url(format!("http://{}", server.addr));
    crud(&at);

    // watch: the first notification reports the current value, then every change.
    let mut watch = Command::new(BIN)
        .args(["data", "watch", r#"["w"]"#, "--count", "3"])
        .args(at.args())
        .env("DENO_KV_ACCESS_TOKEN", TOKEN)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(watch.stdout.take().unwrap()));
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        first,
        json!({"key": ["w"], "value": null, "versionstamp": null})
    );
    ok(&at, &["set", r#"["w"]"#, r#"{"n": 1}"#]);
    let second: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(second["value"], json!({"n": 1}));
    ok(&at, &["delete", r#"["w"]"#]);
    let third: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(third["value"], Value::Null);
    assert!(watch.wait().unwrap().success());

    // A wrong token is refused with a message.
    let out = Command::new(BIN)
        .args(["data", "list", "--url", &format!("http://{}", server.addr)])
        .env("DENO_KV_ACCESS_TOKEN", "wrong")
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}

/// Export lines as (key, value, encoding, data, expireAt), and the keys in versionstamp
/// order with entries of one versionstamp grouped.
fn summary(lines: &[Value]) -> (Vec<Value>, Vec<Vec<Value>>) {
    let content = lines
        .iter()
        .map(|l| {
            json!([
                l["key"],
                l["value"],
                l["encoding"],
                l["data"],
                l["expireAt"]
            ])
        })
        .collect();
    let mut by_vs: Vec<(String, Value)> = lines
        .iter()
        .map(|l| {
            (
                l["versionstamp"].as_str().unwrap().to_owned(),
                l["key"].clone(),
            )
        })
        .collect();
    by_vs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut groups: Vec<(String, Vec<Value>)> = Vec::new();
    for (vs, key) in by_vs {
        match groups.last_mut() {
            Some((last, keys)) if *last == vs => keys.push(key),
            _ => groups.push((vs, vec![key])),
        }
    }
    (content, groups.into_iter().map(|(_, k)| k).collect())
}

fn write_file(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn export_then_import_into_a_fresh_database_is_identical() {
    let dir = temp_dir("export");
    let source = At::File(dir.join("source.sqlite"));
    let far = 4_000_000_000_000u64; // year 2096
                                    // Written in an order unlike key order, two entries in one commit (shared versionstamp),
                                    // one with an expiry, and a V8 value the notation cannot express (a cycle).
    let seed = [
        json!({"key": ["b"], "value": {"list": [1, {"$bigint": "2"}], "when": {"$date": "2024-01-01T00:00:00.000Z"}}, "versionstamp": "00000000000000000005"}),
        json!({"key": ["a", {"$bytes": "AP8="}], "value": {"$u64": "18446744073709551615"}, "versionstamp": "00000000000000000007", "expireAt": far}),
        json!({"key": ["c", 1.5, true], "value": {"$bytes": "3q2+7w=="}, "versionstamp": "00000000000000000003"}),
        json!({"key": ["d"], "encoding": "v8", "data": "/w9vIgRzZWxmXgB7AQ==", "versionstamp": "00000000000000000007"}),
        json!({"key": ["e"], "value": "two-byte ✓", "versionstamp": "00000000000000000001"}),
    ];
    let seed_file = dir.join("seed.ndjson");
    write_file(
        &seed_file,
        &seed.iter().map(Value::to_string).collect::<Vec<_>>(),
    );
    let report = ok(&source, &["import", seed_file.to_str().unwrap()]);
    assert_eq!(report[0]["imported"], 5);
    assert_eq!(report[0]["commits"], 4);

    let exported = ok(&source, &["export"]);
    assert_eq!(exported.len(), 5);
    let cycle = exported.iter().find(|l| l["key"] == json!(["d"])).unwrap();
    assert_eq!(cycle["value"], json!({"$v8": "/w9vIgRzZWxmXgB7AQ=="}));
    let expiring = exported.iter().find(|l| l["expireAt"] == json!(far));
    assert!(expiring.is_some(), "{exported:?}");

    // Export to a file, import it into a fresh database, export again.
    let file = dir.join("export.ndjson");
    ok(&source, &["export", "--out", file.to_str().unwrap()]);
    let target = At::File(dir.join("target.sqlite"));
    let dry = ok(&target, &["import", file.to_str().unwrap(), "--dry-run"]);
    assert_eq!(dry[0]["valid"], 5);
    assert!(ok(&target, &["list"]).is_empty(), "the dry run wrote");
    ok(&target, &["import", file.to_str().unwrap()]);
    let again = ok(&target, &["export"]);
    let (content_a, order_a) = summary(&exported);
    let (content_b, order_b) = summary(&again);
    assert_eq!(content_a, content_b);
    assert_eq!(order_a, order_b);
    assert_eq!(
        order_a,
        vec![
            vec![json!(["e"])],
            vec![json!(["c", 1.5, true])],
            vec![json!(["b"])],
            vec![json!(["a", {"$bytes": "AP8="}]), json!(["d"])],
        ]
    );

    // Through a server: export over KV Connect (no expiry there) and import into a file.
    let server = spawn(&[
        "--engine",
        "sqlite",
        "--path",
        dir.join("source.sqlite").to_str().unwrap(),
        "--addr",
        "127.0.0.1:0",
    ]);
    let remote = At::Url(format!("http://{}", server.addr));
    let over_url = ok(&remote, &["export"]);
    let (content_c, order_c) = summary(&over_url);
    assert_eq!(order_c, order_a);
    for (c, a) in content_c.iter().zip(&content_a) {
        assert_eq!(c.as_array().unwrap()[0..4], a.as_array().unwrap()[0..4]);
    }
    let third = At::File(dir.join("third.sqlite"));
    ok_stdin(
        &third,
        &["import", "-"],
        Some(
            &over_url
                .iter()
                .map(|l| l.to_string() + "\n")
                .collect::<String>(),
        ),
    );
    assert_eq!(summary(&ok(&third, &["export"])).1, order_a);
    drop(server);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_input_names_the_problem_and_writes_nothing() {
    let dir = temp_dir("bad");
    let at = At::File(dir.join("db.sqlite"));
    let nothing_written = |at: &At| assert!(ok(at, &["list"]).is_empty());

    let err = fails(&at, &["set", r#"["users", 1"#, "1"], None);
    assert!(err.contains("invalid key in KEY"), "{err}");
    let err = fails(&at, &["set", r#"["users", null]"#, "1"], None);
    assert!(err.contains("/1"), "{err}");
    let err = fails(&at, &["set", r#"["a"]"#, "hello"], None);
    assert!(err.contains("invalid value"), "{err}");
    let err = fails(&at, &["list", "--prefix", "users"], None);
    assert!(err.contains("--prefix"), "{err}");
    nothing_written(&at);

    let good = |k: &str| json!({"key": [k], "value": 1}).to_string();
    let file = dir.join("import.ndjson");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                good("a"),
                good("b"),
                "{\"key\": [\"c\"], \"value\": ".into(),
            ],
            "line 3: not JSON",
        ),
        (
            vec![good("a"), json!({"key": "c", "value": 1}).to_string()],
            "line 2: \"key\"",
        ),
        (
            vec![
                good("a"),
                String::new(),
                json!({"key": ["big"], "value": {"$bytes": base64_of_zeros(70_000)}}).to_string(),
            ],
            "line 3: ",
        ),
        (
            vec![good("a"), good("b"), good("a")],
            "line 3: the key is also on line 1",
        ),
        (
            vec![
                good("a"),
                json!({"key": ["x"], "value": {"$wat": 1}}).to_string(),
            ],
            "line 2: \"value\"",
        ),
    ];
    for (lines, says) in cases {
        write_file(&file, &lines);
        let err = fails(&at, &["import", file.to_str().unwrap()], None);
        assert!(err.contains(says), "expected {says:?} in {err}");
        assert!(err.contains("nothing was written"), "{err}");
        nothing_written(&at);
    }
    // The value over the limit is reported as such.
    write_file(
        &file,
        &[json!({"key": ["big"], "value": {"$bytes": base64_of_zeros(70_000)}}).to_string()],
    );
    let err = fails(&at, &["import", file.to_str().unwrap()], None);
    assert!(err.contains("line 1") && err.contains("65536"), "{err}");

    // An existing key stops the import before it writes, unless --overwrite.
    ok(&at, &["set", r#"["b"]"#, "0"]);
    write_file(&file, &[good("a"), good("b")]);
    let err = fails(&at, &["import", file.to_str().unwrap()], None);
    assert!(err.contains("line 2: the key already exists"), "{err}");
    assert_eq!(ok(&at, &["list"]).len(), 1);
    ok(&at, &["import", file.to_str().unwrap(), "--overwrite"]);
    assert_eq!(ok(&at, &["list"]).len(), 2);
    std::fs::remove_dir_all(dir).unwrap();
}

fn base64_of_zeros(n: usize) -> String {
    // Base64 of n zero bytes, n = 3k + 1: "AAAA" per 3 bytes, "AA==" for the last one.
    assert_eq!(n % 3, 1);
    "A".repeat((n - 1) / 3 * 4) + "AA=="
}

#[test]
fn list_and_export_page_through_more_than_one_read() {
    let dir = temp_dir("paging");
    let at = At::File(dir.join("db.sqlite"));
    let lines: String = (0..2500)
        .map(|i| json!({"key": ["n", i], "value": i}).to_string() + "\n")
        .collect();
    let report = ok_stdin(&at, &["import", "-"], Some(&lines));
    // Without --overwrite every commit checks its keys: at most 100 (the check limit) each.
    assert_eq!(report[0]["commits"], 25);
    let all = ok(&at, &["list", "--prefix", r#"["n"]"#]);
    assert_eq!(all.len(), 2500);
    assert!(all.iter().enumerate().all(|(i, l)| l["value"] == json!(i)));
    let back = ok(&at, &["list", "--reverse", "--limit", "1500"]);
    assert_eq!(back.len(), 1500);
    assert_eq!(back[0]["value"], 2499);
    assert_eq!(back[1499]["value"], 1000);
    assert_eq!(ok(&at, &["export"]).len(), 2500);
    std::fs::remove_dir_all(dir).unwrap();
}
