// The release build overflows rustc's default query depth on the server's nested async types.
#![recursion_limit = "256"]
use clap::Parser;
use vault_api::ApiConfig;
use vault_core::config::init_tracing;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cfg = ApiConfig::parse();
    let telemetry = init_tracing(cfg.log.log_format, "tokenvault-api");
    let code = match vault_api::server::run(cfg).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("vault-api: {e:#}");
            std::process::ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}
