//! The `botpipe` binary: parse the command line, set up telemetry, dispatch, map to an exit code
//! (0 ok, 1 runtime failure, 2 configuration or usage).

use std::process::ExitCode;

use botpipe::cli::{Cli, Command};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    botpipe::telemetry::init_logging(cli.log_format, &cli.log_level);
    let config = cli.config.as_deref();
    let result = match cli.command {
        Command::Run(args) => botpipe::app::run(config, args).await,
        Command::Worker(args) => botpipe::app::run_workers_only(config, args).await,
        Command::Demo(args) => botpipe::demo::run(args).await,
        Command::Migrate => botpipe::app::migrate(config).await,
        Command::Geoip(args) => botpipe::enrich::geoip_command(config, args)
            .await
            .map_err(Into::into),
        Command::Collector(_) | Command::Validate(_) | Command::Status(_) | Command::Dlq(_) => {
            Err(botpipe::app::AppError::NotBuilt("this subcommand"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.exit_code();
            eprintln!("botpipe: {:#}", anyhow::Error::new(e));
            ExitCode::from(code)
        }
    }
}
