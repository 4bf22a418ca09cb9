#!/usr/bin/env python3
"""The soak test's traffic, chaos and sampling; bench/soak.sh sets it up.

For --minutes, at bounded rates, against a running sluice (--proxy):
HTTP keep-alive and one-request connections, WebSockets opened, held and
closed, raw TCP relays with half-close, TLS connections with keep-alive
requests, Flash policy requests and silent connections. Every 30 s the
config is rewritten (in place and by rename, alternately) and the new
generation is checked through the proxy; every --kill-every seconds one web
server is killed and restarted after 10 s.

Every --interval seconds it samples sluice's RSS and thread count
(/proc/PID/status), open descriptors (/proc/PID/fd) and, from /metrics,
the runtime's alive tasks and open connections, into a CSV. At the end it
stops the traffic, waits for the connections to drain, samples once more and
prints start/min/max/end per series with a verdict (flat, or growing with
the slope). Exit status 1 when a series grows, sluice died or panicked.
"""
import argparse
import asyncio
import csv
import os
import random
import re
import signal
import ssl
import struct
import subprocess
import sys
import time
import urllib.request

SERIES = ["rss_kib", "fds", "threads", "tasks", "connections"]
# Growth over the measured window (after warm-up) that counts as a leak,
# as (absolute floor, fraction of the window's mean).
TOLERANCE = {"rss_kib": (4096, 0.05), "fds": (16, 0.0), "threads": (2, 0.0), "tasks": (32, 0.0), "connections": (16, 0.0)}


class Stats:
    def __init__(self):
        self.ok = {}
        self.failed = {}
        self.last_error = {}

    def done(self, kind, ok, error=None):
        table = self.ok if ok else self.failed
        table[kind] = table.get(kind, 0) + 1
        if error is not None:
            self.last_error[kind] = f"{type(error).__name__}: {error}"[:160]

    def text(self):
        kinds = sorted(set(self.ok) | set(self.failed))
        return ", ".join(f"{k} {self.ok.get(k, 0)}/{self.ok.get(k, 0) + self.failed.get(k, 0)}" for k in kinds)


