use std::time::Duration;

use clap::Parser;
use janitor::JanitorConfig;
use vault_core::Store;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cfg = JanitorConfig::parse();
    let _telemetry = vault_core::config::init_tracing(cfg.log.log_format, "tokenvault-janitor");
    let global = vault_core::global::Global::from_args(&cfg.global, &cfg.redis);
    let store = match (Store::connect(&cfg.redis), global) {
        (Ok(s), Ok(global)) => s.with_global(global),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("janitor: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match store.prepare().await {
        Err(e) if e.refuses_start() => {
            eprintln!("janitor: refusing to start: {e}");
            return std::process::ExitCode::FAILURE;
        }
        Err(e) => tracing::warn!(error = %e, "redis not reachable at start-up; will keep trying"),
        Ok(()) => {}
    }
    tracing::info!(interval_ms = cfg.interval_ms, "janitor running");
    janitor::spawn_global(&store);
    janitor::run(
        store,
        Duration::from_millis(cfg.interval_ms.max(10)),
        cfg.batch.max(1),
        vault_core::config::shutdown_signal(),
    )
    .await;
    std::process::ExitCode::SUCCESS
}
