//! Tells a service manager (systemd's `Type=notify`, see `sd_notify(3)`)
//! where sluice is in its life: `READY=1` once every listener is bound,
//! `RELOADING=1` … `READY=1` around a SIGHUP reload, `STOPPING=1` when the
//! drain begins. Each message also carries a `STATUS=` line for
//! `systemctl status`.
//!
//! Without `$NOTIFY_SOCKET` (not started by systemd) every call does
//! nothing. A message that cannot be sent is logged and otherwise ignored:
//! the proxy serves whether or not its manager hears about it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once the drain began: a reload that ends after that must not
/// announce `READY=1` again.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Every listener (and the admin listener) is bound: connections made from
/// now on are accepted. Also names the main process and the addresses.
pub fn ready(listeners: &[(String, SocketAddr)], admin: Option<SocketAddr>) {
    let status = serving_status(listeners, admin);
    send(&[State::Ready, State::MainPid(std::process::id()), State::Status(&status)]);
}

/// A SIGHUP reload starts. systemd (253 and later) wants the monotonic
/// clock with it to match the reload it started to this message.
pub fn reloading() {
    send(&[State::Reloading, State::MonotonicUsecNow, State::Status("reloading (SIGHUP)")]);
}

/// The SIGHUP reload is over, swapped in or refused (the old version then
/// keeps serving, so sluice is ready either way).
pub fn reloaded(result: &Result<String, String>) {
    let status = match result {
        Ok(summary) => format!("reloaded: {summary}"),
        Err(error) => format!("reload refused, previous version still serving: {error}"),
    };
    if !STOPPING.load(Ordering::SeqCst) {
        send(&[State::Ready, State::Status(&one_line(&status))]);
    }
}

/// Shutdown began: no new connections; open ones drain for `grace`.
pub fn stopping(grace: std::time::Duration) {
    STOPPING.store(true, Ordering::SeqCst);
    let status = format!("draining: open connections have {grace:?} to finish");
    send(&[State::Stopping, State::Status(&status)]);
}

/// The `STATUS=` text once serving, e.g. `serving: public 127.0.0.1:8080; admin 127.0.0.1:9901`.
pub fn serving_status(listeners: &[(String, SocketAddr)], admin: Option<SocketAddr>) -> String {
    let mut parts: Vec<String> = listeners.iter().map(|(name, addr)| format!("{name} {addr}")).collect();
    if let Some(admin) = admin {
        parts.push(format!("admin {admin}"));
    }
    format!("serving: {}", parts.join("; "))
}

/// A `STATUS=` value must stay on one line of the message.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
enum State<'a> {
    Ready,
    Reloading,
    Stopping,
    MainPid(u32),
    MonotonicUsecNow,
    Status(&'a str),
}

#[cfg(target_os = "linux")]
fn send(states: &[State]) {
    use sd_notify::NotifyState;
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let mut message = Vec::with_capacity(states.len());
    for state in states {
        message.push(match state {
            State::Ready => NotifyState::Ready,
            State::Reloading => NotifyState::Reloading,
            State::Stopping => NotifyState::Stopping,
            State::MainPid(pid) => NotifyState::MainPid(*pid),
            State::Status(text) => NotifyState::Status(text),
            State::MonotonicUsecNow => match NotifyState::monotonic_usec_now() {
                Ok(now) => now,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the monotonic clock for the service manager");
                    continue;
                }
            },
        });
    }
    if let Err(error) = sd_notify::notify(&message) {
        tracing::warn!(%error, "cannot notify the service manager ($NOTIFY_SOCKET)");
    }
}

#[cfg(not(target_os = "linux"))]
fn send(_states: &[State]) {}
