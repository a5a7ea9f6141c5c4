//! The `botpipe` binary: parse the command line, set up telemetry, dispatch, map to an exit code
//! (0 ok, 1 runtime failure, 2 configuration or usage).

use std::process::ExitCode;

use botpipe::cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse_process_args();
    botpipe::telemetry::init_logging(cli.log_format, botpipe::command::log_level(&cli));
    match botpipe::command::dispatch(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.exit_code();
            // Not eprintln!: it panics when stderr is closed or full.
            botpipe::telemetry::eprint_line(&format!("botpipe: {:#}", anyhow::Error::new(e)));
            ExitCode::from(code)
        }
    }
}
