//! The `sluice` command: parse arguments, load and validate the config before
//! binding anything, bind, serve until SIGINT/SIGTERM, drain.

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use sluice::{App, Config, Drained};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// A programmable single-port proxy: WebAssembly plugins classify each
/// connection and route each request.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no command, `sluice --config FILE` runs the proxy.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run(RunArgs),
    /// Validate a config and load and probe its plugins, without serving.
    Check(CheckArgs),
}

#[derive(Args)]
struct RunArgs {
    /// The config file.
    #[arg(long, short, value_name = "FILE", default_value = "sluice.toml")]
    config: PathBuf,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    /// How long open connections may run after SIGTERM/SIGINT before they
    /// are closed, e.g. "30s".
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    grace: Duration,
}

#[derive(Args)]
struct CheckArgs {
    /// The config file.
    #[arg(long, short, value_name = "FILE", default_value = "sluice.toml")]
    config: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    sluice::config::parse_duration(text)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Run(args)) => run(args),
        None => run(cli.run),
        Some(Command::Check(args)) => check(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    init_logging(args.log_format);
    let config = Config::load(&args.config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(async {
        let app = App::bind(config).await?.with_grace(args.grace);
        match app.run(shutdown_signal()).await {
            Drained::Clean => Ok(ExitCode::SUCCESS),
            // Exit code 3: the grace period ended with connections still open.
            Drained::Forced(_) => Ok(ExitCode::from(3)),
        }
    })
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    init_logging(LogFormat::Human);
    let config = Config::load(&args.config)?;
    let runtime = sluice::plugin::wasm::Runtime::new()?;
    sluice::state::Snapshot::build(&config, &runtime)?;
    println!(
        "{}: ok ({} listeners, {} backends, {} plugins loaded and probed)",
        args.config.display(),
        config.listeners.len(),
        config.backends.len(),
        config.plugins.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
