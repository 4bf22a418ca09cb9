//! The virtual WASI plugins get: enough of WASI 0.2 for components from
//! mainstream toolchains (componentize-js, componentize-py, Rust's std) to
//! start and run, and nothing that reaches outside the sandbox.
//!
//! | interface | what a plugin gets |
//! |---|---|
//! | `wasi:cli/environment` | no variables, no arguments, no working directory |
//! | `wasi:cli/stdout`, `stderr` | each line goes to the proxy log, tagged with the plugin (truncated, rate-limited) |
//! | `wasi:cli/stdin` | a closed stream |
//! | `wasi:cli/terminal-*` | "not a terminal" |
//! | `wasi:cli/exit` | ends the call as a failure (the listener's fallback applies) |
//! | `wasi:clocks/monotonic-clock`, `wall-clock` | the host's clocks; waiting on a timer that has not expired fails the call |
//! | `wasi:random/*` | the host's CSPRNG (insecure: a fast generator seeded from it) |
//! | `wasi:io/*` | streams and polls over the above; never blocks |
//! | `wasi:filesystem/*` | no preopened directories: no file can be opened |
//! | `wasi:sockets/*` | denied: importing it is fine (libc-based toolchains always do), every call fails the decision, naming the function |
//! | `wasi:http/*`, anything else | not provided: refused at load, naming the import |
//!
//! Most of it is `wasmtime-wasi`. Its synchronous `wasi:io` functions run
//! their blocking variants on a Tokio runtime (`block_on`), which panics on
//! the proxy's worker threads, where plugins are called; those functions are
//! replaced here by ones that finish at once or fail the call.

use super::host::HostState;
use super::output::{LogPipe, PluginLog, Source};
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasData, Linker, Resource, ResourceTable, ResourceType};
use wasmtime::{Engine, StoreContextMut};
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random, sync};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, Pollable};
use wasmtime_wasi::random::{WasiRandom, WasiRandomView};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};
use wasmtime_wasi_io::bindings::wasi::io::poll as wasi_poll;
use wasmtime_wasi_io::bindings::wasi::io::streams as wasi_streams;
use wasmtime_wasi_io::bindings::wasi::io::streams::{HostInputStream as _, HostOutputStream as _};

/// The WASI interfaces provided, without their version (any 0.2.x).
pub const PROVIDED: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:filesystem/preopens",
    "wasi:filesystem/types",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

/// Interfaces a component may import but never use.
const DENIED_PREFIX: &str = "wasi:sockets/";

/// The version of the WASI interfaces `wasmtime-wasi` defines; components
/// importing any other 0.2.x version link to them too.
const WASI_VERSION: &str = "0.2.12";
/// Most random bytes one call may ask for.
const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// A component imports something sluice does not provide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnprovidedImport {
    pub import: String,
    pub why: &'static str,
}

/// The first import of `component` that is neither the sluice contract nor a
/// provided WASI interface.
pub fn check_imports(component: &Component, engine: &Engine) -> Result<(), UnprovidedImport> {
    let ty = component.component_type();
    for (name, _) in ty.imports(engine) {
        if name.starts_with("sluice:plugin/") {
            continue; // the world's own imports; a mismatch is reported by linking
        }
        let (interface, version) = name.split_once('@').unwrap_or((name, ""));
        let known = PROVIDED.contains(&interface) || interface.starts_with(DENIED_PREFIX);
        if known && version.starts_with("0.2.") {
            continue;
        }
        let why = if interface.starts_with("wasi:sockets/") || interface.starts_with("wasi:http/") {
            "plugins get no network"
        } else if interface.starts_with("wasi:filesystem/") {
            "plugins get no files (sluice provides wasi:filesystem 0.2 with no directories)"
        } else if known {
            "sluice provides the 0.2.x versions of the WASI interfaces"
        } else {
            "plugins get only clocks, random, an empty environment and stdout/stderr into the log"
        };
        return Err(UnprovidedImport { import: name.to_string(), why });
    }
    Ok(())
}

/// The WASI state of one instance, built when the instance first uses WASI
/// (many plugins never do: their instances do not pay for it).
pub struct Wasi {
    pub ctx: WasiCtx,
    stdout: LogPipe,
    stderr: LogPipe,
}

impl Wasi {
    pub fn new(log: &Arc<PluginLog>) -> Self {
        let stdout = LogPipe::new(Source::Stdout, log.clone());
        let stderr = LogPipe::new(Source::Stderr, log.clone());
        // The defaults are the sandbox: no preopens, no environment or
        // arguments, closed stdin, host clocks and CSPRNG. Sockets are not
        // linked at all; deny them here as well.
        let ctx = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .max_random_size(MAX_RANDOM_BYTES)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self { ctx, stdout, stderr }
    }

    /// Log what the plugin wrote without a final newline.
    pub fn flush_output(&self) {
        self.stdout.flush_partial();
        self.stderr.flush_partial();
    }
}

