#!/usr/bin/env python3
"""Writes the committed seed corpus under fuzz/seeds/<target>/.

Run from anywhere: `python3 fuzz/make-seeds.py`. The inputs are real
handshakes (tests/testdata, and ClientHellos from Python's ssl module),
headers as HAProxy sends them and the example configs; small on purpose,
the fuzzer grows its own working corpus from them (fuzz/corpus/, not
committed).
"""
import json
import pathlib
import re
import socket
import ssl
import struct

FUZZ = pathlib.Path(__file__).resolve().parent
REPO = FUZZ.parent
SEEDS = FUZZ / "seeds"
TESTDATA = REPO / "tests" / "testdata"


def write(target, name, data):
    out = SEEDS / target
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def v2(command, family, body):
    return b"\r\n\r\n\0\r\nQUIT\n" + bytes([command, family]) + struct.pack(">H", len(body)) + body


def proxy_seeds():
    write("proxy_protocol", "v1-tcp4", b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n")
    write("proxy_protocol", "v1-tcp6", b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n")
    write("proxy_protocol", "v1-unknown", b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n")
    v4 = socket.inet_aton("192.0.2.1") + socket.inet_aton("198.51.100.1") + struct.pack(">HH", 56324, 443)
    v6 = socket.inet_pton(socket.AF_INET6, "2001:db8::1") + socket.inet_pton(socket.AF_INET6, "::1") + struct.pack(">HH", 1, 2)
    write("proxy_protocol", "v2-tcp4", v2(0x21, 0x11, v4) + b"\x16\x03\x01")
    write("proxy_protocol", "v2-tcp6", v2(0x21, 0x21, v6))
    write("proxy_protocol", "v2-local", v2(0x20, 0x00, b""))
    tlvs = b"\x04\x00\x01\x00" + b"\x02\x00\x03a.b"  # NOOP, AUTHORITY
    write("proxy_protocol", "v2-tcp4-tlvs", v2(0x21, 0x11, v4 + tlvs))
    write("proxy_protocol", "net-v4", b"10.0.0.0/8")
    write("proxy_protocol", "net-v6", b"fd00::/8")


def client_hellos():
    """ClientHellos as Python's ssl module (OpenSSL) sends them."""
    hellos = {}
    for name, sni, alpn, max_version in [
        ("tls13-sni-alpn", "Example.TEST.", ["h2", "http/1.1"], ssl.TLSVersion.TLSv1_3),
        ("tls12-sni", "a.test", None, ssl.TLSVersion.TLSv1_2),
        ("tls13-no-sni", None, ["http/1.1"], ssl.TLSVersion.TLSv1_3),
    ]:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.maximum_version = max_version
        if alpn:
            context.set_alpn_protocols(alpn)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        conn = context.wrap_bio(incoming, outgoing, server_hostname=sni)
        try:
            conn.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hellos[name] = outgoing.read()
    return hellos


def hello_seeds(hellos):
    write("client_hello", "captured", (TESTDATA / "tls-client-hello.bin").read_bytes())
    for name, hello in hellos.items():
        write("client_hello", name, hello)
    # The captured hello cut into two records.
    handshake = (TESTDATA / "tls-client-hello.bin").read_bytes()[5:]
    split = b""
    for part in (handshake[:100], handshake[100:]):
        split += b"\x16\x03\x01" + struct.pack(">H", len(part)) + part
    write("client_hello", "two-records", split)


def sniff_seeds(hellos):
    for file in sorted(TESTDATA.glob("*.bin")):
        write("sniff_detect", file.stem, file.read_bytes())
    write("sniff_detect", "flash-policy-nul", b"<policy-file-request/>\0")
    write("sniff_detect", "tls13-hello", hellos["tls13-sni-alpn"])
    write(
        "sniff_detect",
        "websocket-upgrade",
        b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: a.test\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n",
    )
    write("sniff_detect", "options-star", b"OPTIONS * HTTP/1.0\n\n")
    write("sniff_detect", "propfind", b"PROPFIND /dav/ HTTP/1.1\r\nDepth: 1\r\n\r\n")
    write("sniff_detect", "smtp", b"EHLO client.test\r\n")


def config_seeds():
    for toml in sorted(REPO.glob("examples/**/*.toml")):
        if "node_modules" not in toml.parts:
            write("config", toml.parent.name + "-" + toml.name, toml.read_bytes())
    # Every complete ```toml block in docs/ and the config unit tests' fixtures.
    blocks = []
    for doc in sorted((REPO / "docs").glob("*.md")):
        blocks += re.findall(r"```toml\n(.*?)```", doc.read_text(), re.S)
    tests = (REPO / "host" / "src" / "config" / "tests.rs").read_text()
    blocks += re.findall(r'r#"\n(\[.*?)"#', tests, re.S)
    seen = set()
    for block in blocks:
        if block.startswith("# fragment") or block in seen:
            continue
        seen.add(block)
        write("config", f"block-{len(seen):02}.toml", block)


def path_seeds():
    requests = [
        b"GET\n/socket.io/?EIO=4&transport=polling&sid=abc\nA.test:8080\n10.0.0.1:5000\ncookie: io=abc; sid=x\nx-user: u1",
        b"POST\n/api/v1/users?x=1\napi.test\n[::ffff:10.0.0.1]:80\nx-canary: 1\ncontent-type: text/plain",
        b"GET\n/old-home\n\n127.0.0.1:1\n",
    ]
    settings = [
        {"default-backend": "web"},
        {"not-found": {"status": 410, "body": "gone\n", "headers": {"x-why": "gone"}}},
        {
            "default-backend": "web",
            "rules": [
                {"path-prefix": "/socket.io/", "backend": "socketio", "affinity": {"cookie": "io"}},
                {"host": "*.test", "method": "POST", "headers": {"x-canary": "1"}, "backend": "canary",
                 "affinity": "client-ip", "set-headers": {"X-Routed-By": "sluice"}, "remove-headers": ["x-internal"]},
                {"path-prefix": "/api", "strip-prefix": True, "backend": "api", "affinity": {"query": "sid"}},
                {"host": "api.test", "backend": "api", "affinity": {"header": "x-user"}},
                {"path-prefix": "/old-home", "respond": {"status": 301, "headers": {"location": "/"}}},
            ],
        },
    ]
    for i, setting in enumerate(settings):
        for j, request in enumerate(requests):
            write("path_rules", f"settings{i}-request{j}", json.dumps(setting).encode() + b"\0" + request)


if __name__ == "__main__":
    hellos = client_hellos()
    proxy_seeds()
    hello_seeds(hellos)
    sniff_seeds(hellos)
    config_seeds()
    path_seeds()
    for target in sorted(SEEDS.iterdir()):
        print(f"{target.name}: {len(list(target.iterdir()))} seeds")
