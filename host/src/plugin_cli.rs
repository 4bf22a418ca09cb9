//! `sluice plugin …`: work with plugins outside the proxy. `new` writes a
//! project from the templates in the binary; `test` runs a plugin once on
//! sample input, in the proxy's sandbox.

use anyhow::Context;
use clap::{Args, Subcommand};
use sluice::plugin::scaffold::{self, Lang, World};
use sluice::plugin::try_out::{self, Input};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Write a new plugin project (Rust, JavaScript or Python) that builds
    /// anywhere, with a README, a build script and its own tests.
    New(NewArgs),
    /// Run a plugin once on sample input, in the same sandbox as the proxy,
    /// and print its verdict (sniff plugins) or routing decision (route
    /// plugins), then what it logged.
    Test(Box<TestArgs>),
    /// Run two versions of a plugin over a capture of real decision inputs
    /// and report how their decisions differ (docs/EXPERIMENTS.md).
    Replay(sluice::experiment::replay_cli::ReplayArgs),
}

#[derive(Args)]
pub struct NewArgs {
    /// The plugin's name: lower-case letters, digits and `-` (also the
    /// directory, the package and the config key).
    name: String,
    /// The language: rust, js or python.
    #[arg(long, value_parser = str::parse::<Lang>)]
    lang: Lang,
    /// The kind of plugin: `sniffer` (classifies connections) or `router`
    /// (routes HTTP requests).
    #[arg(long, value_parser = str::parse::<World>)]
    world: World,
    /// Where to write it (default: ./NAME); must not exist yet.
    #[arg(long, value_name = "PATH")]
    dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct TestArgs {
    /// The plugin component (.wasm).
    #[arg(required_unless_present = "config", conflicts_with = "config")]
    plugin_file: Option<PathBuf>,
    /// Take the plugin's file, settings and limits from this config (with --plugin).
    #[arg(long, value_name = "FILE", requires = "plugin")]
    config: Option<PathBuf>,
    /// The plugin's name in the config's [plugins] table.
    #[arg(long, value_name = "NAME", requires = "config")]
    plugin: Option<String>,
    /// The plugin's settings, as a JSON object or a TOML table (default: {},
    /// or the config's).
    #[arg(long, value_name = "JSON|TOML")]
    settings: Option<String>,
    /// The plugin's settings as a TOML table, e.g. 'default-backend = "web"'.
    #[arg(long, value_name = "TOML", conflicts_with = "settings")]
    settings_toml: Option<String>,
    /// Sniff: the connection's first bytes, with escapes (\r \n \t \0 \\ \xHH).
    #[arg(long, value_name = "BYTES")]
    head: Option<String>,
    /// Sniff: the first bytes from a file (e.g. a captured connection).
    #[arg(long, value_name = "FILE", conflicts_with = "head")]
    head_file: Option<PathBuf>,
    /// Sniff: tell the plugin no more bytes will come (deadline, byte cap, client done).
    #[arg(long)]
    complete: bool,
    /// Route: a request line, e.g. "GET /socket.io/?EIO=4".
    #[arg(long, value_name = "METHOD PATH", conflicts_with_all = ["head", "head_file"])]
    request: Option<String>,
    /// Route: a request header "name: value" (repeatable); `host` sets the authority.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// The client address the plugin sees.
    #[arg(long, default_value = "127.0.0.1:50000")]
    client: std::net::SocketAddr,
    /// The listener name the plugin sees (default: `test`, or the config's
    /// listener that uses the plugin).
    #[arg(long)]
    listener: Option<String>,
    /// Decide as if inside TLS that sluice terminated, with this server name.
    #[arg(long, value_name = "NAME")]
    sni: Option<String>,
    /// Fuel per call (default: 10M, or the config's).
    #[arg(long)]
    cpu_budget: Option<u64>,
    /// The instance's memory cap, e.g. "64MiB" (default: 16MiB, or the config's).
    #[arg(long, value_parser = sluice::config::parse_size)]
    memory_limit: Option<u64>,
}

pub fn run(command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::New(args) => new(args),
        PluginCommand::Test(args) => test(*args),
        PluginCommand::Replay(args) => sluice::experiment::replay_cli::run(args),
    }
}

fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    scaffold::write(&dir, &args.name, args.lang, args.world)?;
    println!("wrote a {} {} plugin to {}/. Next:", args.lang, args.world, dir.display());
    let steps = match args.lang {
        Lang::Js => "npm ci && npm test && npm run build",
        Lang::Python => "./test.sh && ./build.sh",
        Lang::Rust => "cargo test && ./build.sh",
    };
    println!("  cd {} && {steps}", dir.display());
    println!("  sluice plugin test --config sluice.toml --plugin {} …   (see README.md)", args.name);
    Ok(ExitCode::SUCCESS)
}

/// What `--config FILE --plugin NAME` contributes.
struct FromConfig {
    wasm: Vec<u8>,
    file: String,
    settings_json: String,
    limits: sluice::config::PluginLimits,
    listener: Option<String>,
}

fn from_config(config: &std::path::Path, name: &str) -> anyhow::Result<FromConfig> {
    use sluice::config::{Config, PluginSource};
    let config = Config::load(config)?;
    let Some(plugin) = config.plugins.iter().find(|(n, _)| n.as_str() == name).map(|(_, p)| p) else {
        let known: Vec<&str> = config.plugins.keys().map(|n| n.as_str()).collect();
        anyhow::bail!(
            "{} has no plugin named `{name}` (its plugins: {})",
            config.source.display(),
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        );
    };
    let (wasm, file) = match &plugin.source {
        PluginSource::File(path) => {
            (std::fs::read(path).with_context(|| format!("reading {}", path.display()))?, path.display().to_string())
        }
        PluginSource::Builtin(builtin) => (
            sluice::builtin::component(builtin).context("unknown built-in plugin")?.to_vec(),
            format!("builtin:{builtin}"),
        ),
    };
    let listener = config
        .listeners
        .iter()
        .find(|l| l.sniff.as_str() == name || l.route.as_ref().is_some_and(|r| r.as_str() == name))
        .map(|l| l.name.as_str().to_string());
    Ok(FromConfig { wasm, file, settings_json: plugin.settings_json.clone(), limits: plugin.limits, listener })
}

fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    use sluice::plugin::{ConnFacts, TlsFacts};
    let mut plugin = match (&args.plugin_file, &args.config, &args.plugin) {
        (Some(path), None, None) => FromConfig {
            wasm: std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
            file: path.display().to_string(),
            settings_json: "{}".to_string(),
            limits: sluice::config::PluginLimits::default(),
            listener: None,
        },
        (None, Some(config), Some(name)) => from_config(config, name)?,
        _ => anyhow::bail!("give a plugin file, or --config FILE --plugin NAME"),
    };
    if let Some(text) = &args.settings {
        plugin.settings_json = try_out::settings_json(text, None).map_err(anyhow::Error::msg)?;
    }
    if let Some(text) = &args.settings_toml {
        plugin.settings_json =
            try_out::settings_json(text, Some(try_out::SettingsFormat::Toml)).map_err(anyhow::Error::msg)?;
    }
    if let Some(cpu_budget) = args.cpu_budget {
        plugin.limits.cpu_budget = cpu_budget;
    }
    if let Some(memory_limit) = args.memory_limit {
        plugin.limits.memory_limit = memory_limit;
    }
    let input = match (&args.head, &args.head_file, &args.request) {
        (Some(head), None, None) => {
            Input::Head { bytes: try_out::unescape(head).map_err(anyhow::Error::msg)?, complete: args.complete }
        }
        (None, Some(file), None) => Input::Head {
            bytes: std::fs::read(file).with_context(|| format!("reading {}", file.display()))?,
            complete: args.complete,
        },
        (None, None, Some(line)) => {
            Input::Request(try_out::parse_request(line, &args.headers).map_err(anyhow::Error::msg)?)
        }
        _ => anyhow::bail!("give one of --head, --head-file (sniff plugins) or --request (route plugins)"),
    };
    let listener = args.listener.or(plugin.listener).unwrap_or_else(|| "test".to_string());
    let mut conn = ConnFacts::probe();
    conn.listener = sluice::names::ListenerName::new(listener.as_str());
    conn.client_addr = args.client;
    conn.local_addr = std::net::SocketAddr::from(([127, 0, 0, 1], 443));
    conn.tls = args.sni.map(|name| TlsFacts { server_name: Some(name), alpn: None });
    let report = try_out::run(&plugin.wasm, &plugin.file, &plugin.settings_json, plugin.limits, &conn, &input);
    // The decision first, then what the plugin logged on the way.
    let outcome = report.outcome.map(|decision| print!("{decision}"));
    for line in &report.log {
        println!("log: {line}");
    }
    outcome.map_err(anyhow::Error::msg)?;
    Ok(ExitCode::SUCCESS)
}
