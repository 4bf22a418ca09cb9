//! The Socket.IO example (`examples/socketio/`) end to end, with the real
//! software people use: the example's web app and two Socket.IO v4 nodes
//! (Node.js, on free loopback ports), sluice in process with the example's own
//! `sluice.toml` (ports and certificate paths swapped for the test's), then
//! `browser.mjs` (headless Chromium loads the page over HTTPS and over HTTP)
//! and `e2e.mjs` (socket.io-client: polling, upgrade, WebSocket-only, 20×20
//! polling round trips over both nodes, Flash policy on both ports, client
//! address, Host routing, a node killed mid-run).
//!
//! Needs `node` (20+), `npm ci` in examples/socketio and Debian's `chromium`
//! at /usr/bin/chromium (or `CHROMIUM`). Without them the test is skipped
//! with a message, unless `CI` is set: then it fails and says what to install.
//! Logs and the screenshot go to `target/socketio-e2e/`.
#![cfg(unix)]

mod common;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Each script has its own deadline inside; these are the outer ones.
const SERVER_START: Duration = Duration::from_secs(10);
// Chromium's cold start alone may take up to 45 s on a busy machine (browser.mjs).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(100);
const E2E_TIMEOUT: Duration = Duration::from_secs(65);

fn example_dir() -> PathBuf {
    repo_root().join("examples/socketio")
}

/// `target/socketio-e2e/`: logs of every process, certificates, the screenshot.
fn out_dir() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("the target directory").to_path_buf();
    let dir = target.join("socketio-e2e");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// What is missing to run the test, if anything.
fn missing_prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let major: u32 =
                version.trim_start_matches('v').split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
            if major < 20 {
                missing.push(format!("Node.js 20 or later (found {version})"));
            }
        }
        _ => missing.push("Node.js 20 or later (`node` on PATH)".to_string()),
    }
    for package in ["socket.io", "socket.io-client", "playwright-core"] {
        if !example_dir().join("node_modules").join(package).join("package.json").is_file() {
            missing.push(format!("examples/socketio/node_modules/{package} (run `npm ci --prefix examples/socketio`)"));
        }
    }
    if !chromium().is_file() {
        missing.push(format!(
            "Chromium at {} (Debian: `apt-get install --no-install-recommends chromium`, or set CHROMIUM)",
            chromium().display()
        ));
    }
    missing
}

/// A process started by the test; stopped when dropped (also when the test
/// panics): SIGTERM (the nodes close cleanly; browser.mjs's Playwright closes
/// Chromium), up to 3 s to exit, then SIGKILL. Not in a process group of its
/// own, so a Ctrl-C on `cargo test` reaches it too.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    reaped: bool,
}

impl Proc {
    fn spawn(name: &str, program: &str, args: &[&str], env: &[(&str, String)]) -> Proc {
        let log = out_dir().join(format!("{name}.log"));
        let file = File::create(&log).unwrap();
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(example_dir())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().unwrap_or_else(|e| panic!("starting {name} ({program}): {e}"));
        Proc { name: name.to_string(), child, log, reaped: false }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status if it has exited (reaps it).
    fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.try_wait().ok().flatten();
        self.reaped |= status.is_some();
        status
    }

