//! Generates the `cluster` feature's gRPC code from proto/verify.proto; does
//! nothing without that feature, so that the default build needs no protoc.
//! Also lets benches/table.rs compile in an outside file it measures against.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // benches/table.rs: with `VSHARD_SEED_GHOST_RS` naming the seed's
    // ghost.rs, the bench compiles it in and runs it in its own process (see
    // the README's measured figures); without it, the bench runs without.
    println!("cargo::rustc-check-cfg=cfg(seed_in_process)");
    println!("cargo:rerun-if-env-changed=VSHARD_SEED_GHOST_RS");
    if std::env::var_os("VSHARD_SEED_GHOST_RS").is_some_and(|p| std::path::Path::new(&p).is_file()) {
        println!("cargo:rustc-cfg=seed_in_process");
    }
    #[cfg(feature = "cluster")]
    {
        println!("cargo:rerun-if-changed=proto/verify.proto");
        // Both sides: every process of a cluster serves and calls.
        tonic_prost_build::configure()
            .build_server(true)
            .build_client(true)
            .compile_protos(&["proto/verify.proto"], &["proto"])
            .unwrap_or_else(|e| panic!("compiling proto/verify.proto (is protoc installed?): {e}"));
    }
}
