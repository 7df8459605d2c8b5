use clap::Parser;
use refresher::RefresherConfig;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cfg = RefresherConfig::parse();
    let telemetry = vault_core::config::init_tracing(cfg.log.log_format, "tokenvault-refresher");
    let code = match refresher::run(cfg).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("refresher: {e:#}");
            std::process::ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}