    /// Wait for the port it prints (`listening on http://127.0.0.1:PORT`).
    async fn port(&mut self) -> u16 {
        let deadline = Instant::now() + SERVER_START;
        loop {
            let output = self.output();
            if let Some(port) = output
                .split("listening on http://127.0.0.1:")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|digits| digits.parse().ok())
            {
                return port;
            }
            if let Some(status) = self.exited() {
                panic!("{} exited ({status}) before listening:\n{output}", self.name);
            }
            assert!(Instant::now() < deadline, "{} did not listen within {SERVER_START:?}:\n{output}", self.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until it exits, at most `timeout`; `None` on timeout (then it is
    /// stopped when dropped).
    async fn finish(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// Exited (a zombie until reaped: its pid is still ours) or gone.
    fn is_zombie_or_gone(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid())) {
            // "pid (comm) S ...": the state follows the last ')'.
            Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
            Err(_) => true,
        }
    }
}

/// SIGTERM to a process this test started and has not reaped (by its id).
fn terminate(pid: u32) {
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.reaped {
            return; // exited and reaped: the pid may belong to someone else by now
        }
        terminate(self.pid());
        let deadline = Instant::now() + Duration::from_secs(3);
        while !self.is_zombie_or_gone() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

/// A CA and a certificate for localhost, api.localhost and 127.0.0.1 signed by it.
struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_certs(dir: &Path) -> Certs {
    std::fs::create_dir_all(dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "sluice socketio test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let names = ["localhost", "api.localhost", "127.0.0.1"].map(String::from).to_vec();
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let certs = Certs { ca: dir.join("ca.pem"), cert: dir.join("localhost.pem"), key: dir.join("localhost-key.pem") };
    std::fs::write(&certs.ca, ca_cert.pem()).unwrap();
    std::fs::write(&certs.cert, cert.pem()).unwrap();
    std::fs::write(&certs.key, key.serialize_pem()).unwrap();
    certs
}

/// A port that was free a moment ago (sluice binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Replace every `from` with `to`; the example must still contain `from`, so
/// a change to the example's config cannot silently bypass this test.
fn swap(config: String, from: &str, to: &str) -> String {
    assert!(config.contains(from), "examples/socketio/sluice.toml no longer contains `{from}`");
    config.replace(from, to)
}

/// Run a script to the end; panics with its output if it fails or hangs.
async fn run_script(name: &str, script: &str, env: &[(&str, String)], timeout: Duration) -> String {
    let started = Instant::now();
    let mut proc = Proc::spawn(name, "node", &[script], env);
    let status = proc.finish(timeout).await;
    let output = proc.output();
    let took = started.elapsed();
    match status {
        Some(status) if status.success() => {
            println!("--- {script} ({took:.1?}) ---\n{output}");
            output
        }
        Some(status) => panic!("{script} failed ({status}) after {took:.1?}:\n{output}"),
        None => panic!("{script} did not finish within {timeout:?}:\n{output}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn socketio_example_end_to_end() {
    let missing = missing_prerequisites();
    if !missing.is_empty() {
        let list = missing.iter().map(|m| format!("  - {m}")).collect::<Vec<_>>().join("\n");
        if std::env::var_os("CI").is_some() {
            panic!(
                "the Socket.IO end-to-end test needs (CI is set, so it is not skipped):\n{list}\n\
                 .ci/run installs them: apt-get install --no-install-recommends chromium; \
                 npm ci --prefix examples/socketio"
            );
        }
        eprintln!(
            "skipped socketio_example_end_to_end: run `npm ci` in examples/socketio and install chromium \
             (apt-get install --no-install-recommends chromium). Missing:\n{list}"
        );
        return;
    }
    let out = out_dir();
    let certs = make_certs(&out.join("certs"));

    // The backends, each on a port of its own choosing.
    let mut web = Proc::spawn("web", "node", &["app.js", "0", "web"], &[]);
    let mut api = Proc::spawn("api", "node", &["app.js", "0", "api"], &[]);
    let mut node_a = Proc::spawn("node-a", "node", &["node.js", "0", "node-a"], &[]);
    let mut node_b = Proc::spawn("node-b", "node", &["node.js", "0", "node-b"], &[]);
    let (web_port, api_port) = (web.port().await, api.port().await);
    let (a_port, b_port) = (node_a.port().await, node_b.port().await);

    // sluice in process, with the example's config.
    let (public, policy) = (free_port(), free_port());
    let mut config = std::fs::read_to_string(example_dir().join("sluice.toml")).unwrap();
    for (from, to) in [
        ("127.0.0.1:8080", format!("127.0.0.1:{public}")),
        ("127.0.0.1:8843", format!("127.0.0.1:{policy}")),
        ("127.0.0.1:9100", format!("127.0.0.1:{web_port}")),
        ("127.0.0.1:9101", format!("127.0.0.1:{a_port}")),
        ("127.0.0.1:9102", format!("127.0.0.1:{b_port}")),
        ("127.0.0.1:9103", format!("127.0.0.1:{api_port}")),
        ("to-ports=\"8080\"", format!("to-ports=\"{public}\"")),
        ("\"certs/localhost.pem\"", format!("{:?}", certs.cert.display().to_string())),
        ("\"certs/localhost-key.pem\"", format!("{:?}", certs.key.display().to_string())),
    ] {
        config = swap(config, from, &to);
    }
    std::fs::write(out.join("sluice.toml"), &config).unwrap();
    let proxy = Proxy::start(&config).await;
    assert_eq!(proxy.addr("public").port(), public);
    println!(
        "sluice on 127.0.0.1:{public} (policy {policy}); web {web_port}, api {api_port}, \
         node-a {a_port}, node-b {b_port}; logs in {}",
        out.display()
    );

    // The browser first: e2e.mjs ends by killing a node.
    let screenshot = out.join("page.png");
    let _ = std::fs::remove_file(&screenshot);
    let browser = run_script(
        "browser",
        "browser.mjs",
        &[
            ("PAGE_URL", format!("https://localhost:{public}/")),
            ("HTTP_PAGE_URL", format!("http://127.0.0.1:{public}/")),
            ("CHROMIUM", chromium().display().to_string()),
            ("SCREENSHOT", screenshot.display().to_string()),
            ("BROWSER_TIMEOUT_MS", "90000".to_string()),
        ],
        BROWSER_TIMEOUT,
    )
    .await;
    assert!(browser.contains("browser checks passed"), "{browser}");
    assert!(screenshot.is_file(), "no screenshot at {}", screenshot.display());
    println!("screenshot: {}", screenshot.display());

    let e2e = run_script(
        "e2e",
        "e2e.mjs",
        &[
            ("BASE_URL", format!("http://127.0.0.1:{public}")),
            ("HTTPS_URL", format!("https://127.0.0.1:{public}")),
            ("FLASH_PORT", policy.to_string()),
            ("CA_FILE", certs.ca.display().to_string()),
            ("NODE_PIDS", format!("node-a={},node-b={}", node_a.pid(), node_b.pid())),
            ("KILL_NODE", "node-a".to_string()),
            ("E2E_TIMEOUT_MS", "60000".to_string()),
        ],
        E2E_TIMEOUT,
    )
    .await;
    assert!(e2e.contains("all checks passed") && !e2e.contains("FAIL"), "{e2e}");
    for check in ["(a)", "(b)", "(c)", "(d)", "(e)", "(f)", "(g)", "(h)", "(i)", "(j)"] {
        assert!(e2e.lines().any(|line| line.starts_with(&format!("ok   {check}"))), "no `ok   {check}` in:\n{e2e}");
    }

    // node-a was killed by e2e.mjs; the others must still be running.
    for proc in [&mut web, &mut api, &mut node_b] {
        assert!(proc.exited().is_none(), "{} exited during the test:\n{}", proc.name, proc.output());
    }
    tokio::time::timeout(Duration::from_secs(10), proxy.stop()).await.expect("sluice stops");
}
