//! Generates the `com.deno.kv.datapath` protobuf types from `proto/datapath.proto` with `protox`
//! (a pure-Rust protobuf compiler, so no system `protoc` is needed) and `prost-build`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/datapath.proto");
    let fds = protox::compile(["datapath.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
