//! Every TOML example in the README and in docs/ is a config sluice accepts.
//!
//! A fenced ```toml block is written to a temporary directory and run through
//! `sluice check`, the way a reader would try it. Certificates it names are
//! generated there first (self-signed, for the names the block gives), so an
//! example with TLS is checked too. A block whose first line is `# fragment`
//! is a piece of a config (one backend, one table): it is only parsed as TOML.

mod common;

use common::repo_root;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One fenced ```toml block of a Markdown page.
struct Example {
    page: PathBuf,
    line: usize,
    text: String,
}

fn pages() -> Vec<PathBuf> {
    let root = repo_root();
    let mut pages = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

fn toml_blocks(page: &Path) -> Vec<Example> {
    let text = std::fs::read_to_string(page).unwrap();
    let mut examples = Vec::new();
    let mut current: Option<Example> = None;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut current {
            None if trimmed.starts_with("```toml") => {
                current = Some(Example { page: page.to_path_buf(), line: index + 1, text: String::new() });
            }
            Some(example) if trimmed.starts_with("```") => {
                examples
                    .push(std::mem::replace(example, Example { page: PathBuf::new(), line: 0, text: String::new() }));
                current = None;
            }
            Some(example) => {
                // Blocks indented inside a list item keep their indentation.
                let indent = line.len() - trimmed.len();
                example.text.push_str(if indent > 0 && line.len() >= indent { &line[indent..] } else { line });
                example.text.push('\n');
            }
            None => {}
        }
    }
    examples
}

fn is_fragment(example: &Example) -> bool {
    example.text.lines().next().is_some_and(|first| first.trim() == "# fragment")
}

/// Writes a self-signed certificate and key for every `[[listeners.certificates]]` entry.
fn write_certificates(config: &toml::Table, dir: &Path) {
    let listeners = config.get("listeners").and_then(|l| l.as_array()).cloned().unwrap_or_default();
    for listener in listeners {
        let certificates = listener.get("certificates").and_then(|c| c.as_array()).cloned().unwrap_or_default();
        for certificate in certificates {
            let (Some(cert), Some(key)) =
                (certificate.get("cert").and_then(|c| c.as_str()), certificate.get("key").and_then(|k| k.as_str()))
            else {
                continue;
            };
            let names: Vec<String> = certificate
                .get("names")
                .and_then(|n| n.as_array())
                .map(|names| names.iter().filter_map(|n| n.as_str().map(str::to_string)).collect())
                .unwrap_or_else(|| vec!["example.com".to_string()]);
            let rcgen::CertifiedKey { cert: generated, signing_key } =
                rcgen::generate_simple_self_signed(names).unwrap();
            for (path, pem) in [(cert, generated.pem()), (key, signing_key.serialize_pem())] {
                let path = dir.join(path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, pem).unwrap();
            }
        }
    }
}

#[test]
fn every_toml_example_in_the_docs_is_accepted() {
    let examples: Vec<Example> = pages().iter().flat_map(|page| toml_blocks(page)).collect();
    assert!(examples.len() >= 10, "found only {} TOML examples: is the parser right?", examples.len());
    let scratch = std::env::temp_dir().join(format!("sluice-docs-examples-{}", std::process::id()));
    let mut failures = Vec::new();
    for (n, example) in examples.iter().enumerate() {
        let at =
            format!("{}:{}", example.page.strip_prefix(repo_root()).unwrap_or(&example.page).display(), example.line);
        let parsed: toml::Table = match toml::from_str(&example.text) {
            Ok(table) => table,
            Err(e) => {
                failures.push(format!("{at}: not valid TOML: {e}"));
                continue;
            }
        };
        if is_fragment(example) {
            continue;
        }
        let dir = scratch.join(n.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        write_certificates(&parsed, &dir);
        let config = dir.join("sluice.toml");
        std::fs::write(&config, &example.text).unwrap();
        let output =
            Command::new(env!("CARGO_BIN_EXE_sluice")).arg("check").arg("--config").arg(&config).output().unwrap();
        if !output.status.success() {
            failures.push(format!(
                "{at}: `sluice check` refused it (mark a partial example with a first line `# fragment`):\n{}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(
        failures.is_empty(),
        "{} of {} TOML examples failed:\n\n{}",
        failures.len(),
        examples.len(),
        failures.join("\n")
    );
}
