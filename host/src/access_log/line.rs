//! One access-log line per HTTP request, in the configured format.

use super::{AccessLogFormat, RequestEntry};
use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The line for `entry`, ending in a newline.
pub fn format(format: AccessLogFormat, entry: &RequestEntry<'_>, at: SystemTime) -> String {
    match format {
        AccessLogFormat::Combined => combined(entry, at),
        AccessLogFormat::Json => json(entry, at),
        AccessLogFormat::Text => text(entry, at),
    }
}

/// Apache/nginx "combined", then the request id as one more quoted field:
/// `host - - [day/Mon/year:H:M:S +0000] "request" status bytes "referer" "agent" "id"`.
fn combined(e: &RequestEntry<'_>, at: SystemTime) -> String {
    let mut line = String::with_capacity(256);
    let bytes = e.bytes.map_or("-".to_string(), |n| n.to_string());
    let _ = writeln!(
        line,
        "{} - - [{}] \"{} {} {:?}\" {} {} \"{}\" \"{}\" \"{}\"",
        e.client.ip(),
        clf_time(at),
        e.method,
        quoted(e.target),
        e.version,
        e.status,
        bytes,
        quoted(e.referer.unwrap_or("-")),
        quoted(e.user_agent.unwrap_or("-")),
        quoted(e.request_id),
    );
    line
}

fn json(e: &RequestEntry<'_>, at: SystemTime) -> String {
    let value = serde_json::json!({
        "time": rfc3339(at),
        "listener": e.listener,
        "client": e.client.to_string(),
        "method": e.method,
        "target": e.target,
        "version": format!("{:?}", e.version),
        "host": e.host,
        "status": e.status,
        "bytes": e.bytes,
        "duration_ms": millis(e.duration),
        "route": e.route,
        "backend": e.backend,
        "server": e.server,
        "request_id": e.request_id,
        "referer": e.referer,
        "user_agent": e.user_agent,
        "detail": e.detail,
        "tenant": e.tenant,
    });
    let mut line = value.to_string();
    line.push('\n');
    line
}

/// `key=value` pairs (logfmt); values with spaces or quotes are quoted.
fn text(e: &RequestEntry<'_>, at: SystemTime) -> String {
    let mut line = String::with_capacity(256);
    let mut pair = |key: &str, value: &str| {
        if value.is_empty() || value.contains([' ', '"', '=', '\\']) || value.chars().any(char::is_control) {
            let _ = write!(line, "{key}={value:?} ");
        } else {
            let _ = write!(line, "{key}={value} ");
        }
    };
    pair("time", &rfc3339(at));
    pair("listener", e.listener);
    pair("client", &e.client.to_string());
    pair("method", e.method);
    pair("target", e.target);
    pair("status", &e.status.to_string());
    pair("bytes", &e.bytes.map_or("-".to_string(), |n| n.to_string()));
    pair("duration_ms", &format!("{:.3}", millis(e.duration)));
    pair("route", e.route);
    pair("backend", e.backend.unwrap_or("-"));
    pair("server", e.server.unwrap_or("-"));
    pair("request_id", e.request_id);
    if let Some(tenant) = e.tenant {
        pair("tenant", tenant);
    }
    if let Some(detail) = e.detail {
        pair("detail", detail);
    }
    line.pop();
    line.push('\n');
    line
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Escape `"` and `\` and non-printable bytes as nginx does (`\xHH`), so a
/// request line cannot break the line's fields.
fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(byte as char);
            }
            0x20..=0x7e => out.push(byte as char),
            _ => {
                let _ = write!(out, "\\x{byte:02X}");
            }
        }
    }
    out
}

/// The UTC calendar time of `at`: (year, month 1-12, day, hour, minute, second, millisecond).
fn civil(at: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rest / 3600, rest / 60 % 60, rest % 60, since.subsec_millis())
}

/// `2026-11-30T12:01:39.123Z`
fn rfc3339(at: SystemTime) -> String {
    let (y, mo, d, h, mi, s, ms) = civil(at);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

/// `30/Nov/2026:12:01:39 +0000` (the Common Log Format's time).
fn clf_time(at: SystemTime) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (y, mo, d, h, mi, s, _) = civil(at);
    format!("{d:02}/{}/{y:04}:{h:02}:{mi:02}:{s:02} +0000", MONTHS[(mo - 1) as usize % 12])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> RequestEntry<'static> {
        RequestEntry {
            listener: "web",
            client: "192.0.2.7:50000".parse().unwrap(),
            method: "GET",
            target: "/a b\"c",
            version: http::Version::HTTP_11,
            host: Some("a.test"),
            status: 200,
            bytes: Some(1234),
            duration: Duration::from_micros(1500),
            route: "forward",
            backend: Some("app"),
            server: Some("127.0.0.1:8080"),
            request_id: "rid-1",
            referer: None,
            user_agent: Some("curl/8.5.0"),
            detail: None,
            tenant: None,
        }
    }

    /// 2026-11-30T12:01:39.123Z
    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_796_040_099_123)
    }

    #[test]
    fn calendar_times_are_right() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(at()), "2026-11-30T12:01:39.123Z");
        // A leap day.
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000Z");
        assert_eq!(clf_time(at()), "30/Nov/2026:12:01:39 +0000");
    }

    #[test]
    fn combined_lines_match_the_apache_format() {
        assert_eq!(
            format(AccessLogFormat::Combined, &entry(), at()),
            "192.0.2.7 - - [30/Nov/2026:12:01:39 +0000] \"GET /a b\\\"c HTTP/1.1\" 200 1234 \"-\" \"curl/8.5.0\" \"rid-1\"\n"
        );
    }

    #[test]
    fn json_lines_are_one_object() {
        let line = format(AccessLogFormat::Json, &entry(), at());
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["time"], "2026-11-30T12:01:39.123Z");
        assert_eq!(value["status"], 200);
        assert_eq!(value["target"], "/a b\"c");
        assert_eq!(value["request_id"], "rid-1");
        assert_eq!(value["duration_ms"], 1.5);
        assert_eq!(value["referer"], serde_json::Value::Null);
        assert_eq!(value["tenant"], serde_json::Value::Null);
        let with_tenant = RequestEntry { tenant: Some("acme"), ..entry() };
        let value: serde_json::Value =
            serde_json::from_str(&format(AccessLogFormat::Json, &with_tenant, at())).unwrap();
        assert_eq!(value["tenant"], "acme");
        assert!(format(AccessLogFormat::Text, &with_tenant, at()).ends_with(" request_id=rid-1 tenant=acme\n"));
    }

    #[test]
    fn text_lines_quote_what_needs_it() {
        let line = format(AccessLogFormat::Text, &entry(), at());
        assert!(
            line.starts_with("time=2026-11-30T12:01:39.123Z listener=web client=192.0.2.7:50000 method=GET "),
            "{line}"
        );
        assert!(line.contains(" target=\"/a b\\\"c\" status=200 bytes=1234 duration_ms=1.500 "), "{line}");
        assert!(line.ends_with(" request_id=rid-1\n"), "{line}");
    }
}
