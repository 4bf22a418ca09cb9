//! The packaging checked for real: the systemd unit (`systemd-analyze`, and
//! the readiness protocol spoken by the built binary to a notify socket),
//! the Dockerfile (hadolint, and its paths and versions against this
//! repository), the Kubernetes manifests (`packaging/kubernetes.rs`: parsed,
//! probes against the real admin listener, grace periods) and scaling out
//! (two instances agree on servers without shared state).
//!
//! Tools that are not on the machine skip their check, except under
//! `CI=true`, where a missing tool fails the test.

mod common;
#[path = "packaging/kubernetes.rs"]
mod kubernetes;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn repo_file(path: &str) -> String {
    let full = common::repo_root().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

/// A fresh directory for one test's files.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-packaging-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether `tool` runs. Missing: the caller skips, unless CI=true (then the test fails).
fn have_tool(tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !found {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "`{tool}` is missing, and CI=true requires it");
        eprintln!("skipping: `{tool}` is not installed");
    }
    found
}

/// The value after `flag` in a command line, e.g. `--grace 30s`.
fn flag_value<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    args.iter().position(|arg| *arg == flag).and_then(|at| args.get(at + 1).copied())
}

// ---- systemd -------------------------------------------------------------

const UNIT: &str = "deploy/systemd/sluice.service";
const INSTALLED_BINARY: &str = "/usr/local/bin/sluice";

/// `[Service]` settings of the unit; a repeated key keeps every value.
fn unit_settings(unit: &str) -> BTreeMap<String, Vec<String>> {
    let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = "";
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[Service]"
            && let Some((key, value)) = line.split_once('=')
            && !line.starts_with('#')
        {
            settings.entry(key.to_string()).or_default().push(value.to_string());
        }
    }
    settings
}

#[test]
fn the_systemd_unit_verifies_and_its_stop_timeout_covers_the_grace_period() {
    let unit = repo_file(UNIT);
    let settings = unit_settings(&unit);
    let one = |key: &str| -> &str {
        let values = settings.get(key).unwrap_or_else(|| panic!("{UNIT} sets {key}"));
        values.last().unwrap()
    };
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    let exec: Vec<&str> = one("ExecStart").split_whitespace().collect();
    assert_eq!(exec[0], INSTALLED_BINARY);
    let grace = sluice::config::parse_duration(flag_value(&exec, "--grace").expect("ExecStart sets --grace")).unwrap();
    let stop_timeout = sluice::config::parse_duration(one("TimeoutStopSec")).unwrap();
    assert!(stop_timeout > grace, "TimeoutStopSec {stop_timeout:?} must exceed --grace {grace:?}");
    assert_eq!(one("StateDirectory"), "sluice", "ACME state lives in /var/lib/sluice");
    assert_eq!(one("CapabilityBoundingSet"), "CAP_NET_BIND_SERVICE");

    if !have_tool("systemd-analyze") {
        return;
    }
    // verify wants the binaries to exist: point the copy at the one just built.
    let dir = temp_dir("unit");
    let copy = dir.join("sluice.service");
    std::fs::write(&copy, unit.replace(INSTALLED_BINARY, env!("CARGO_BIN_EXE_sluice"))).unwrap();
    let verify = Command::new("systemd-analyze").arg("verify").arg(&copy).output().unwrap();
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "systemd-analyze verify failed:\n{stderr}");
    // A misspelt key or value is only a warning ("…, ignoring"): refuse those too.
    assert_eq!(stderr.trim(), "", "systemd-analyze verify warned");

    // The hardening holds: an exposure score of at most 2.0 ("OK") of 10.
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(&copy)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    assert!(security.status.success(), "exposure above 2.0:\n{report}{}", String::from_utf8_lossy(&security.stderr));
}

/// The built binary under a fake service manager: a datagram socket in
/// `$NOTIFY_SOCKET`, as systemd gives a `Type=notify` service.
struct Notified {
    child: Child,
    socket: UnixDatagram,
}

