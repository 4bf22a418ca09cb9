use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.toml"))
}

fn problems(text: &str) -> Vec<String> {
    let err = parse(text).expect_err("config should be refused");
    err.problems.iter().map(|p| format!("{}: {}", p.field, p.message)).collect()
}

const MINIMAL: &str = r#"
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
sniff = "sniff"
default-backend = "echo"

[backends.echo]
servers = ["127.0.0.1:9000"]

[plugins.sniff]
builtin = "sniff"
"#;

#[test]
fn minimal_config_gets_defaults() {
    let config = parse(MINIMAL).unwrap();
    let listener = &config.listeners[0];
    assert_eq!(listener.inspect_timeout, Duration::from_secs(1));
    assert_eq!(listener.max_inspect_bytes, 8192);
    assert_eq!(listener.fallback, Fallback::Close);
    let plugin = &config.plugins[&PluginName::new("sniff")];
    assert_eq!(plugin.settings_json, "{}");
    assert_eq!(plugin.limits, PluginLimits::default());
}

#[test]
fn settings_become_json() {
    let text = format!("{MINIMAL}\n[plugins.sniff.settings]\nflash-policy = \"<x/>\"\n");
    let config = parse(&text).unwrap();
    assert_eq!(config.plugins[&PluginName::new("sniff")].settings_json, r#"{"flash-policy":"<x/>"}"#);
}

#[test]
fn every_problem_is_reported_with_its_field() {
    let text = r#"
[[listeners]]
name = "main"
bind = "localhost"
sniff = "nope"
default-backend = "missing"
inspect-timeout = "0s"
fallback = "shrug"

[backends.web]
servers = []
idle-timeout = "1 fortnight"

[plugins.sniff]
builtin = "sniff"
file = "x.wasm"
memory-limit = "2GiB"
"#;
    let found = problems(text);
    let expected = [
        "listeners[0].bind: `localhost` is not an address with a port",
        "listeners[0].sniff: no plugin named `nope`",
        "listeners[0].default-backend: no backend named `missing`",
        "listeners[0].inspect-timeout: `0s` must be longer than zero",
        "listeners[0].fallback: `shrug` is not a fallback",
        "backends.web.servers: a backend needs at least one server",
        "backends.web.idle-timeout: unknown duration unit",
        "plugins.sniff: set exactly one of `file` or `builtin`",
        "plugins.sniff.memory-limit: 2147483648 is out of range",
    ];
    for want in expected {
        assert!(found.iter().any(|p| p.starts_with(want)), "missing {want:?} in {found:#?}");
    }
    assert_eq!(found.len(), expected.len(), "{found:#?}");
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    let text = MINIMAL.replace("sniff = \"sniff\"", "sniff = \"sniff\"\ninspect-timout = \"1s\"");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("unknown field `inspect-timout`"), "{err}");
    assert!(err.contains("line 6"), "{err}");
}

#[test]
fn missing_plugin_file_is_named() {
    let text = MINIMAL.replace("builtin = \"sniff\"", "file = \"plugins/none.wasm\"");
    let found = problems(&text);
    assert!(found[0].starts_with("plugins.sniff.file: plugins/none.wasm does not exist"), "{found:?}");
}

#[test]
fn fallback_to_a_backend() {
    let text = MINIMAL.replace("default-backend", "fallback = { backend = \"echo\" }\ndefault-backend");
    let config = parse(&text).unwrap();
    assert_eq!(config.listeners[0].fallback, Fallback::Backend(BackendName::new("echo")));
}

#[test]
fn server_entries_take_weights_and_limits() {
    let text = MINIMAL.replace(
        r#"servers = ["127.0.0.1:9000"]"#,
        r#"servers = ["127.0.0.1:9000", { address = "web.internal:80", weight = 3, max-connections = 5 }]
max-connections = 100
retry-idempotent = true"#,
    );
    let config = parse(&text).unwrap();
    let backend = &config.backends[&BackendName::new("echo")];
    let expect =
        |address: &str, weight, max_connections| ServerSpec { address: address.into(), weight, max_connections };
    assert_eq!(backend.servers, [expect("127.0.0.1:9000", 1, Some(100)), expect("web.internal:80", 3, Some(5))]);
    assert!(backend.retry_idempotent);
    assert_eq!((backend.retries, backend.queue, backend.queue_timeout), (3, 1000, Duration::from_secs(5)));
    assert_eq!(backend.resolve_interval, Duration::from_secs(30));
}

#[test]
fn bad_server_entries_are_named() {
    let text = MINIMAL.replace(
        r#"servers = ["127.0.0.1:9000"]"#,
        r#"servers = [{ address = "a:1", weight = 0 }, { adress = "a:1" }, 7, { address = "b" }]
queue-timeout = "0s""#,
    );
    assert_eq!(
        problems(&text),
        [
            "backends.echo.servers[0]: weight 0 is out of range (1 to 1000)",
            "backends.echo.servers[1]: unknown key `adress`; use \"host:port\" or { address = \"host:port\", weight = 1, max-connections = 100 }",
            "backends.echo.servers[2]: 7 is not a server; use \"host:port\" or { address = \"host:port\", weight = 1, max-connections = 100 }",
            "backends.echo.servers[3]: `b` is not `host:port` (e.g. \"127.0.0.1:9000\" or \"web-1.internal:80\")",
            "backends.echo.queue-timeout: `0s` must be longer than zero",
        ]
    );
}

#[test]
fn demo_servers_are_named_by_their_kind_unless_given_a_name() {
    let text = format!(
        "{MINIMAL}\n[[demo-servers]]\nbind = \"127.0.0.1:9081\"\nkind = \"http\"\n\
         [[demo-servers]]\nname = \"web-1\"\nbind = \"127.0.0.1:9082\"\nkind = \"banner\"\n"
    );
    let names: Vec<String> = parse(&text).unwrap().demo_servers.into_iter().map(|demo| demo.name).collect();
    assert_eq!(names, ["http", "web-1"]);
    let text = format!("{MINIMAL}\n[[demo-servers]]\nname = \"a\\nb\"\nbind = \"127.0.0.1:9081\"\nkind = \"http\"\n");
    assert_eq!(problems(&text), ["demo-servers[0].name: a name must be non-empty text on one line"]);
}