async def read_response(reader):
    """One HTTP/1.1 response with a content-length body; returns (status, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    body = await reader.readexactly(length)
    return status, body


def get(path, host="soak.local", close=False):
    connection = "close" if close else "keep-alive"
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: {connection}\r\n\r\n".encode()


async def http_keepalive(args, stats):
    reader, writer = await asyncio.open_connection(args.host, args.port)
    try:
        for i in range(50):
            writer.write(get(f"/keepalive/{i}"))
            status, _ = await read_response(reader)
            stats.done("http-keepalive", status == 200)
            await asyncio.sleep(0.1)
    finally:
        writer.close()


async def http_close(args, stats):
    reader, writer = await asyncio.open_connection(args.host, args.port)
    try:
        writer.write(get("/close", close=True))
        status, _ = await read_response(reader)
        stats.done("http-new-conn", status == 200)
    finally:
        writer.close()


async def websocket(args, stats):
    reader, writer = await asyncio.open_connection(args.host, args.port)
    try:
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        writer.write(
            (
                "GET /ws HTTP/1.1\r\nHost: soak.local\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(head[:40])
        await asyncio.sleep(random.uniform(1, 10))
        # A masked close frame, then FIN.
        writer.write(bytes([0x88, 0x80]) + os.urandom(4))
        await writer.drain()
        writer.write_eof()
        stats.done("websocket", True)
    finally:
        writer.close()


async def relay(args, stats):
    size = 64 << 10
    reader, writer = await asyncio.open_connection(args.host, args.port)
    try:
        writer.write(b"\0B" + struct.pack(">Q", size) + b"\x5a" * size)
        await writer.drain()
        writer.write_eof()  # half-close: the reply must still come back
        received = len(await reader.read())
        stats.done("tcp-relay", received == size, None if received == size else RuntimeError(f"{received} bytes"))
    finally:
        writer.close()


async def tls(args, stats, context):
    reader, writer = await asyncio.open_connection(args.host, args.port, ssl=context, server_hostname="soak.local")
    try:
        for i in range(3):
            writer.write(get(f"/tls/{i}", close=i == 2))
            status, _ = await read_response(reader)
            stats.done("tls", status == 200)
    finally:
        writer.close()


async def flash(args, stats):
    reader, writer = await asyncio.open_connection(args.host, args.port)
    try:
        writer.write(b"<policy-file-request/>\0")
        policy = await reader.read()
        stats.done("flash", policy.endswith(b"\0") and b"cross-domain-policy" in policy)
    finally:
        writer.close()


async def silent(args, stats):
    _, writer = await asyncio.open_connection(args.host, args.port)
    try:
        await asyncio.sleep(1.5)  # past inspect-timeout: forwarded to the raw backend
        stats.done("silent", True)
    finally:
        writer.close()


async def paced(name, rate, cap, job, stats, stop):
    """Start `job` `rate` times a second, at most `cap` at once, until `stop`."""
    running = set()
    while not stop.is_set():
        if len(running) < cap:

            async def one():
                try:
                    await asyncio.wait_for(job(), timeout=30)
                except Exception as error:  # counted, never fatal: backends are killed on purpose
                    stats.done(name, False, error)

            task = asyncio.create_task(one())
            running.add(task)
            task.add_done_callback(running.discard)
        try:
            await asyncio.wait_for(stop.wait(), timeout=1 / rate)
        except asyncio.TimeoutError:
            pass
    if running:
        await asyncio.wait(running, timeout=35)


def metric_values(text):
    values = {}
    for line in text.splitlines():
        match = re.match(r"^([a-z_]+)(\{[^}]*\})? (\S+)$", line)
        if match:
            key = match.group(1) + (match.group(2) or "")
            values[key] = float(match.group(3))
    return values


def metrics(args):
    with urllib.request.urlopen(f"http://{args.admin}/metrics", timeout=5) as response:
        return metric_values(response.read().decode())


def sample(args, started):
    with open(f"/proc/{args.pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    values = metrics(args)
    return {
        "t_s": round(time.monotonic() - started, 1),
        "rss_kib": int(fields["VmRSS"].split()[0]),
        "fds": len(os.listdir(f"/proc/{args.pid}/fd")),
        "threads": int(fields["Threads"]),
        "tasks": int(values.get("sluice_runtime_alive_tasks", -1)),
        "connections": int(sum(v for k, v in values.items() if k.startswith("sluice_connections_active"))),
        "reloads_ok": int(values.get('sluice_reloads_total{result="ok"}', 0)),
    }


async def sampler(args, started, rows, stats, stop, writer, stop_traffic):
    while True:
        try:
            row = await asyncio.to_thread(sample, args, started)
        except Exception as error:  # sluice died or its admin port stopped answering
            print(f"[soak] sampling failed: {error}", flush=True)
            stop_traffic.set()
            return
        row["traffic_ok"] = sum(stats.ok.values())
        row["traffic_failed"] = sum(stats.failed.values())
        rows.append(row)
        writer.writerow(row)
        if len(rows) % max(1, int(60 / args.interval)) == 1:
            print(
                f"[soak] t={row['t_s']:>6}s rss={row['rss_kib'] / 1024:.1f}MiB fds={row['fds']} "
                f"threads={row['threads']} tasks={row['tasks']} conns={row['connections']} "
                f"reloads={row['reloads_ok']} | {stats.text()}",
                flush=True,
            )
        try:
            await asyncio.wait_for(stop.wait(), timeout=args.interval)
            return
        except asyncio.TimeoutError:
            pass


def write_config(args, generation):
    text = open(args.config_template).read().replace("@GENERATION@", str(generation))
    if generation % 2:
        with open(args.config, "w") as config:  # in place
            config.write(text)
    else:
        temporary = args.config + ".tmp"
        with open(temporary, "w") as config:
            config.write(text)
        os.rename(temporary, args.config)


async def reloader(args, stats, stop):
    generation = 0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=args.reload_every)
            return
        except asyncio.TimeoutError:
            pass
        generation += 1
        await asyncio.to_thread(write_config, args, generation)
        # The new generation answers /generation with its number once swapped in.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.open_connection(args.host, args.port)
                writer.write(get("/generation", close=True))
                status, body = await read_response(reader)
                writer.close()
                if status == 200 and body.decode() == str(generation):
                    stats.done("reload", True)
                    break
            except Exception:
                pass
            await asyncio.sleep(0.2)
        else:
            stats.done("reload", False, RuntimeError(f"generation {generation} not live after 15 s"))


async def killer(args, stats, stop):
    command = args.flapping_backend.split()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        while True:
            try:
                await asyncio.wait_for(stop.wait(), timeout=args.kill_every)
                return
            except asyncio.TimeoutError:
                pass
            process.send_signal(signal.SIGKILL)
            process.wait()
            stats.done("backend-kill", True)
            try:
                await asyncio.wait_for(stop.wait(), timeout=10)
                return
            except asyncio.TimeoutError:
                pass
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    finally:
        process.kill()
        process.wait()


def slope_per_minute(rows, key):
    xs = [r["t_s"] / 60 for r in rows]
    ys = [r[key] for r in rows]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var


def summary(rows, drained, baseline, warmup_s):
    window = [r for r in rows if r["t_s"] >= warmup_s] or rows
    minutes = (window[-1]["t_s"] - window[0]["t_s"]) / 60 if len(window) > 1 else 0
    growing = []
    print(f"\n[soak] {len(rows)} samples; verdicts on the {len(window)} after {warmup_s:.0f} s of warm-up")
    print(f"{'series':<12} {'baseline':>9} {'start':>9} {'min':>9} {'max':>9} {'end':>9} {'drained':>9} {'slope/min':>10}  verdict")
    for key in SERIES:
        values = [r[key] for r in rows]
        slope = slope_per_minute(window, key) if len(window) > 2 else 0.0
        mean = sum(r[key] for r in window) / len(window)
        floor, fraction = TOLERANCE[key]
        growth = slope * minutes
        verdict = "flat"
        if growth > max(floor, fraction * mean):
            verdict = f"GROWING ({growth:+.0f} over {minutes:.1f} min)"
            growing.append(key)
        print(
            f"{key:<12} {baseline[key]:>9} {values[0]:>9} {min(values):>9} {max(values):>9} {values[-1]:>9} "
            f"{drained[key]:>9} {slope:>+10.2f}  {verdict}"
        )
    return growing


async def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pid", type=int, required=True, help="sluice's process id")
    parser.add_argument("--proxy", required=True, help="sluice's listener, host:port")
    parser.add_argument("--admin", required=True, help="sluice's admin listener, host:port")
    parser.add_argument("--config", required=True, help="the config file sluice watches")
    parser.add_argument("--config-template", required=True, help="the config with @GENERATION@")
    parser.add_argument("--ca", required=True, help="the CA (here: self-signed certificate) for TLS")
    parser.add_argument("--flapping-backend", required=True, help="command line of the web server that is killed")
    parser.add_argument("--log", required=True, help="sluice's log, checked for panics")
    parser.add_argument("--csv", required=True)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--interval", type=float, default=10, help="seconds between samples")
    parser.add_argument("--reload-every", type=float, default=30)
    parser.add_argument("--kill-every", type=float, default=60)
    args = parser.parse_args()
    args.host, port = args.proxy.rsplit(":", 1)
    args.port = int(port)

    context = ssl.create_default_context(cafile=args.ca)
    stats = Stats()
    stop, stop_sampling = asyncio.Event(), asyncio.Event()
    started = time.monotonic()
    baseline = await asyncio.to_thread(sample, args, started)
    rows = []
    with open(args.csv, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(baseline) + ["traffic_ok", "traffic_failed"])
        writer.writeheader()
        sampling = asyncio.create_task(sampler(args, started, rows, stats, stop_sampling, writer, stop))
        # (name, starts per second, most at once, job)
        loads = [
            ("http-keepalive", 0.4, 2, lambda: http_keepalive(args, stats)),
            ("http-new-conn", 10, 20, lambda: http_close(args, stats)),
            ("websocket", 2, 30, lambda: websocket(args, stats)),
            ("tcp-relay", 2, 10, lambda: relay(args, stats)),
            ("tls", 2, 10, lambda: tls(args, stats, context)),
            ("flash", 1, 5, lambda: flash(args, stats)),
            ("silent", 0.5, 5, lambda: silent(args, stats)),
        ]
        workers = [asyncio.create_task(paced(name, rate, cap, job, stats, stop)) for name, rate, cap, job in loads]
        workers.append(asyncio.create_task(reloader(args, stats, stop)))
        workers.append(asyncio.create_task(killer(args, stats, stop)))
        try:
            await asyncio.wait_for(stop.wait(), timeout=args.minutes * 60)
        except asyncio.TimeoutError:
            pass
        stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
        # Drained: traffic stopped and every connection closed (bounded wait).
        deadline = time.monotonic() + 30
        try:
            drained = await asyncio.to_thread(sample, args, started)
            while drained["connections"] > 0 and time.monotonic() < deadline:
                await asyncio.sleep(1)
                drained = await asyncio.to_thread(sample, args, started)
        except Exception as error:
            print(f"[soak] sampling failed: {error}", flush=True)
            drained = dict(rows[-1] if rows else baseline)
        stop_sampling.set()
        await sampling
        writer.writerow(dict(drained, traffic_ok=sum(stats.ok.values()), traffic_failed=sum(stats.failed.values())))

    print(f"[soak] traffic ok/total: {stats.text()}")
    for kind, error in sorted(stats.last_error.items()):
        print(f"[soak]   last {kind} failure: {error}")
    growing = summary(rows, drained, baseline, warmup_s=min(120, args.minutes * 60 / 5))
    print("[soak] curve (one sample a minute): t_s rss_mib fds threads tasks connections")
    step = max(1, int(60 / args.interval))
    for row in rows[::step] + [drained]:
        print(f"  {row['t_s']:>7} {row['rss_kib'] / 1024:>7.1f} {row['fds']:>5} {row['threads']:>4} {row['tasks']:>6} {row['connections']:>5}")
    panics = [line for line in open(args.log, errors="replace") if "panicked" in line]
    problems = []
    if growing:
        problems.append("growing: " + ", ".join(growing))
    if panics:
        problems.append(f"{len(panics)} panic lines in the log, first: {panics[0].strip()[:200]}")
    if not os.path.exists(f"/proc/{args.pid}"):
        problems.append("sluice exited")
    print("[soak] verdict: " + ("; ".join(problems) if problems else "flat: no series grew, no panic"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
