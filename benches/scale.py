#!/usr/bin/env python3
"""Scale benchmark: how point reads/writes, lists, scans, open time, disk use and memory grow with
the number of keys, for our engines (sqlite, redb, memory) and the reference denokv server.

Run through benches/scale.sh (which builds the binaries and installs denokv and matplotlib).

For every size N (`--sizes`: `N` with `--value-size`-byte values, or `N@V` with V-byte values)
and every server, on a fresh database:
  1. seed N keys of about `--key-size` bytes (kv-bench --seed-only);
  2. measure with kv-bench (`--duration` s each): point get and point set with 1 and 64 clients,
     a 10,000-key list (1 client), and a scan of `--scan-keys` keys in one list (count-like),
     with the server's CPU time per operation (user+system, /proc/PID/stat);
  3. record the server's RSS (VmRSS, split into anonymous and file-backed pages, and VmHWM =
     peak); memory-mapped database pages are file-backed;
  4. stop it cleanly (SIGTERM), record the files' size on disk vs the logical size (keys+values),
     restart it and time until it answers the metadata exchange (open after a clean stop);
  5. run 64 writers, SIGKILL the server under that load, restart it and time the open (WAL
     recovery for SQLite, repair for redb).
The memory engine has no file: no disk or reopen figures; it is skipped above
`--memory-max-keys` (its RSS grows about 1.3 KB per 1 KB entry). A file server is skipped when
its database would leave less than `--min-free-gb` free on the data directory's disk (estimated
from the logical size); each server's files are deleted as soon as it is measured, also when
the run fails.

`--disk-values` adds a disk-use pass: `--disk-keys` keys for each listed value size, size on disk
after a clean stop vs logical size, for every server (and `--before-server`, an older build, to
show a layout change in the same run).

Writes benches/results/scale-<stamp>.{md,json,png} and scale-latest.{md,png}.
"""
import argparse
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

TOKEN = "scale-bench-token"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ext_of(engine):
    return {"sqlite": "sqlite3", "redb": "redb", "memory": "mem"}.get(engine, "sqlite")


