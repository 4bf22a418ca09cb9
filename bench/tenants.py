#!/usr/bin/env python3
"""Scale benchmark for multi-tenant hosting (docs/TENANTS.md), not a test.

Runs the sluice binary twice on loopback: with 1 tenant file and with N
(default 1,000: the built-in `path` component with different settings, plus
3 distinct components, copies of a test route plugin made distinct by a
custom section). For each run it prints the start-up time (launch to the
admin port answering: every tenant loaded, its plugin compiled or reused,
probed), the RSS, and the sequential keep-alive request latency (p50/p99)
and proxy CPU per request to one tenant. With N tenants it also times
reloads: SIGHUP with nothing changed, and SIGHUP after changing one tenant
file (launch of the reload to `/status` counting it, polled every 2 ms).

Usage: bench/tenants.py SLUICE_BINARY ROUTE_WASM [N]
Run it under `flock /work/bench.lock`.
"""
import http.client, json, os, shutil, signal, socket, subprocess, sys, tempfile, time

SLUICE, WASM = sys.argv[1], sys.argv[2]
N = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
REQUESTS = 3000
CLK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def distinct_component(wasm, n):
    """The component with a custom section appended: other bytes, same code."""
    name, payload = b"sluice-bench", str(n).encode()
    body = bytes([len(name)]) + name + payload
    return wasm + b"\x00" + bytes([len(body)]) + body


def write_config(root, n):
    listen, admin, backend = free_port(), free_port(), free_port()
    os.makedirs(f"{root}/tenants.d")
    with open(f"{root}/sluice.toml", "w") as f:
        f.write(f"""
[[listeners]]
name = "public"
bind = "127.0.0.1:{listen}"
sniff = "sniff"
tenants = "tenants.d"
[plugins.sniff]
builtin = "sniff"
[admin]
bind = "127.0.0.1:{admin}"
[[demo-servers]]
bind = "127.0.0.1:{backend}"
kind = "http"
name = "web"
""")
    wasm = open(WASM, "rb").read()
    for i in range(n):
        if i < 3 and n > 1:
            open(f"{root}/tenants.d/c{i}.wasm", "wb").write(distinct_component(wasm, i))
            route = f'file = "c{i}.wasm"\nsettings = {{ backend = "web", tag = "t{i}" }}'
        else:
            route = (f'builtin = "path"\n[route.settings]\ndefault-backend = "web"\n'
                     f'rules = [{{ path-prefix = "/t{i}/", backend = "web", set-headers = {{ x-tenant = "t{i}" }} }}]')
        with open(f"{root}/tenants.d/t{i}.toml", "w") as f:
            f.write(f'names = ["t{i}.bench", "*.t{i}.bench"]\n[backends.web]\nservers = ["127.0.0.1:{backend}"]\n'
                    f'[route]\n{route}\n[quotas]\nrequests-per-second = 100000\n')
    return listen, admin


def admin_get(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", path)
    body = c.getresponse().read()
    c.close()
    return body


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def reload_count(admin):
    status = json.loads(admin_get(admin, "/status"))
    return status["reload"]["successes"] + status["reload"]["failures"], status


def timed_reload(proc, admin):
    before, _ = reload_count(admin)
    start = time.perf_counter()
    proc.send_signal(signal.SIGHUP)
    deadline = start + 120
    while time.perf_counter() < deadline:
        count, status = reload_count(admin)
        if count > before:
            return time.perf_counter() - start, status
        time.sleep(0.002)
    raise SystemExit("reload did not finish in 120 s")


def run(n):
    root = tempfile.mkdtemp(prefix=f"sluice-bench-tenants-{n}-")
    listen, admin = write_config(root, n)
    start = time.perf_counter()
    proc = subprocess.Popen([SLUICE, "--config", f"{root}/sluice.toml", "--no-watch", "--threads", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = start + 300
        while True:
            try:
                admin_get(admin, "/healthz")
                break
            except OSError:
                if proc.poll() is not None or time.perf_counter() > deadline:
                    raise SystemExit(f"sluice did not start with {n} tenants")
                time.sleep(0.005)
        startup = time.perf_counter() - start
        rss = rss_kib(proc.pid)
        # Sequential keep-alive requests to the middle tenant.
        host = f"t{n // 2}.bench"
        conn = http.client.HTTPConnection("127.0.0.1", listen, timeout=5)
        latencies = []
        cpu0 = cpu_seconds(proc.pid)
        for i in range(REQUESTS):
            t0 = time.perf_counter()
            conn.request("GET", f"/t{n // 2}/x", headers={"Host": host})
            response = conn.getresponse()
            response.read()
            latencies.append(time.perf_counter() - t0)
            assert response.status == 200, response.status
        cpu_per_request = (cpu_seconds(proc.pid) - cpu0) / REQUESTS
        conn.close()
        latencies.sort()
        result = {
            "tenants": n,
            "startup_s": round(startup, 3),
            "rss_mib": round(rss / 1024, 1),
            "p50_ms": round(latencies[len(latencies) // 2] * 1000, 3),
            "p99_ms": round(latencies[len(latencies) * 99 // 100] * 1000, 3),
            "cpu_us_per_request": round(cpu_per_request * 1e6, 1),
        }
        if n > 1:
            unchanged, _ = timed_reload(proc, admin)
            path = f"{root}/tenants.d/t{n // 3}.toml"
            text = open(path).read().replace("requests-per-second = 100000", "requests-per-second = 99999")
            open(path, "w").write(text)
            one, status = timed_reload(proc, admin)
            listed = len(status["tenants"][0]["tenants"])
            assert listed == n and not status["tenants"][0]["refused"], status["tenants"][0]["refused"]
            result["reload_nothing_changed_s"] = round(unchanged, 3)
            result["reload_one_tenant_s"] = round(one, 3)
            result["rss_after_reloads_mib"] = round(rss_kib(proc.pid) / 1024, 1)
        return result
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    print("load average:", open("/proc/loadavg").read().strip())
    one, many = run(1), run(N)
    print(json.dumps(one))
    print(json.dumps(many))
    per_tenant = (many["rss_mib"] - one["rss_mib"]) * 1024 / (N - 1)
    print(f"RSS per tenant: {per_tenant:.1f} KiB; start-up per tenant: "
          f"{(many['startup_s'] - one['startup_s']) * 1000 / (N - 1):.2f} ms; "
          f"p50 latency {many['p50_ms'] / one['p50_ms']:.2f}x, CPU per request "
          f"{many['cpu_us_per_request'] / one['cpu_us_per_request']:.2f}x of the single-tenant run")
    print("load average:", open("/proc/loadavg").read().strip())
