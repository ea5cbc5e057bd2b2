//! Generates the `cluster` feature's gRPC code from proto/verify.proto; does
//! nothing without that feature, so that the default build needs no protoc.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
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