class Server:
    """One server process on a database file in `data_dir`."""

    def __init__(self, name, cmd_for_port, data_dir):
        self.name = name
        self.cmd_for_port = cmd_for_port
        self.data_dir = data_dir
        self.proc = None
        self.port = None

    def start(self):
        """Starts the server; returns seconds until it answered the metadata exchange."""
        self.port = free_port()
        log = open(os.path.join(self.data_dir, f"{self.name}.log"), "a")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.cmd_for_port(self.port), stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL)
        deadline = t0 + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"{self.name} exited at start; see {self.data_dir}/{self.name}.log")
            if metadata_ok(self.port):
                return time.monotonic() - t0
            time.sleep(0.02)
        sys.exit(f"{self.name} did not answer within 600 s")

    def stop(self, sig=signal.SIGTERM):
        if self.proc is None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def rss_kib(self):
        out = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:", "RssAnon:", "RssFile:")):
                    out[line.split(":")[0]] = int(line.split()[1])
        return out

    def cpu_secs(self):
        """User + system CPU seconds the server used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"


def metadata_ok(port):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/", data=json.dumps({"supportedVersions": [1, 2, 3]}).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        method="POST")
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.status == 200
    except Exception:
        return False


def files_size(data_dir, stem):
    """Bytes on disk (allocated blocks) of the database file and its side files."""
    total = 0
    for f in os.listdir(data_dir):
        if f.startswith(stem + ".") and not f.endswith(".log"):
            total += os.stat(os.path.join(data_dir, f)).st_blocks * 512
    return total


def server_factory(args, name, data_dir):
    engine = name.split("-")[1] if name.startswith("ours-") else "denokv"
    if name.startswith("denokv"):
        path = os.path.join(data_dir, f"{name}.sqlite")
        return lambda port: [args.denokv, "--sqlite-path", path, "serve", "--access-token", TOKEN,
                             "--addr", f"127.0.0.1:{port}"]
    binary = args.before_server if name.endswith("-before") else args.server
    path = os.path.join(data_dir, f"{name}.{ext_of(engine)}")
    return lambda port: [binary, "--engine", engine, "--path", path, "--access-token", TOKEN,
                         "--addr", f"127.0.0.1:{port}"]


def bench(args, url, wl_args, keys, value_size):
    cmd = [args.bench, "--url", url, "--access-token", TOKEN, "--keys", str(keys), "--value-size",
           str(value_size), "--prefix", args.prefix, "--json", "-"] + wl_args
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False,
                             timeout=args.bench_timeout)
    except subprocess.TimeoutExpired:
        print(f"  kv-bench {' '.join(wl_args)} timed out after {args.bench_timeout} s", flush=True)
        return None
    if out.returncode != 0:
        print(f"  kv-bench {' '.join(wl_args)} failed: {out.stderr.strip()[-400:]}", flush=True)
        return None
    return json.loads(out.stdout)


def seed(args, url, keys, value_size):
    t0 = time.monotonic()
    # No timeout: 10M keys into denokv take a quarter of an hour.
    r = subprocess.run([args.bench, "--url", url, "--access-token", TOKEN, "--seed-only", "--keys",
                        str(keys), "--value-size", str(value_size), "--prefix", args.prefix,
                        "--request-timeout-secs", "120"],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        sys.exit(f"seeding failed: {r.stderr}")
    return time.monotonic() - t0


def key_size(prefix):
    # [prefix, "read", i]: 02 prefix 00 | 02 "read" 00 | 21 f64
    return len(prefix.encode()) + 2 + 6 + 9


def workloads(args, n):
    d = ["--duration-secs", str(args.duration), "--warmup-secs", "0.5", "--no-seed"]
    scan = min(n, args.scan_keys)
    return [
        ("get-c1", ["--workload", "get", "--clients", "1"] + d),
        ("get-c64", ["--workload", "get", "--clients", "64"] + d),
        ("set-c1", ["--workload", "set", "--clients", "1"] + d),
        ("set-c64", ["--workload", "set", "--clients", "64"] + d),
        ("list10k", ["--workload", "list", "--list-keys", str(min(n, 10000)), "--clients", "1"]
         + d),
        ("scan", ["--workload", "list", "--list-keys", str(scan), "--clients", "1",
                                  "--max-ops", "3", "--duration-secs", "600", "--warmup-secs", "0",
                                  "--no-seed"]),
    ]


# Disk per logical byte, for the free-space check before seeding (worst measured, rounded up:
# denokv 4.5x at 1 KB values, ours 1.35x, the old SQLite layout 4.3x).
DISK_FACTOR = {"denokv": 5.0, "ours-sqlite-before": 5.0}


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def skip_reason(args, name, n, value_size, data_dir):
    """Why `name` is not measured at n keys, or None."""
    if name.startswith("ours-memory"):
        if n > args.memory_max_keys:
            return f"over --memory-max-keys {args.memory_max_keys:,}"
        return None
    need = n * (key_size(args.prefix) + value_size) * DISK_FACTOR.get(name, 1.6)
    left = free_bytes(data_dir) - need
    if left < args.min_free_gb * 1e9:
        return (f"would leave {left / 1e9:.1f} GB free (needs about {need / 1e9:.1f} GB; "
                f"--min-free-gb {args.min_free_gb})")
    return None


def remove_files(data_dir, stem):
    """The database files of `stem` (its log stays, for a failure's diagnosis)."""
    for f in os.listdir(data_dir):
        if f.startswith(stem + ".") and not f.endswith(".log"):
            os.remove(os.path.join(data_dir, f))


def measure(args, name, n, value_size, data_dir):
    print(f"== {name} at {n} keys of {value_size} B", flush=True)
    srv = Server(name, server_factory(args, name, data_dir), data_dir)
    try:
        return measure_on(args, srv, name, n, value_size, data_dir)
    finally:
        # Also on failure: never leave a server running or gigabytes of data behind.
        srv.stop(signal.SIGKILL)
        remove_files(data_dir, name)


def measure_on(args, srv, name, n, value_size, data_dir):
    srv.start()
    row = {"server": name, "keys": n, "value_size": value_size,
           "key_size": key_size(args.prefix)}
    row["seed_secs"] = seed(args, srv.url, n, value_size)
    print(f"  seeded in {row['seed_secs']:.1f} s", flush=True)
    stem = name
    if not name.startswith("ours-memory"):
        # Disk use of the seeded keys (before the set workloads add keys of their own), after a
        # clean stop; then the open time of that file.
        srv.stop()
        row["disk_bytes"] = files_size(data_dir, stem)
        row["logical_bytes"] = n * (row["key_size"] + value_size)
        row["disk_ratio"] = row["disk_bytes"] / row["logical_bytes"]
        row["open_clean_secs"] = srv.start()
    for wname, wargs in workloads(args, n):
        cpu0, t0 = srv.cpu_secs(), time.monotonic()
        rep = bench(args, srv.url, wargs, n, value_size)
        cpu, wall = srv.cpu_secs() - cpu0, time.monotonic() - t0
        if rep:
            # The CPU time covers the warm-up too: count the operations it would have done.
            ops = rep["ops"] * (1 + 0.5 / rep["secs"]) if wname != "scan" else rep["ops"]
            row[wname] = {"ops_per_sec": rep["ops_per_sec"], "p50_ms": rep["latency"]["p50_ms"],
                          "p99_ms": rep["latency"]["p99_ms"], "errors": rep["errors"],
                          "cpu_us_per_op": cpu * 1e6 / ops if ops else None,
                          "server_cpu_share": cpu / wall}
            print(f"  {wname:9} {rep['ops_per_sec']:10.1f} ops/s p50 {rep['latency']['p50_ms']:.2f}"
                  f" p99 {rep['latency']['p99_ms']:.2f} ms, server CPU "
                  f"{row[wname]['cpu_us_per_op'] or 0:.0f} us/op", flush=True)
    rss = srv.rss_kib()
    row["rss_mib"] = rss.get("VmRSS", 0) / 1024
    row["rss_anon_mib"] = rss.get("RssAnon", 0) / 1024
    row["rss_file_mib"] = rss.get("RssFile", 0) / 1024
    row["peak_rss_mib"] = rss.get("VmHWM", 0) / 1024
    row["loadavg"] = os.getloadavg()[0]
    if name.startswith("ours-memory"):
        srv.stop()
        return row
    # Crash under load: 64 writers, SIGKILL after 2 s, then time the open.
    load = subprocess.Popen([args.bench, "--url", srv.url, "--access-token", TOKEN, "--workload",
                             "set", "--clients", "64", "--keys", str(n), "--value-size",
                             str(value_size), "--prefix", args.prefix, "--duration-secs", "30",
                             "--warmup-secs", "0", "--retry-secs", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2)
    srv.stop(signal.SIGKILL)
    load.kill()
    load.wait()
    row["open_after_kill_secs"] = srv.start()
    srv.stop()
    print(f"  disk {row['disk_bytes'] / 1e6:.1f} MB ({row['disk_ratio']:.2f}x logical), rss "
          f"{row['rss_mib']:.0f} MiB, open {row['open_clean_secs']:.2f} s, after kill "
          f"{row['open_after_kill_secs']:.2f} s", flush=True)
    return row


def disk_pass(args, data_dir):
    rows = []
    servers = [s for s in args.disk_servers.split(",") if s]
    for v in [int(x) for x in args.disk_values.split(",") if x]:
        for name in servers:
            if name.endswith("-before") and not args.before_server:
                continue
            stem = f"{name}-d{v}"
            srv = Server(stem, server_factory(args, name, data_dir), data_dir)
            # The file name follows the server name; point it at the per-size stem.
            base = srv.cmd_for_port
            srv.cmd_for_port = lambda port, base=base, name=name, stem=stem: [
                a.replace(f"/{name}.", f"/{stem}.") for a in base(port)]
            srv.start()
            seed(args, srv.url, args.disk_keys, v)
            srv.stop()
            size = files_size(data_dir, stem)
            logical = args.disk_keys * (key_size(args.prefix) + v)
            rows.append({"server": name, "value_size": v, "keys": args.disk_keys,
                         "disk_bytes": size, "logical_bytes": logical,
                         "ratio": size / logical})
            print(f"  disk {name:18} v={v:5}: {size / 1e6:8.1f} MB = {size / logical:5.2f}x of "
                  f"{logical / 1e6:.1f} MB logical", flush=True)
            for f in os.listdir(data_dir):
                if f.startswith(stem + "."):
                    os.remove(os.path.join(data_dir, f))
    return rows


def series(rows):
    """(server, value size) pairs in the order they were measured."""
    return list(dict.fromkeys((r["server"], r["value_size"]) for r in rows))


def growth(rows, key, metric, scan_keys=0, field="ops_per_sec"):
    server, value_size = key
    pts = [(r["keys"], r[metric][field] if isinstance(r.get(metric), dict) else r.get(metric))
           for r in rows if r["server"] == server and r["value_size"] == value_size
           and r.get(metric) is not None]
    pts.sort()
    if metric == "scan" and field == "ops_per_sec":
        # Scanned keys per second: the scan covers min(keys, --scan-keys) keys.
        pts = [(n, v * min(n, scan_keys)) for n, v in pts]
    pts = [(n, v) for n, v in pts if v]
    if len(pts) < 2:
        return "-"
    (n1, v1), (n2, v2) = pts[0], pts[-1]
    slope = math.log(v2 / v1) / math.log(n2 / n1)
    if abs(slope) < 0.1:
        kind = "flat"
    elif abs(slope) < 0.6:
        kind = "sub-linear " + ("rise" if slope > 0 else "fall")
    else:
        kind = "linear " + ("rise" if slope > 0 else "fall")
    return f"{kind} ({v2 / v1:.2f}x for {n2 / n1:.0f}x keys)"


METRICS = ["get-c1", "get-c64", "set-c1", "set-c64", "list10k"]


def fmt_series(key):
    return f"{key[0]} ({key[1]} B)"


def markdown(info, rows, disk_rows, skipped):
    L = [f"# Scale benchmark {info['stamp']}\n",
         f"`benches/scale.sh {info['argv']}` on {info['host']}; commit {info['commit']}. "
         f"Keys {rows[0]['key_size'] if rows else '-'} B, values as listed; kv-bench over "
         "h2c, one connection per client; each workload "
         f"{info['duration']} s after a 0.5 s warm-up. Durable defaults (fsync per commit). "
         "Sizes in the order measured; every server measured at one size before the next size, "
         "so servers at one size share the machine's conditions (load average per row below).\n"]
    if rows:
        cols = METRICS + ["scan"]
        L.append("## Throughput (ops/s) and latency (p50 / p99 ms)\n")
        L.append("| server | keys | value B | " + " | ".join(cols) + " |")
        L.append("|---|---|---|" + "---|" * len(cols))
        for r in rows:
            cells = []
            for c in cols:
                m = r.get(c)
                cells.append(f"{m['ops_per_sec']:.0f} ({m['p50_ms']:.2f} / {m['p99_ms']:.2f})"
                             if m else "-")
            L.append(f"| {r['server']} | {r['keys']:,} | {r['value_size']} | "
                     + " | ".join(cells) + " |")
        L.append(f"\nscan: one list of the first min(keys, {info['scan_keys']:,}) keys in pages "
                 "of 1000 (a prefix count as a client does it); ops/s = scans per second. "
                 "list10k: the first 10,000 keys, 1 client.\n")
        L.append("## Server CPU per operation (µs; user + system)\n")
        L.append("| server | keys | value B | " + " | ".join(cols) + " | load avg |")
        L.append("|---|---|---|" + "---|" * (len(cols) + 1))
        for r in rows:
            cells = []
            for c in cols:
                m = r.get(c) or {}
                v = m.get("cpu_us_per_op")
                cells.append(f"{v:.0f}" if v is not None else "-")
            L.append(f"| {r['server']} | {r['keys']:,} | {r['value_size']} | "
                     + " | ".join(cells) + f" | {r.get('loadavg', float('nan')):.1f} |")
        L.append("\nCPU time of the server process during the workload (warm-up included, "
                 "divided by the operations it would have done in that time); a list or scan "
                 "is one operation. Less sensitive than ops/s to the other processes sharing "
                 "the machine.\n")
        L.append("## Disk, memory, open time\n")
        L.append("| server | keys | value B | seed s | disk MB | disk / logical | RSS MiB "
                 "(anon + file) | peak RSS MiB | open after clean stop s | open after SIGKILL s |")
        L.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            d = r.get("disk_bytes")
            anon = r.get("rss_anon_mib")
            rss = (f"{r['rss_mib']:.0f} ({anon:.0f} + {r['rss_file_mib']:.0f})"
                   if anon is not None else f"{r['rss_mib']:.0f}")
            L.append(f"| {r['server']} | {r['keys']:,} | {r['value_size']} | "
                     f"{r['seed_secs']:.1f} | "
                     + (f"{d / 1e6:.1f} | {r['disk_ratio']:.2f}x | " if d else "- | - | ")
                     + f"{rss} | {r['peak_rss_mib']:.0f} | "
                     + (f"{r['open_clean_secs']:.2f} | {r['open_after_kill_secs']:.2f} |"
                        if d else "- | - |"))
        L.append("\nRSS after the workloads: anonymous memory (heap, caches) + file-backed pages "
                 "(the binary, and SQLite's memory-mapped database pages: the operating system's "
                 "page cache, counted once per connection that touched them).\n")
        if skipped:
            L.append("Not measured: " + "; ".join(skipped) + ".\n")
        L.append("## Growth from the smallest to the largest size\n")
        L.append("| server (values) | " + " | ".join(
            cols + ["disk", "RSS", "open after SIGKILL"]) + " |")
        L.append("|---|" + "---|" * (len(cols) + 3))
        for key in series(rows):
            cells = [growth(rows, key, c, info["scan_keys"]) for c in cols]
            cells += [growth(rows, key, "disk_bytes"), growth(rows, key, "rss_mib"),
                      growth(rows, key, "open_after_kill_secs")]
            L.append(f"| {fmt_series(key)} | " + " | ".join(cells) + " |")
        L.append("\nServer CPU per operation, same ends (a rise is a cost growing with size):\n")
        L.append("| server (values) | " + " | ".join(cols) + " |")
        L.append("|---|" + "---|" * len(cols))
        for key in series(rows):
            cells = [growth(rows, key, c, field="cpu_us_per_op") for c in cols]
            L.append(f"| {fmt_series(key)} | " + " | ".join(cells) + " |")
        L.append("\nRatios of ops/s (throughput columns), bytes, MiB or seconds between the "
                 "smallest and the largest size of each server and value size. flat: |slope| < "
                 "0.1 in log-log; sub-linear: < 0.6; linear: otherwise (slope of log(metric) "
                 "against log(keys) between the two ends). The scan column compares scanned "
                 "keys per second.\n")
    if disk_rows:
        L.append("## Disk use by value size\n")
        L.append(f"{disk_rows[0]['keys']:,} keys of {key_size(info['prefix'])} B, size of the "
                 "files after a clean stop (allocated blocks) ÷ keys+values.\n")
        servers = list(dict.fromkeys(r["server"] for r in disk_rows))
        L.append("| value size | " + " | ".join(servers) + " |")
        L.append("|---|" + "---|" * len(servers))
        for v in dict.fromkeys(r["value_size"] for r in disk_rows):
            cells = []
            for s in servers:
                m = [r for r in disk_rows if r["server"] == s and r["value_size"] == v]
                cells.append(f"{m[0]['disk_bytes'] / 1e6:.1f} MB ({m[0]['ratio']:.2f}x)" if m
                             else "-")
            L.append(f"| {v} B | " + " | ".join(cells) + " |")
    return "\n".join(L) + "\n"


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not available: no plot", flush=True)
        return False
    fig, axes = plt.subplots(2, 2, figsize=(16, 11))
    axes = axes.flatten()
    # Colour: the server; marker: the value size; line style: the metric (solid get, dashed set).
    servers = list(dict.fromkeys(r["server"] for r in rows))
    sizes = list(dict.fromkeys(r["value_size"] for r in rows))
    colour = {s: f"C{i % 10}" for i, s in enumerate(servers)}
    marker = {v: "osD^v"[i % 5] for i, v in enumerate(sizes)}
    for key in series(rows):
        rs = sorted((r for r in rows if (r["server"], r["value_size"]) == key),
                    key=lambda r: r["keys"])
        ns = [r["keys"] for r in rs]
        label = fmt_series(key)
        kw = {"color": colour[key[0]], "marker": marker[key[1]]}
        for m, ls in (("get-c64", "-"), ("set-c64", "--")):
            axes[0].plot(ns, [r.get(m, {}).get("ops_per_sec", float("nan")) for r in rs],
                         linestyle=ls, label=f"{label} {m}", **kw)
        for m, ls in (("get-c1", "-"), ("set-c1", "--")):
            axes[1].plot(ns, [r.get(m, {}).get("p99_ms", float("nan")) for r in rs],
                         linestyle=ls, label=f"{label} {m} p99", **kw)
        axes[2].plot(ns, [r.get("list10k", {}).get("p50_ms", float("nan")) for r in rs],
                     label=f"{label} list10k p50", **kw)
        axes[3].plot(ns, [(r.get("get-c64") or {}).get("cpu_us_per_op") or float("nan")
                          for r in rs], label=f"{label} get-c64", **kw)
    titles = ["throughput, 64 clients (ops/s)", "latency p99, 1 client (ms)",
              "10k-key list latency p50 (ms)", "server CPU per point read, 64 clients (µs)"]
    for ax, t in zip(axes, titles):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("keys in the database")
        ax.set_title(t)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def parse_sizes(text, default_value):
    """`N` or `N@V` entries, comma-separated: (keys, value size) pairs."""
    out = []
    for item in (x for x in text.split(",") if x):
        n, _, v = item.partition("@")
        out.append((int(n), int(v) if v else default_value))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True)
    p.add_argument("--bench", required=True)
    p.add_argument("--denokv", default=None)
    p.add_argument("--before-server", default=None,
                   help="an older kv-connect-server build for the disk pass (ours-sqlite-before)")
    p.add_argument("--servers", default="ours-sqlite,ours-redb,ours-memory,denokv")
    p.add_argument("--sizes", default="10000,100000",
                   help="key counts, each N or N@V (V-byte values), e.g. 1000000@1000,10000000@200")
    p.add_argument("--value-size", type=int, default=1000, help="for sizes without @V")
    p.add_argument("--key-size", type=int, default=100, help="bytes per encoded key (>= 20)")
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--scan-keys", type=int, default=100000)
    p.add_argument("--disk-values", default="", help="e.g. 200,1000,2000,4000 (disk pass)")
    p.add_argument("--disk-keys", type=int, default=20000)
    p.add_argument("--disk-servers", default="ours-sqlite-before,ours-sqlite,ours-redb,denokv")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--memory-max-keys", type=int, default=2_000_000,
                   help="skip ours-memory above this many keys (about 1.3 KB RSS per 1 KB entry)")
    p.add_argument("--min-free-gb", type=float, default=12.0,
                   help="skip a file server whose data would leave less free disk than this")
    p.add_argument("--bench-timeout", type=float, default=900.0,
                   help="seconds before a measuring kv-bench run is abandoned")
    p.add_argument("--out", required=True)
    p.add_argument("--argv", default="")
    p.add_argument("--from-json", default=None,
                   help="rewrite the markdown and plot of an earlier (possibly cut short) run; "
                   "several files, comma-separated, are merged into one report (the first one's "
                   "stamp and settings), e.g. a server measured after the others")
    args = p.parse_args()
    args.prefix = "p" * max(1, args.key_size - 17)
    servers = [s for s in args.servers.split(",") if s]
    if any(s.startswith("denokv") for s in servers) and not args.denokv and not args.from_json:
        sys.exit("--denokv is required for the denokv server")
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="kv-scale-", dir=os.environ.get("TMPDIR"))
    os.makedirs(data_dir, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    info = {"stamp": stamp, "commit": commit, "host": f"{os.cpu_count()} CPUs",
            "duration": args.duration, "prefix": args.prefix,
            "argv": args.argv, "sizes": args.sizes, "scan_keys": args.scan_keys}
    rows, disk_rows, skipped = [], [], []
    if args.from_json:
        for i, path in enumerate(args.from_json.split(",")):
            with open(path) as f:
                old = json.load(f)
            if i == 0:
                info = old["info"]
            else:
                info["argv"] += f"` + `{old['info']['argv']}"
            rows += old["rows"]
            disk_rows += old["disk"]
            skipped += old.get("skipped", [])
        # A server skipped in one pass may have been measured in another.
        measured = {f"{r['server']} at {r['keys']:,} keys of {r['value_size']} B " for r in rows}
        skipped = [s for s in skipped if not any(s.startswith(m) for m in measured)]
        stamp = info["stamp"]
    base = os.path.join(args.out, f"scale-{stamp}")

    def write(final):
        # Written after every row, so a run cut short keeps what it measured.
        md = markdown(info, rows, disk_rows, skipped)
        with open(base + ".json", "w") as f:
            json.dump({"info": info, "rows": rows, "disk": disk_rows, "skipped": skipped}, f,
                      indent=1)
        if final and rows and plot(rows, base + ".png"):
            md += f"\n![throughput and latency against size](scale-{stamp}.png)\n"
            shutil.copy(base + ".png", os.path.join(args.out, "scale-latest.png"))
        with open(base + ".md", "w") as f:
            f.write(md)
        if final:
            with open(os.path.join(args.out, "scale-latest.md"), "w") as f:
                f.write(md)
            print(md)
            print(f"written to {base}.md", flush=True)

    if args.from_json:
        write(True)
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
        return
    if args.disk_values:
        disk_rows = disk_pass(args, data_dir)
        write(False)
    for n, v in parse_sizes(args.sizes, args.value_size):
        for s in servers:
            if s.endswith("-before") and not args.before_server:
                continue
            why = skip_reason(args, s, n, v, data_dir)
            if why:
                skipped.append(f"{s} at {n:,} keys of {v} B ({why})")
                print(f"== {s} at {n} keys of {v} B skipped: {why}", flush=True)
                write(False)
                continue
            rows.append(measure(args, s, n, v, data_dir))
            write(False)
    write(True)
    if args.data_dir is None:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
