#!/usr/bin/env python3
"""RSS of a sluice process before, during and after a flood of connections.

Starts the built binary on a config with a demo HTTP backend, records RSS at
baseline, opens CONNECTIONS concurrent connections that each send REQUESTS
HTTP requests (keep-alive) and one silent socket each that is forwarded raw
after the inspect timeout, closes them all, waits IDLE seconds and records
RSS again. Bounded in count and time.

    bench/memory-after-flood.py [--binary target/release/sluice] [--connections 5000]
"""

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

CONFIG = """
[[listeners]]
name = "main"
bind = "127.0.0.1:0"
sniff = "sniff"
route = "path"
default-backend = "demo"
inspect-timeout = "500ms"

[listeners.per-client]
max-connections = 0
new-connections-per-second = 0
http-requests-per-second = 0

[backends.demo]
servers = ["127.0.0.1:{demo}"]

[plugins.sniff]
builtin = "sniff"
[plugins.path]
builtin = "path"
[plugins.path.settings]
default-backend = "demo"

[[demo-servers]]
bind = "127.0.0.1:{demo}"
kind = "http"

[limits]
max-connections = 100000
max-sniffing = 100000
"""

# For binaries that predate [listeners.per-client].
LEGACY = re.compile(r"\[listeners\.per-client\][^\[]*", re.S)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def http_client(port, requests):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(requests):
        writer.write(b"GET / HTTP/1.1\r\nHost: flood.test\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"content-length: *(\d+)", head, re.I).group(1))
        await reader.readexactly(length)
    return writer


async def silent_client(port):
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    return writer


async def flood(pid, port, connections, requests, batch=500):
    """Open everything, measure the peak, close everything: (peak RSS, seconds)."""
    started = time.time()
    writers = []
    for start in range(0, connections, batch):
        n = min(batch, connections - start)
        writers += await asyncio.gather(*[http_client(port, requests) for _ in range(n)])
        writers += await asyncio.gather(*[silent_client(port) for _ in range(n)])
    await asyncio.sleep(1)  # the silent sockets are forwarded after the inspect timeout
    peak = rss_kib(pid)
    for writer in writers:
        writer.close()
    await asyncio.sleep(0.5)
    return peak, time.time() - started


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default="target/release/sluice")
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--idle", type=float, default=5.0)
    parser.add_argument("--legacy-config", action="store_true", help="no [listeners.per-client] table")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the sluice process")
    args = parser.parse_args()

    config = CONFIG.replace("{demo}", str(free_port()))
    if args.legacy_config:
        config = LEGACY.sub("", config)
    directory = tempfile.mkdtemp(prefix="sluice-memory-")
    path = os.path.join(directory, "sluice.toml")
    with open(path, "w") as file:
        file.write(config)
    env = dict(os.environ, SLUICE_LOG="info,sluice::access=off")
    env.update(dict(item.split("=", 1) for item in args.env))
    proc = subprocess.Popen(
        [args.binary, "run", "--config", path, "--no-watch"], stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        port = None
        for line in proc.stderr:  # the log until the main listener's address
            match = re.search(r'listening.*addr=127\.0\.0\.1:(\d+)', line)
            if match and "admin" not in line and "demo" not in line:
                port = int(match.group(1))
                break
        if port is None:
            sys.exit("sluice did not start")
        # Keep reading the log so the pipe never fills.
        threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
        time.sleep(1)
        baseline = rss_kib(proc.pid)
        peak, flood_seconds = asyncio.run(
            asyncio.wait_for(flood(proc.pid, port, args.connections, args.requests), 300)
        )
        time.sleep(args.idle)
        after = rss_kib(proc.pid)
        print(
            f"connections={args.connections * 2} requests={args.connections * args.requests} "
            f"flood_s={flood_seconds:.1f} baseline_mib={baseline / 1024:.1f} peak_mib={peak / 1024:.1f} "
            f"after_idle_mib={after / 1024:.1f} ratio={after / baseline:.2f}"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
