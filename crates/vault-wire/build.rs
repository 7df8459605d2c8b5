//! The gRPC contract (feature `grpc`): `proto/` compiled with protox (no `protoc` needed) into
//! client and server code, and the descriptor set that server reflection serves.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(feature = "grpc")]
    {
        use prost::Message;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
        let file = root.join("tokenvault/v1/vault.proto");
        println!("cargo:rerun-if-changed={}", root.display());
        let fds = protox::compile([&file], [&root])?;
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
        std::fs::write(out.join("vault_descriptor.bin"), fds.encode_to_vec())?;
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .compile_fds(fds)?;
    }
    Ok(())
}