/// Whether `error` is a plugin calling `wasi:cli/exit`, and with which status.
pub fn exit_status(error: &wasmtime::Error) -> Option<i32> {
    error.downcast_ref::<wasmtime_wasi::I32Exit>().map(|exit| exit.0)
}

/// The resources of a denied interface: never created.
struct Denied;

/// Define each `wasi:sockets` interface `component` imports with functions
/// that fail the call, naming themselves: the network stays out of reach,
/// and a plugin that tries it is told why.
pub fn deny_network(component: &Component, engine: &Engine, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let ty = component.component_type();
    for (name, import) in ty.imports(engine) {
        let ComponentItem::ComponentInstance(instance) = import.ty else { continue };
        if !name.starts_with(DENIED_PREFIX) {
            continue;
        }
        let mut defined = linker.instance(name)?;
        for (item, export) in instance.exports(engine) {
            match export.ty {
                ComponentItem::ComponentFunc(_) => {
                    let called = format!("{name}#{item}");
                    defined.func_new(item, move |_, _, _, _| {
                        wasmtime::bail!("the plugin called `{called}`: plugins get no network")
                    })?;
                }
                // `wasi:io`'s streams and pollables appear here as aliases:
                // they must stay the types `wasi:io` defines.
                ComponentItem::Resource(_) => match item {
                    "input-stream" => defined.resource(item, ResourceType::host::<DynInputStream>(), drop_input)?,
                    "output-stream" => defined.resource(item, ResourceType::host::<DynOutputStream>(), drop_output)?,
                    "pollable" => defined.resource(item, ResourceType::host::<DynPollable>(), drop_pollable)?,
                    _ => defined.resource(item, ResourceType::host::<Denied>(), |_, _| Ok(()))?,
                },
                _ => {}
            }
        }
    }
    Ok(())
}

struct HasTable;

impl HasData for HasTable {
    type Data<'a> = &'a mut ResourceTable;
}

fn table(state: &mut HostState) -> &mut ResourceTable {
    &mut state.table
}

/// Define the provided interfaces in `linker`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    type T = HostState;
    let l = &mut *linker;
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<T, HasTable>(l, table)?;
    sync::io::poll::add_to_linker::<T, HasTable>(l, table)?;
    sync::io::streams::add_to_linker::<T, HasTable>(l, table)?;
    clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    clocks::monotonic_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    random::random::add_to_linker::<T, WasiRandom>(l, T::random)?;
    random::insecure::add_to_linker::<T, WasiRandom>(l, T::random)?;
    random::insecure_seed::add_to_linker::<T, WasiRandom>(l, T::random)?;
    filesystem::preopens::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    sync::filesystem::types::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    linker.allow_shadowing(true);
    let replaced = replace_blocking_functions(linker);
    linker.allow_shadowing(false);
    replaced
}

type StreamResult<T> = wasmtime::Result<(Result<T, wasi_streams::StreamError>,)>;

