//! The capture file: JSON lines of decision inputs, rotated to `FILE.1`,
//! `FILE.2`… when the next line would take it past its size cap, the oldest
//! beyond `keep` deleted. Written by the experiment worker, never on the
//! client's path.

use crate::config::experiments::CaptureConfig;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct CaptureFile {
    config: CaptureConfig,
    file: Option<File>,
    size: u64,
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

impl CaptureFile {
    pub fn new(config: CaptureConfig) -> CaptureFile {
        CaptureFile { config, file: None, size: 0 }
    }

    fn open(&mut self) -> std::io::Result<&mut File> {
        if self.file.is_none() {
            let file = OpenOptions::new().create(true).append(true).open(&self.config.file)?;
            self.size = file.metadata()?.len();
            self.file = Some(file);
        }
        Ok(self.file.as_mut().expect("just opened"))
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        let path = &self.config.file;
        if self.config.keep == 0 {
            return std::fs::remove_file(path);
        }
        let _ = std::fs::remove_file(numbered(path, self.config.keep));
        for n in (1..self.config.keep).rev() {
            let _ = std::fs::rename(numbered(path, n), numbered(path, n + 1));
        }
        std::fs::rename(path, numbered(path, 1))
    }

    /// Append one line (a newline is added).
    pub fn write(&mut self, line: &str) -> std::io::Result<()> {
        let len = line.len() as u64 + 1;
        self.open()?;
        if self.size > 0 && self.size + len > self.config.max_bytes {
            self.rotate()?;
        }
        let file = self.open()?;
        file.write_all(format!("{line}\n").as_bytes())?;
        self.size += len;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_under_the_cap_and_keeps_a_bounded_number_of_files() {
        let dir = std::env::temp_dir().join(format!("sluice-capture-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.jsonl");
        let config = CaptureConfig { file: file.clone(), sample_bp: 10_000, max_bytes: 100, keep: 2, redact: vec![] };
        let mut capture = CaptureFile::new(config);
        for i in 0..50 {
            capture.write(&format!("{{\"line\":{i:04}}}")).unwrap();
        }
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert!(size(&file) <= 100 && size(&numbered(&file, 1)) <= 100 && size(&numbered(&file, 2)) <= 100);
        assert!(!numbered(&file, 3).exists());
        let last = std::fs::read_to_string(&file).unwrap();
        assert!(last.ends_with("{\"line\":0049}\n"), "{last}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
