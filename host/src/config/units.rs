//! Human-friendly durations ("500ms", "30s", "2h", "30d") and sizes ("64KiB", "16MiB")
//! for the config file.

use std::time::Duration;

/// Parse "250ms", "30s", "5m", "2h", "30d" (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: u64 =
        digits.parse().map_err(|_| format!("`{text}` is not a duration (expected e.g. \"500ms\", \"30s\", \"2h\")"))?;
    let per_unit_ms = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(format!("unknown duration unit `{other}` in `{text}` (use ms, s, m, h or d)")),
    };
    value.checked_mul(per_unit_ms).map(Duration::from_millis).ok_or_else(|| format!("duration `{text}` is too large"))
}

/// Parse "4096", "64KiB", "16MiB", "1GiB" into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: u64 =
        digits.parse().map_err(|_| format!("`{text}` is not a size (expected e.g. \"4096\", \"64KiB\", \"16MiB\")"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}` in `{text}` (use B, KiB, MiB or GiB)")),
    };
    value.checked_mul(multiplier).ok_or_else(|| format!("size `{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("2 days").unwrap_err().contains("unknown duration unit"));
        assert!(parse_duration("soon").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert!(parse_size("16MB").unwrap_err().contains("unknown size unit"));
    }
}
