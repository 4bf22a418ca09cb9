//! The `sluice` command: parse arguments, load and validate the config before
//! binding anything, bind, serve until SIGINT/SIGTERM, drain. While serving,
//! changed config, plugin and certificate files are reloaded, and so is
//! everything on SIGHUP; SIGUSR1 reopens the access-log file. Under systemd
//! (`Type=notify`) each of these steps is reported to the service manager
//! ([`notify`]).

mod notify;
mod plugin_cli;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Work with plugins outside the proxy.
    #[command(subcommand)]
    Plugin(plugin_cli::PluginCommand),
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
    /// Do not watch the config, plugin and certificate files for changes;
    /// reload only on SIGHUP.
    #[arg(long)]
    no_watch: bool,
    /// Worker threads serving connections, each with its own runtime and
    /// listening sockets (default: one per CPU available).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
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
        Some(Command::Plugin(command)) => plugin_cli::run(command),
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
    let _flush_logs_on_exit = init_logging(args.log_format, "info");
    raise_fd_limit();
    let config = Config::load(&args.config)?;
    // Connections are served by the worker threads (`sluice::workers`), each
    // with its own runtime; this one runs signals, reloads, admin and ACME.
    let workers = args.threads.map_or_else(sluice::workers::default_count, usize::from);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio")?;
    runtime.block_on(async {
        let app = App::bind_with_workers(config, workers).await?.with_grace(args.grace).with_watch(!args.no_watch);
        reload_on_sighup(app.reload_handle())?;
        reopen_access_log_on_sigusr1()?;
        // Every listener is bound: connections from now on wait in the accept queue.
        let listeners: Vec<_> = app.local_addrs().into_iter().map(|(name, addr)| (name.to_string(), addr)).collect();
        notify::ready(&listeners, app.admin_addr());
        let grace = args.grace;
        let shutdown = async move {
            shutdown_signal().await;
            notify::stopping(grace);
        };
        match app.run(shutdown).await {
            Drained::Clean => Ok(ExitCode::SUCCESS),
            // Exit code 3: the grace period ended with connections still open.
            Drained::Forced(_) => Ok(ExitCode::from(3)),
        }
    })
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    // The verdict goes to stdout and problems to stderr; the info lines of
    // loading plugins would only be noise there (SLUICE_LOG still overrides).
    let _flush_logs_on_exit = init_logging(LogFormat::Human, "warn");
    raise_fd_limit();
    let config = Config::load(&args.config)?;
    let runtime = sluice::plugin::wasm::Runtime::new()?;
    sluice::state::Snapshot::build(&config, &runtime)?;
    println!("{}", sluice::limits::fd_budget::summary(&config));
    for warning in sluice::limits::fd_budget::warnings(&config) {
        println!("warning: {warning}");
    }
    println!(
        "{}: ok ({} listeners, {} backends, {} plugins loaded and probed)",
        args.config.display(),
        config.listeners.len(),
        config.backends.len(),
        config.plugins.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// Raise the soft file-descriptor limit to the hard one before the config
/// is loaded: the default `max-connections` is derived from it.
fn raise_fd_limit() {
    match sluice::limits::fd_budget::raise_limit() {
        Ok(raised) if raised.now > raised.before => {
            tracing::info!(from = raised.before, to = raised.now, "raised the file-descriptor limit")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the file-descriptor limit"),
    }
}

/// Log to stderr through a background thread: a slow or stalled log reader
/// must not stall the proxy. If the reader falls more than `LOG_QUEUE_LINES`
/// behind, further lines are dropped (never blocked on). Keep the guard
/// alive until exit: dropping it flushes what is queued. `default_level`
/// applies when `SLUICE_LOG` is not set.
fn init_logging(format: LogFormat, default_level: &str) -> tracing_appender::non_blocking::WorkerGuard {
    const LOG_QUEUE_LINES: usize = 128 * 1024;
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .lossy(true)
        .thread_name("sluice-log")
        .finish(std::io::stderr());
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    guard
}

/// Reload on every SIGHUP (installed before serving, so a SIGHUP never
/// terminates the process), telling the service manager when the reload
/// starts and ends (`ExecReload=kill -HUP` waits for that under systemd).
/// SIGHUPs that arrive during a reload are folded into one more reload.
fn reload_on_sighup(reload: sluice::reload::ReloadHandle) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading");
                notify::reloading();
                notify::reloaded(&reload.reload().await);
            }
        });
    }
    #[cfg(not(unix))]
    let _ = reload;
    Ok(())
}

/// Reopen the access-log file on every SIGUSR1 (log rotation: rename the
/// file, then signal; new lines go to a new file at the configured path).
fn reopen_access_log_on_sigusr1() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut user1 = signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;
        tokio::spawn(async move {
            while user1.recv().await.is_some() {
                tracing::info!("SIGUSR1: reopening the access log");
                sluice::access_log::reopen();
            }
        });
    }
    Ok(())
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
