//! Command lines of the reference server's README (github.com/denoland/denokv, README.md:
//! "Docker on a VPS", "Running as a replica of a hosted KV database"), copied verbatim, and how
//! the tests turn them into arguments of this binary.

use std::path::Path;

use super::TOKEN;

/// "Docker on a VPS" (and the first command of the README).
pub const README_DOCKER: &str = "docker run -it --init -p 4512:4512 -v ./data:/data ghcr.io/denoland/denokv --sqlite-path /data/denokv.sqlite serve --access-token <random-token>";
/// "Running as a replica of a hosted KV database" (its line continuations joined).
pub const README_REPLICA: &str = r#"docker run -it --init -p 4512:4512 -v ./data:/data -e AWS_ACCESS_KEY_ID="<aws-access-key-id>" -e AWS_SECRET_ACCESS_KEY="<aws-secret-access-key>" -e AWS_REGION="<aws-region>" ghcr.io/denoland/denokv --sqlite-path /data/denokv.sqlite serve --access-token <random-token> --sync-from-s3 --s3-bucket your-bucket --s3-prefix some-prefix/6aea9765-2b1e-41c7-8904-0bdcd70b21d3/"#;
/// "To sync the local database from S3, without updating the snapshot".
pub const README_PITR_SYNC: &str = "denokv --sqlite-path /data/denokv.sqlite pitr sync --s3-bucket your-bucket --s3-prefix some-prefix/6aea9765-2b1e-41c7-8904-0bdcd70b21d3/";
/// "To list recoverable points".
pub const README_PITR_LIST: &str = "denokv --sqlite-path /data/denokv.sqlite pitr list";
/// "To checkout the snapshot at a specific recoverable point" (the versionstamp is replaced by
/// one of the listed points).
pub const README_PITR_CHECKOUT: &str =
    "denokv --sqlite-path /data/denokv.sqlite pitr checkout 0100000002c0f4c10000";
/// `pitr info` has no README example; its form is denokv's `config.rs` (`PitrSubCmd::Info`).
pub const PITR_INFO: &str = "denokv --sqlite-path /data/denokv.sqlite pitr info";
/// The prefix of the README's backup.
pub const README_PREFIX: &str = "some-prefix/6aea9765-2b1e-41c7-8904-0bdcd70b21d3/";

/// The arguments of a README command line after the program (or the image), with the
/// placeholders substituted.
pub fn readme_args(line: &str, data: &Path, bucket: &str) -> Vec<String> {
    let rest = line
        .split_once("ghcr.io/denoland/denokv ")
        .or_else(|| line.split_once("denokv "))
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("not a denokv command line: {line}"));
    rest.split_whitespace()
        .map(|a| {
            a.replace("/data", data.to_str().unwrap())
                .replace("<random-token>", TOKEN)
                .replace("your-bucket", bucket)
        })
        .collect()
}

/// "HTTPS with a reverse proxy": the `command:` of its `docker-compose.yml` (arguments of the
/// image; compose substitutes the token from the environment).
pub const README_COMPOSE_COMMAND: &str =
    "--sqlite-path /data/denokv.sqlite serve --access-token ${DENO_KV_ACCESS_TOKEN}";