impl Notified {
    /// The next notification, as `KEY=value` lines.
    fn next(&self) -> Vec<String> {
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).expect("a notification within the deadline");
        String::from_utf8_lossy(&buf[..n]).lines().map(str::to_string).collect()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for Notified {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn value<'a>(message: &'a [String], key: &str) -> Option<&'a str> {
    message.iter().find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn the_binary_tells_the_service_manager_it_is_ready_reloading_and_stopping() {
    let dir = temp_dir("notify");
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        "[[listeners]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\nsniff = \"sniff\"\ndefault-backend = \"b\"\n\
         [backends.b]\nservers = [\"127.0.0.1:9\"]\n[plugins.sniff]\nbuiltin = \"sniff\"\n\
         [admin]\nbind = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sluice = Notified { child, socket };

    // The first message is READY=1, naming the main process and where it listens.
    let ready = sluice.next();
    assert!(ready.contains(&"READY=1".to_string()), "{ready:?}");
    assert_eq!(value(&ready, "MAINPID"), Some(sluice.child.id().to_string().as_str()), "{ready:?}");
    let status = value(&ready, "STATUS").expect("a STATUS line");
    let addr_of = |name: &str| -> String {
        let at = status.find(&format!("{name} ")).unwrap_or_else(|| panic!("`{name}` in {status}")) + name.len() + 1;
        status[at..].split(';').next().unwrap().trim().to_string()
    };
    let (main, admin) = (addr_of("main"), addr_of("admin"));

    // Connections made after READY=1 are served: the Flash policy from the
    // sniff plugin on the main listener, 200 from the admin /healthz.
    let mut client = std::net::TcpStream::connect(&main).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    client.write_all(b"<policy-file-request/>\0").unwrap();
    let mut policy = Vec::new();
    client.read_to_end(&mut policy).unwrap();
    assert!(policy.ends_with(b"</cross-domain-policy>\0"), "{}", String::from_utf8_lossy(&policy));
    let mut probe = std::net::TcpStream::connect(&admin).unwrap();
    probe.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    probe.write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    probe.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // SIGHUP: RELOADING=1 with the monotonic clock, then READY=1 once reloaded.
    sluice.signal("HUP");
    let reloading = sluice.next();
    assert!(reloading.contains(&"RELOADING=1".to_string()), "{reloading:?}");
    let usec = value(&reloading, "MONOTONIC_USEC").expect("MONOTONIC_USEC with RELOADING=1");
    assert!(usec.parse::<u64>().is_ok_and(|usec| usec > 0), "{reloading:?}");
    let reloaded = sluice.next();
    assert!(reloaded.contains(&"READY=1".to_string()), "{reloaded:?}");
    assert!(value(&reloaded, "STATUS").is_some_and(|s| s.starts_with("reloaded: ")), "{reloaded:?}");

    // SIGTERM: STOPPING=1 when the drain begins, then a clean exit.
    sluice.signal("TERM");
    let stopping = sluice.next();
    assert!(stopping.contains(&"STOPPING=1".to_string()), "{stopping:?}");
    let mut sluice = sluice;
    let exit = sluice.child.wait().unwrap();
    assert!(exit.success(), "{exit}");
}

// ---- Docker --------------------------------------------------------------

/// The Dockerfile's instructions (continuation lines joined), without comments.
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => current.push_str(start),
            None => {
                current.push_str(line);
                let (op, rest) = current.trim().split_once(' ').unwrap_or((current.trim(), ""));
                instructions.push((op.to_ascii_uppercase(), rest.trim().to_string()));
                current.clear();
            }
        }
    }
    instructions
}

/// A JSON-array instruction (`CMD ["a", "b"]`) as its words.
fn exec_form(value: &str) -> Vec<String> {
    serde_json::from_str(value).unwrap_or_else(|e| panic!("`{value}` is not an exec-form array: {e}"))
}

