//! Smoke tests of the built `sluice` binary itself.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use tokio::io::AsyncWriteExt;

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

#[test]
fn check_accepts_the_demo_config() {
    let output = sluice().arg("check").arg("--config").arg(repo_root().join("examples/demo.toml")).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(": ok (1 listeners, 3 backends, 2 plugins loaded and probed)"), "{stdout}");
    // The verdict is on stdout; a clean check says nothing on stderr.
    assert_eq!(String::from_utf8_lossy(&output.stderr), "", "stderr of a successful check");
}

#[test]
fn check_names_the_file_and_field_of_each_problem() {
    let dir = std::env::temp_dir().join(format!("sluice-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("broken.toml");
    std::fs::write(
        &config,
        "[[listeners]]\nname = \"a\"\nbind = \"nowhere\"\nsniff = \"sniff\"\n[plugins.sniff]\nbuiltin = \"snif\"\n",
    )
    .unwrap();
    let output = sluice().arg("check").arg("--config").arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("broken.toml: 2 problems"), "{stderr}");
    assert!(stderr.contains("listeners[0].bind: `nowhere` is not an address with a port"), "{stderr}");
    assert!(stderr.contains("plugins.sniff.builtin: no built-in plugin `snif` (built-in: sniff, path)"), "{stderr}");
}

#[tokio::test]
async fn the_binary_serves_and_stops_cleanly_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("sluice-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("run.toml");
    let backend = tagged_echo("backend").await;
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\nname = \"main\"\nbind = \"127.0.0.1:0\"\nsniff = \"sniff\"\ndefault-backend = \"b\"\n\
             [backends.b]\nservers = [\"{backend}\"]\n[plugins.sniff]\nbuiltin = \"sniff\"\n"
        ),
    )
    .unwrap();
    let mut child = sluice().arg("--config").arg(&config).env("NO_COLOR", "1").stderr(Stdio::piped()).spawn().unwrap();
    // The log line "listening listener=main addr=127.0.0.1:PORT" tells the port.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("sluice exited before listening").unwrap();
        if let Some(at) = line.find("addr=") {
            break line[at + 5..].split_whitespace().next().unwrap().to_string();
        }
    };
    let mut client = tokio::net::TcpStream::connect(&addr).await.unwrap();
    client.write_all(b"<policy-file-request/>\0").await.unwrap();
    let policy = read_to_end(&mut client).await;
    assert!(policy.ends_with(b"</cross-domain-policy>\0"), "{}", String::from_utf8_lossy(&policy));

    let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    std::thread::spawn(move || for _ in lines {}); // keep draining the log
    assert!(child.wait().unwrap().success(), "exit code 0 after a clean drain");
}
