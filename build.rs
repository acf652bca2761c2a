//! Generates the Rust types of Loki's push protobuf (`proto/loki/push.proto`)
//! with prost, compiled by protox (pure Rust: no `protoc` to install).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/loki/push.proto");
    let descriptors = protox::compile(["proto/loki/push.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