/// Replace every function `wasmtime-wasi` would run with Tokio's `block_on`.
fn replace_blocking_functions(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut poll = linker.instance(&format!("wasi:io/poll@{WASI_VERSION}"))?;
    poll.func_wrap("poll", |mut store: StoreContextMut<'_, T>, (list,): (Vec<Resource<DynPollable>>,)| {
        let ready = now_or_fail("wasi:io/poll#poll", wasi_poll::Host::poll(table(store.data_mut()), list))??;
        Ok((ready,))
    })?;
    poll.func_wrap("[method]pollable.ready", |mut store: StoreContextMut<'_, T>, (p,): (Resource<DynPollable>,)| {
        // "Is it ready now?" never waits: not ready yet is an answer.
        let ready = run_now(wasi_poll::HostPollable::ready(table(store.data_mut()), p));
        Ok((ready.transpose()?.unwrap_or(false),))
    })?;
    poll.func_wrap("[method]pollable.block", |mut store: StoreContextMut<'_, T>, (p,): (Resource<DynPollable>,)| {
        now_or_fail("wasi:io/poll#[method]pollable.block", wasi_poll::HostPollable::block(table(store.data_mut()), p))?
    })?;

    let mut streams = linker.instance(&format!("wasi:io/streams@{WASI_VERSION}"))?;
    streams.resource("output-stream", ResourceType::host::<DynOutputStream>(), drop_output)?;
    streams.resource("input-stream", ResourceType::host::<DynInputStream>(), drop_input)?;
    streams.func_wrap(
        "[method]output-stream.blocking-write-and-flush",
        |mut store: StoreContextMut<'_, T>, (s, bytes): (Resource<DynOutputStream>, Vec<u8>)| -> StreamResult<()> {
            let table = table(store.data_mut());
            let result = now_or_fail("blocking-write-and-flush", table.blocking_write_and_flush(s, bytes))?;
            stream_result(table, result)
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-write-zeroes-and-flush",
        |mut store: StoreContextMut<'_, T>, (s, len): (Resource<DynOutputStream>, u64)| -> StreamResult<()> {
            let table = table(store.data_mut());
            let result = now_or_fail("blocking-write-zeroes-and-flush", table.blocking_write_zeroes_and_flush(s, len))?;
            stream_result(table, result)
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-flush",
        |mut store: StoreContextMut<'_, T>, (s,): (Resource<DynOutputStream>,)| -> StreamResult<()> {
            let table = table(store.data_mut());
            let result = now_or_fail("blocking-flush", table.blocking_flush(s))?;
            stream_result(table, result)
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-splice",
        |mut store: StoreContextMut<'_, T>,
         (s, from, len): (Resource<DynOutputStream>, Resource<DynInputStream>, u64)|
         -> StreamResult<u64> {
            let table = table(store.data_mut());
            let result = now_or_fail("blocking-splice", table.blocking_splice(s, from, len))?;
            stream_result(table, result)
        },
    )?;
    streams.func_wrap(
        "[method]input-stream.blocking-read",
        |mut store: StoreContextMut<'_, T>, (s, len): (Resource<DynInputStream>, u64)| -> StreamResult<Vec<u8>> {
            let table = table(store.data_mut());
            let result = now_or_fail("blocking-read", table.blocking_read(s, len))?;
            stream_result(table, result)
        },
    )?;
    streams.func_wrap(
        "[method]input-stream.blocking-skip",
        |mut store: StoreContextMut<'_, T>, (s, len): (Resource<DynInputStream>, u64)| -> StreamResult<u64> {
            let table = table(store.data_mut());
            let result = now_or_fail("blocking-skip", table.blocking_skip(s, len))?;
            stream_result(table, result)
        },
    )?;

    // Timers that never touch Tokio: ready once their deadline has passed.
    let mut clock = linker.instance(&format!("wasi:clocks/monotonic-clock@{WASI_VERSION}"))?;
    clock.func_wrap("subscribe-duration", |mut store: StoreContextMut<'_, T>, (nanos,): (u64,)| {
        Ok((subscribe_deadline(table(store.data_mut()), nanos)?,))
    })?;
    clock.func_wrap("subscribe-instant", |mut store: StoreContextMut<'_, T>, (when,): (u64,)| {
        let now = clocks::monotonic_clock::Host::now(&mut store.data_mut().clocks())?;
        Ok((subscribe_deadline(table(store.data_mut()), when.saturating_sub(now))?,))
    })?;
    Ok(())
}

type T = HostState;

fn drop_output(mut store: StoreContextMut<'_, T>, rep: u32) -> wasmtime::Result<()> {
    table(store.data_mut()).delete(Resource::<DynOutputStream>::new_own(rep))?;
    Ok(())
}

fn drop_input(mut store: StoreContextMut<'_, T>, rep: u32) -> wasmtime::Result<()> {
    table(store.data_mut()).delete(Resource::<DynInputStream>::new_own(rep))?;
    Ok(())
}

fn drop_pollable(mut store: StoreContextMut<'_, T>, rep: u32) -> wasmtime::Result<()> {
    wasi_poll::HostPollable::drop(table(store.data_mut()), Resource::new_own(rep))
}

fn stream_result<V>(table: &mut ResourceTable, result: Result<V, wasmtime_wasi::p2::StreamError>) -> StreamResult<V> {
    match result {
        Ok(value) => Ok((Ok(value),)),
        Err(error) => Ok((Err(wasi_streams::Host::convert_stream_error(table, error)?),)),
    }
}

/// A monotonic-clock timer.
struct Deadline(Option<Instant>);

#[wasmtime_wasi::async_trait]
impl Pollable for Deadline {
    async fn ready(&mut self) {
        match self.0 {
            Some(deadline) if Instant::now() >= deadline => {}
            _ => std::future::pending().await,
        }
    }
}

fn subscribe_deadline(table: &mut ResourceTable, nanos: u64) -> wasmtime::Result<Resource<DynPollable>> {
    let deadline = Instant::now().checked_add(Duration::from_nanos(nanos));
    let timer = table.push(Deadline(deadline))?;
    wasmtime_wasi::p2::subscribe(table, timer)
}

/// Poll `future` a few times without ever waiting: the streams and timers
/// plugins can reach are either ready at once or never within a call.
fn run_now<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    // A few polls: a zero-length timer yields once before it is ready.
    for _ in 0..4 {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return Some(output);
        }
    }
    None
}

/// [`run_now`], failing the call when the plugin would have to wait.
fn now_or_fail<F: Future>(what: &str, future: F) -> wasmtime::Result<F::Output> {
    run_now(future).ok_or_else(|| {
        wasmtime::format_err!(
            "the plugin waited on `{what}` for something that is not ready (a sleep, a timer or \
             input): a plugin may not block"
        )
    })
}
