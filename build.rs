//! Compiles `proto/` with the protoc shipped in the `protoc-bin-vendored` crate, so a fresh
//! machine builds with plain `cargo build` and no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let includes = protoc_bin_vendored::include_path()?;
    // Build scripts run single-threaded; prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };

    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "proto/yrd/exchange/v1/common.proto",
        "proto/yrd/exchange/v1/project.proto",
        "proto/yrd/exchange/v1/catalog.proto",
        "proto/yrd/exchange/v1/access.proto",
        "proto/yrd/exchange/v1/allocation.proto",
        "proto/yrd/exchange/v1/directory.proto",
        "proto/yrd/exchange/v1/federation.proto",
        "proto/yrd/exchange/v1/watch.proto",
        "proto/yrd/exchange/v1/audit.proto",
    ];
    tonic_prost_build::configure()
        // Deterministic encoding of maps, so request fingerprints (idempotency) are stable.
        .btree_map(".")
        // Messages that do not decode are INVALID_ARGUMENT `MALFORMED_REQUEST`, not INTERNAL.
        .codec_path("crate::wire::codec::Codec")
        .file_descriptor_set_path(out_dir.join("yrd_descriptor.bin"))
        .compile_protos(
            &protos,
            &["proto", includes.to_str().ok_or("non-utf8 include path")?],
        )?;
    // The benchmark's baseline echo service: compiled apart, so it is not in the gateway's
    // descriptor set and reflection never lists it.
    tonic_prost_build::configure()
        .compile_protos(&["proto/yrd/bench/v1/echo.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
