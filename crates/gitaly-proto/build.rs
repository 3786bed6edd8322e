//! Compiles the hand-written, trimmed Gitaly protos with protox (pure Rust), so a fresh machine
//! needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/ssh.proto", "proto/errors.proto"];
    for f in files
        .iter()
        .chain(["proto/shared.proto", "proto/packfile.proto"].iter())
    {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
