//! The container image, kept honest without a container engine: the root `Dockerfile`'s
//! ENTRYPOINT, CMD and HEALTHCHECK argument vectors and `deploy/compose.yaml`'s command lines
//! are run through this binary (`--check-config` resolves and prints the settings without
//! opening anything), with the image's environment only, and the paths and port the
//! Dockerfile documents (the `/data` volume, the database file, `EXPOSE`) must be what the
//! binary resolves. The image's default command also really starts (with a temporary folder
//! in place of `/data` and a free port) and stops gracefully on SIGTERM.

#![cfg(feature = "sqlite")]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::denokv_readme::*;
use common::*;

/// The parts of the Dockerfile's final stage that the tests check.
#[derive(Debug, Default)]
struct Image {
    env: BTreeMap<String, String>,
    volumes: Vec<String>,
    expose: Vec<u16>,
    user: String,
    workdir: String,
    stopsignal: Option<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    healthcheck: Vec<String>,
    /// Destinations of `COPY --from=...` lines.
    copied_to: Vec<String>,
}

fn repo_root() -> PathBuf {
    common::clients::crate_dir().parent().unwrap().to_path_buf()
}

/// An exec-form (JSON array) argument vector; shell form is refused (no shell in the image,
/// and a shell would not forward SIGTERM).
fn exec_form(instr: &str, rest: &str) -> Vec<String> {
    serde_json::from_str(rest.trim())
        .unwrap_or_else(|e| panic!("{instr} must be in exec form (a JSON array): {rest:?}: {e}"))
}

fn parse_dockerfile(text: &str) -> Image {
    // Join continuation lines, drop comments and blank lines.
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if current.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(t);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    let mut image = Image::default();
    for line in lines {
        let (instr, rest) = line.split_once(' ').unwrap_or((&line, ""));
        match instr.to_ascii_uppercase().as_str() {
            // Only the final stage is the image.
            "FROM" => image = Image::default(),
            "ENV" => {
                for pair in rest.split_whitespace() {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("ENV must use KEY=VALUE: {line}"));
                    image.env.insert(k.into(), v.into());
                }
            }
            "VOLUME" => image.volumes = exec_form("VOLUME", rest),
            "EXPOSE" => image
                .expose
                .extend(rest.split_whitespace().map(|p| p.parse::<u16>().unwrap())),
            "USER" => image.user = rest.trim().into(),
            "WORKDIR" => image.workdir = rest.trim().into(),
            "STOPSIGNAL" => image.stopsignal = Some(rest.trim().into()),
            "ENTRYPOINT" => image.entrypoint = exec_form("ENTRYPOINT", rest),
            "CMD" => image.cmd = exec_form("CMD", rest),
            "HEALTHCHECK" => {
                let (_, cmd) = rest
                    .split_once(" CMD ")
                    .unwrap_or_else(|| panic!("HEALTHCHECK without CMD: {line}"));
                image.healthcheck = exec_form("HEALTHCHECK CMD", cmd);
            }
            "COPY" if rest.contains("--from=") => {
                image
                    .copied_to
                    .push(rest.split_whitespace().last().unwrap().into());
            }
            _ => {}
        }
    }
    image
}

fn image() -> Image {
    let text = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    parse_dockerfile(&text)
}

/// Runs the binary as the image would: only the image's environment plus `extra`.
fn run_in_image(image: &Image, args: &[String], extra: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .envs(&image.env)
        .envs(extra.iter().copied())
        .output()
        .unwrap()
}

