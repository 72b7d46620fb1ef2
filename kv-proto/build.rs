//! Generates the `com.deno.kv.datapath` protobuf types from `proto/datapath.proto` (and our
//! queue extension's from `proto/queue_ext.proto`) with `protox`
//! (a pure-Rust protobuf compiler, so no system `protoc` is needed) and `prost-build`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/datapath.proto");
    println!("cargo:rerun-if-changed=proto/queue_ext.proto");
    let fds = protox::compile(["datapath.proto", "queue_ext.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
