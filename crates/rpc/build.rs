//! Generates the gRPC code from `proto/` with protox, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Relative to this package: cargo resolves these against the current checkout, so a target
    // directory shared by several clones (CI's) still notices a changed .proto.
    let rel = "../../proto";
    // Read at run time, not baked in with env!(): a build-script binary reused from another
    // checkout in a shared target directory must still read this checkout's protos.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join(rel);
    let names = [
        "common.proto",
        "jobs.proto",
        "control.proto",
        "shuffle.proto",
        "state.proto",
    ];
    for n in names {
        println!("cargo:rerun-if-changed={rel}/sluice/v1/{n}");
    }
    let files = names.map(|n| root.join("sluice/v1").join(n));
    let fds = protox::compile(&files, [&root])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