/// `--check-config` settings (`name: value` lines) of `args` in the image.
fn check_config(
    image: &Image,
    args: &[String],
    extra: &[(&str, &str)],
) -> BTreeMap<String, String> {
    let mut env = vec![
        ("KV_CONNECT_CHECK_CONFIG", "1"),
        ("DENO_KV_ACCESS_TOKEN", TOKEN),
    ];
    env.extend_from_slice(extra);
    let out = run_in_image(image, args, &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?} does not parse: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The program the ENTRYPOINT names must be this binary, copied there by the build stage.
fn entrypoint_is_the_binary(image: &Image) {
    assert_eq!(image.entrypoint.len(), 1, "{:?}", image.entrypoint);
    let program = &image.entrypoint[0];
    assert!(program.ends_with("/kv-connect-server"), "{program}");
    assert!(image.copied_to.contains(program), "{:?}", image.copied_to);
}

fn port_of(addr: &str) -> u16 {
    addr.parse::<std::net::SocketAddr>().unwrap().port()
}

#[test]
fn dockerfile_entrypoint_and_cmd_resolve_to_the_documented_paths() {
    let image = image();
    entrypoint_is_the_binary(&image);
    assert_eq!(image.volumes, ["/data"]);
    assert_eq!(image.workdir, "/data");
    assert_eq!(image.expose, [4512]);
    assert!(
        !image.user.is_empty() && !image.user.starts_with("root") && !image.user.starts_with('0'),
        "the image must not run as root: USER {:?}",
        image.user
    );
    assert_eq!(image.stopsignal.as_deref().unwrap_or("SIGTERM"), "SIGTERM");

    let settings = check_config(&image, &image.cmd, &[]);
    let path = Path::new(&settings["path"]);
    assert_eq!(settings["engine"], "sqlite");
    assert!(
        path.starts_with("/data"),
        "the database is outside the volume: {path:?}"
    );
    assert_eq!(port_of(&settings["addr"]), image.expose[0]);
    assert!(settings["addr"].starts_with("0.0.0.0:"), "{settings:?}");
    // The file is the one the binary uses by default, moved into the volume.
    let out = Command::new(BIN)
        .args(["serve", "--check-config"])
        .env_clear()
        .env("DENO_KV_ACCESS_TOKEN", TOKEN)
        .output()
        .unwrap();
    let own = String::from_utf8(out.stdout).unwrap();
    let default_path = own
        .lines()
        .find_map(|l| l.strip_prefix("path: "))
        .unwrap_or_else(|| panic!("no path in {own}"));
    assert_eq!(path.file_name(), Path::new(default_path).file_name());

    // Every variable the image sets is one the binary reads.
    let help = String::from_utf8(
        Command::new(BIN)
            .args(["serve", "--help"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for name in image.env.keys() {
        assert!(
            help.contains(name.as_str()),
            "the binary does not read {name}"
        );
    }
}

#[tokio::test]
async fn dockerfile_cmd_starts_and_stops_gracefully_on_sigterm() {
    let image = image();
    let data = temp_dir("container-data");
    // The image's environment with /data replaced by a temporary folder and a free port.
    let mut env: Vec<(String, String)> = image
        .env
        .iter()
        .map(|(k, v)| match v.strip_prefix("/data/") {
            Some(rest) => (k.clone(), data.join(rest).to_str().unwrap().to_string()),
            None => (k.clone(), v.clone()),
        })
        .collect();
    env.retain(|(k, _)| k != "KV_CONNECT_ADDR");
    env.push(("KV_CONNECT_ADDR".into(), "127.0.0.1:0".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let cmd: Vec<&str> = image.cmd.iter().map(String::as_str).collect();
    let p = spawn_with(&cmd, &env);
    assert!(healthz(p.addr).await.starts_with("ok"));
    let status = tokio::task::spawn_blocking(move || p.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    let db = Path::new(&image.env["KV_CONNECT_PATH"])
        .file_name()
        .unwrap();
    assert!(data.join(db).is_file());
    std::fs::remove_dir_all(&data).unwrap();
}

#[tokio::test]
async fn dockerfile_healthcheck_probes_the_served_port() {
    let image = image();
    let (program, args) = image.healthcheck.split_first().unwrap();
    assert_eq!(Some(program), image.entrypoint.first());
    // Without arguments the probe targets KV_CONNECT_ADDR, the address the server listens on.
    assert_eq!(port_of(&image.env["KV_CONNECT_ADDR"]), image.expose[0]);

    let p = spawn(&["--engine", "memory", "--addr", "127.0.0.1:0"]);
    let listen = format!("0.0.0.0:{}", p.addr.port());
    let args = args.to_vec();
    let image_env = image.env.clone();
    let probe = move |listen: String| {
        let image = Image {
            env: image_env.clone(),
            ..Image::default()
        };
        let args = args.clone();
        std::thread::spawn(move || run_in_image(&image, &args, &[("KV_CONNECT_ADDR", &listen)]))
            .join()
            .unwrap()
    };
    let out = probe(listen.clone());
    assert!(
        out.status.success(),
        "healthcheck failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok"));
    let status = tokio::task::spawn_blocking(move || p.terminate())
        .await
        .unwrap();
    assert!(status.success());
    // Nothing listens any more: unhealthy, with a message naming the address.
    let out = probe(listen);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("healthcheck"));
}

/// The reference image's command lines run unchanged in this image.
#[test]
fn reference_command_lines_resolve_in_the_image() {
    let image = image();
    let data = Path::new("/data");
    let settings = check_config(&image, &readme_args(README_DOCKER, data, ""), &[]);
    assert_eq!(settings["path"], "/data/denokv.sqlite");
    assert_eq!(settings["addr"], "0.0.0.0:4512");
    assert_eq!(port_of(&settings["addr"]), image.expose[0]);

    let compose: Vec<String> = README_COMPOSE_COMMAND
        .split_whitespace()
        .map(|a| a.replace("${DENO_KV_ACCESS_TOKEN}", TOKEN))
        .collect();
    let settings = check_config(&image, &compose, &[]);
    assert_eq!(settings["path"], "/data/denokv.sqlite");

    // Fly.io: the default command with DENO_KV_SQLITE_PATH set.
    let settings = check_config(
        &image,
        &image.cmd,
        &[("DENO_KV_SQLITE_PATH", "/data/denokv.sqlite3")],
    );
    assert_eq!(settings["path"], "/data/denokv.sqlite3");
    assert_eq!(port_of(&settings["addr"]), image.expose[0]);
}

#[cfg(feature = "pitr")]
#[test]
fn compose_command_lines_parse() {
    let image = image();
    let text = std::fs::read_to_string(repo_root().join("deploy/compose.yaml")).unwrap();
    let commands: Vec<Vec<String>> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("command: "))
        .map(|rest| exec_form("compose command", rest))
        .filter(|argv| argv.first().is_some_and(|a| a == "serve"))
        .collect();
    assert_eq!(commands.len(), 2, "{commands:?}");
    let env = [("AWS_ENDPOINT_URL", "http://minio:9000")];
    for argv in &commands {
        let settings = check_config(&image, argv, &env);
        for (flag, field) in [("--backup-to", "backup_to"), ("--replica-of", "replica_of")] {
            if let Some(i) = argv.iter().position(|a| a == flag) {
                assert_eq!(settings[field], argv[i + 1], "{argv:?}");
            }
        }
        assert_eq!(settings["s3_endpoint"], "http://minio:9000");
        assert!(Path::new(&settings["path"]).starts_with("/data"));
    }
}

#[test]
fn dockerignore_keeps_build_outputs_out_and_sources_in() {
    let text = std::fs::read_to_string(repo_root().join(".dockerignore")).unwrap();
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for needed in ["target", ".git", ".kv-test-tools"] {
        assert!(patterns.contains(&needed), ".dockerignore lacks {needed}");
    }
    // The build needs the lock file and every workspace member.
    let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    for p in &patterns {
        assert!(*p != "Cargo.lock" && *p != "Cargo.toml", "{p} is excluded");
        assert!(
            !manifest.contains(&format!("\"{p}\"")),
            "workspace member {p} is excluded"
        );
    }
}
