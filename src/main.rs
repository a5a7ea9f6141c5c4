//! The `botpipe` binary: parse the command line, set up telemetry, dispatch, map to an exit code
//! (0 ok, 1 runtime failure, 2 configuration or usage).

use std::process::ExitCode;

use botpipe::cli::{Cli, Command};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints a progress line and a summary; per-batch info logs would drown them.
    let level = match cli.command {
        Command::Demo(_) if cli.log_level == "info" => "warn",
        _ => cli.log_level.as_str(),
    };
    botpipe::telemetry::init_logging(cli.log_format, level);
    let config = cli.config.as_deref();
    let result = match cli.command {
        Command::Run(args) => botpipe::app::run(config, args).await,
        Command::Worker(args) => botpipe::app::run_workers_only(config, args).await,
        Command::Demo(args) => botpipe::demo::run(args).await,
        Command::Migrate => botpipe::app::migrate(config).await,
        Command::Collector(args) => botpipe::collector::run(config, args.listen)
            .await
            .map_err(Into::into),
        Command::Validate(_) | Command::Status(_) | Command::Dlq(_) | Command::Geoip(_) => {
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
