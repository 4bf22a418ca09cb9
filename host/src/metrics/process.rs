//! `sluice_build_info` and the standard process series Prometheus expects
//! (`process_cpu_seconds_total`, `process_start_time_seconds`, …), the way
//! the official client libraries name them. Read from `/proc` when scraped,
//! so they cost nothing between scrapes; on a system without `/proc` only
//! the build info is exported.

use std::fmt::Write;

/// The commit sluice was built from, when the build set `SLUICE_COMMIT`
/// (the Dockerfile and CI do); else "unknown".
const COMMIT: &str = match option_env!("SLUICE_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

/// Linux reports process times in ticks of `USER_HZ`, which is 100 on every
/// architecture's user-space ABI (the Prometheus Go client assumes the same).
const TICKS_PER_SECOND: f64 = 100.0;

pub(super) fn render(out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP sluice_build_info The running sluice's version and commit (always 1).\n\
         # TYPE sluice_build_info gauge\n\
         sluice_build_info{{version=\"{}\",commit=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        super::escape(COMMIT)
    );
    let Some(stats) = ProcessStats::read() else { return };
    let mut series = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        if let Some(value) = value {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
    };
    series(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        stats.cpu_seconds,
    );
    series(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        stats.start_time_seconds,
    );
    series("process_open_fds", "gauge", "Number of open file descriptors.", stats.open_fds);
    series("process_max_fds", "gauge", "Maximum number of open file descriptors.", stats.max_fds);
    series("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", stats.resident_bytes);
    series("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", stats.virtual_bytes);
}

/// What `/proc` says about this process; a value that cannot be read is left out.
#[derive(Debug, Default)]
struct ProcessStats {
    cpu_seconds: Option<f64>,
    start_time_seconds: Option<f64>,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
    resident_bytes: Option<f64>,
    virtual_bytes: Option<f64>,
}

impl ProcessStats {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let mut stats = parse_stat(&stat)?;
        let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|text| parse_boot_time(&text));
        stats.start_time_seconds = stats.start_time_seconds.zip(boot_time).map(|(since_boot, boot)| boot + since_boot);
        stats.open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|dir| dir.count() as f64);
        stats.max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|text| parse_max_fds(&text));
        stats.resident_bytes = std::fs::read_to_string("/proc/self/status").ok().and_then(|text| parse_rss(&text));
        Some(stats)
    }
}

/// CPU time, start time (seconds after boot, completed by the caller) and
/// virtual size from `/proc/self/stat`.
fn parse_stat(stat: &str) -> Option<ProcessStats> {
    // The command name (field 2) may hold spaces and parentheses: fields
    // are counted from the last ')'. `after[0]` is field 3 (state).
    let after: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    let field = |n: usize| after.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    Some(ProcessStats {
        cpu_seconds: field(14).zip(field(15)).map(|(user, system)| (user + system) / TICKS_PER_SECOND),
        start_time_seconds: field(22).map(|ticks| ticks / TICKS_PER_SECOND),
        virtual_bytes: field(23),
        ..ProcessStats::default()
    })
}

fn parse_boot_time(proc_stat: &str) -> Option<f64> {
    proc_stat.lines().find_map(|line| line.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

/// The soft limit of "Max open files" in `/proc/self/limits`.
fn parse_max_fds(limits: &str) -> Option<f64> {
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// `VmRSS` in `/proc/self/status` (in kB there).
fn parse_rss(status: &str) -> Option<f64> {
    let line = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        // A command name with spaces and a parenthesis must not shift the fields.
        let stat = "4242 (sl uice) x) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 9 0 12345 104857600 2560 \
                    18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
        let stats = parse_stat(stat).unwrap();
        assert_eq!(stats.cpu_seconds, Some(3.0));
        assert_eq!(stats.start_time_seconds, Some(123.45));
        assert_eq!(stats.virtual_bytes, Some(104857600.0));
        assert_eq!(parse_boot_time("cpu  1 2 3\nbtime 1764500000\nprocesses 9\n"), Some(1764500000.0));
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 1048576              files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024.0));
        assert_eq!(parse_rss("Name:\tsluice\nVmRSS:\t   20480 kB\n"), Some(20480.0 * 1024.0));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_described() {
        let mut out = String::new();
        render(&mut out);
        assert!(out.contains("sluice_build_info{version=\""), "{out}");
        for name in [
            "process_cpu_seconds_total ",
            "process_start_time_seconds ",
            "process_open_fds ",
            "process_resident_memory_bytes ",
        ] {
            assert!(out.contains(name), "{name} missing in {out}");
        }
    }
}