#[test]
fn the_dockerfile_agrees_with_the_repository_and_lints_clean() {
    let text = repo_file("Dockerfile");
    let all = dockerfile_instructions(&text);
    let last_from = all.iter().rposition(|(op, _)| op == "FROM").expect("a FROM");
    let runtime = &all[last_from..];
    let get = |op: &str| runtime.iter().filter(|(o, _)| o == op).map(|(_, v)| v.as_str()).collect::<Vec<_>>();

    // The build uses the toolchain pinned for everyone else.
    let toolchain: toml::Table = toml::from_str(&repo_file("rust-toolchain.toml")).unwrap();
    let channel = toolchain["toolchain"]["channel"].as_str().unwrap();
    assert!(all.iter().any(|(op, v)| op == "ARG" && v == &format!("RUST_VERSION={channel}")), "RUST_VERSION={channel}");

    // The runtime stage runs as a numeric non-root user (Kubernetes'
    // runAsNonRoot can only check numbers) and drains on SIGTERM.
    let user = get("USER");
    let uid: u32 = user.last().expect("a USER").split(':').next().unwrap().parse().expect("a numeric USER");
    assert_ne!(uid, 0, "the image runs as root");
    assert_eq!(kubernetes::pod_uid(), i64::from(uid), "deployment.yaml runs as the image's user");
    assert_eq!(get("STOPSIGNAL"), ["SIGTERM"]);

    // The paths the build stage copies out are where this build puts them.
    let target = Path::new(env!("SLUICE_PLUGIN_DIR"))
        .ancestors()
        .find(|dir| dir.file_name().is_some_and(|name| name == "build"))
        .and_then(|build| build.parent()?.parent())
        .expect("OUT_DIR is under <target>/<profile>/build")
        .to_path_buf();
    let copied: Vec<&str> =
        all.iter().flat_map(|(_, v)| v.split_whitespace()).filter(|w| w.starts_with("target/")).collect();
    assert!(copied.contains(&"target/release/sluice"), "{copied:?}");
    assert_eq!(Path::new(env!("CARGO_BIN_EXE_sluice")), target.join("release/sluice"));
    for path in &copied {
        let built = target.join(path.trim_start_matches("target/"));
        assert!(built.is_file(), "the Dockerfile copies {path}, but the build has no {}", built.display());
    }
    assert!(copied.iter().any(|p| p.ends_with("/sniff.wasm")) && copied.iter().any(|p| p.ends_with("/path.wasm")));

    // The default config it ships is valid, and its ports are the exposed ones.
    let (source, dest) = get("COPY")
        .iter()
        .find_map(|v| v.ends_with(".toml").then(|| v.split_once(' ').unwrap()))
        .expect("a COPY of the default config");
    let cmd = exec_form(get("CMD").last().expect("a CMD"));
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    assert_eq!(flag_value(&cmd, "--config"), Some(dest.trim()), "CMD runs the config the image ships");
    sluice::config::parse_duration(flag_value(&cmd, "--grace").expect("CMD sets --grace")).unwrap();
    assert_eq!(exec_form(get("ENTRYPOINT")[0]), ["/usr/local/bin/sluice"]);
    let check = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["check", "--config"])
        .arg(common::repo_root().join(source))
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let config = sluice::Config::load(&common::repo_root().join(source)).unwrap();
    let mut ports: Vec<u16> = config.listeners.iter().map(|l| l.bind.port()).collect();
    ports.extend(config.admin.iter().map(|admin| admin.bind.port()));
    ports.sort();
    let mut exposed: Vec<u16> =
        get("EXPOSE").iter().flat_map(|v| v.split_whitespace()).map(|p| p.parse().unwrap()).collect();
    exposed.sort();
    assert_eq!(exposed, ports, "EXPOSE lists the default config's listener and admin ports");

    // Build output and history stay out of the build context.
    let ignore = repo_file(".dockerignore");
    for excluded in ["target", ".git", "**/node_modules"] {
        assert!(ignore.lines().any(|line| line.trim() == excluded), ".dockerignore lacks {excluded}");
    }

    if have_tool("hadolint") {
        let lint = Command::new("hadolint").arg(common::repo_root().join("Dockerfile")).output().unwrap();
        assert!(lint.status.success(), "hadolint:\n{}", String::from_utf8_lossy(&lint.stdout));
    }
}
