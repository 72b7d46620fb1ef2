//! Generates the `com.deno.kv.backup` protobuf types from `proto/backup.proto` with `protox`
//! (pure-Rust protobuf compiler, no system `protoc` needed) and `prost-build`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/backup.proto");
    let fds = protox::compile(["backup.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
