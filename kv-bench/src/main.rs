//! `kv-bench`: load generator for any KV Connect server. See the library docs (`kv_bench`) and
//! `kv-bench --help`.
//!
//! Exit status: 0 on success (failed operations are reported, not fatal), 1 when the run could
//! not take place, 3 when a correctness check failed (bank total changed, ledger mismatch,
//! auditor saw time go backwards, sum mismatch).

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use kv_bench::{BenchError, Options};

fn write_json(path: &str, report: &kv_bench::Report) -> Result<(), String> {
    let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    if path == "-" {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{json}").map_err(|e| e.to_string())
    } else {
        std::fs::write(path, json + "\n").map_err(|e| format!("{path}: {e}"))
    }
}

async fn main_async(opts: Options) -> Result<ExitCode, BenchError> {
    if opts.seed_only {
        kv_bench::seed(&opts).await?;
        println!("seeded {} keys at {}", opts.keys, opts.url.join(","));
        return Ok(ExitCode::SUCCESS);
    }
    let report = kv_bench::run(&opts).await?;
    if opts.json.as_deref() == Some("-") {
        eprintln!("{}", report.text());
    } else {
        println!("{}", report.text());
    }
    if let Some(path) = &opts.json {
        if let Err(e) = write_json(path, &report) {
            eprintln!("error: writing the JSON report failed: {e}");
            return Ok(ExitCode::FAILURE);
        }
    }
    if report.checks.passed() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: correctness check failed: {:?}",
            report.checks.details
        );
        Ok(ExitCode::from(3))
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let opts = Options::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the tokio runtime failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_async(opts)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
