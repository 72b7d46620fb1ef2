#!/usr/bin/env python3
"""Watchers at scale: notification latency, server memory per watch stream and CPU per
notification, for our kv-connect-server (sqlite engine) and the reference denokv server, in one
run. Started by watch.sh (which builds the binaries and installs denokv); see benches/README.md.

Every scenario starts a fresh server process (so its RSS growth is the streams' alone), runs
`kv-bench --workload watch --server-pid PID`, and stops it. Scenarios:

  hot-<N>-c<C>     N watchers of one hot key over C connections, one write every
                   --hot-interval-ms (1000: N notifications per second)
  spread-<N>-c<C>  N watchers of N distinct keys over C connections, a write of 100 keys
                   every 100 ms (1,000 notifications per second)
  hot-199-c1/-c4   the issue-17 pair: 199 watchers of one key on 1 vs 4 connections, one
                   write every 100 ms

The reference caps concurrent HTTP/2 streams per connection (as hyper's default 200 did for
ours), so the large scenarios use C = N / 100 connections for every server; ours also runs them on
one connection. Extra builds of our server (e.g. the one before a fix) are compared with
--extra name=path.
"""

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import free_port, machine_info, wait_listening  # noqa: E402

TOKEN = "kv-bench-watch-token"


def scenarios(n, duration, hot_interval_ms):
    per = max(1, n // 100)
    common = ["--duration-secs", str(duration), "--warmup-secs", "1"]
    fast = common + ["--write-interval-ms", "100"]
    hot = common + ["--write-interval-ms", str(hot_interval_ms)]
    return [
        (f"hot-{n}-c{per}", ["--watchers", str(n), "--watch-keys", "1", "--connections", str(per)] + hot, False),
        (f"hot-{n}-c1", ["--watchers", str(n), "--watch-keys", "1", "--connections", "1"] + hot, True),
        (f"spread-{n}-c{per}", ["--watchers", str(n), "--watch-keys", str(n), "--mutations", "100",
                                "--connections", str(per)] + fast, False),
        ("hot-199-c1", ["--watchers", "199", "--watch-keys", "1", "--connections", "1"] + fast, False),
        ("hot-199-c4", ["--watchers", "199", "--watch-keys", "1", "--connections", "4"] + fast, False),
    ]


def server_cmd(kind, binary, path, port):
    addr = f"127.0.0.1:{port}"
    if kind == "denokv":
        return [binary, "--sqlite-path", path, "serve", "--access-token", TOKEN, "--addr", addr]
    return [binary, "--engine", "sqlite", "--path", path, "--access-token", TOKEN, "--addr", addr]


def run_one(args, name, kind, binary, scen, wargs, data_dir, n):
    port = free_port()
    path = os.path.join(data_dir, f"{name}-{scen}-{n}.sqlite")
    log = open(os.path.join(data_dir, f"{name}.log"), "a")
    proc = subprocess.Popen(server_cmd(kind, binary, path, port), stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)
    try:
        if not wait_listening(port, proc):
            return {"error": f"{name} did not start (see {data_dir}/{name}.log)"}
        json_path = os.path.join(data_dir, "run.json")
        cmd = [args.bench, "--url", f"http://127.0.0.1:{port}", "--access-token", TOKEN,
               "--workload", "watch", "--label", name, "--server-pid", str(proc.pid),
               "--json", json_path] + wargs
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        res = None
        if os.path.exists(json_path):
            with open(json_path) as f:
                res = json.load(f)
            os.unlink(json_path)
        if res is None:
            return {"error": (out.stdout + out.stderr).strip()[-400:]}
        res["rc"] = out.returncode
        return res
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cell(res, kind, field):
    if not res or "error" in res:
        return None
    if field in ("p50_ms", "p99_ms"):
        return res["latency_by_kind"].get(kind, {}).get(field)
    return res["params"].get(field)


def fmt(x, digits=1):
    return "–" if x is None else f"{x:,.{digits}f}"


def render(results, servers, info, n):
    lines = [
        f"# Watchers at scale ({n:,} watch streams)",
        "",
        f"{info.get('date_utc', '')}, commit {info.get('commit', '?')}, {info.get('cpus')} CPUs "
        f"({info.get('cpu', '?')}), {info.get('mem_gib', '?')} GiB. Produced by `benches/watch.sh`.",
        "",
        "Latencies in ms. *notify*: from sending the write to a watcher decoding the new value "
        "(includes the commit). *all*: per write, until its last watcher. *fan-out*: from the "
        "write's answer to its last watcher. *RSS/stream*: server RSS growth while opening the "
        "streams ÷ streams. *CPU/notif*: server CPU during the measurement ÷ notifications; "
        "*bench CPU/notif*: the same for kv-bench itself (it decodes every notification on the "
        "same cores).",
        "",
        "| scenario | server | notify p50 | notify p99 | all p50 | all p99 | fan-out p99 | write p99 "
        "| open s | RSS/stream KiB | CPU/notif µs | bench CPU/notif µs | delivered / expected | check |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scen, per_server in results.items():
        for s in servers:
            res = per_server.get(s)
            if res is None:
                continue
            if "error" in res:
                lines.append(f"| {scen} | {s} | failed: {res['error'][:160].replace('|', '/')} |"
                             + " |" * 12)
                continue
            p = res["params"]
            lines.append(
                f"| {scen} | {s} | {fmt(cell(res, 'notify', 'p50_ms'))} | "
                f"{fmt(cell(res, 'notify', 'p99_ms'))} | {fmt(cell(res, 'all_notified', 'p50_ms'))} | "
                f"{fmt(cell(res, 'all_notified', 'p99_ms'))} | "
                f"{fmt(cell(res, 'all_notified_after_ack', 'p99_ms'))} | "
                f"{fmt(cell(res, 'write', 'p99_ms'))} | {fmt(p.get('open_secs'), 2)} | "
                f"{fmt(p.get('server_rss_kib_per_watcher'), 2)} | "
                f"{fmt(p.get('server_cpu_us_per_notification'), 1)} | "
                f"{fmt(p.get('client_cpu_us_per_notification'), 1)} | "
                f"{p.get('deliveries_exact', 0):,} / {p.get('deliveries_expected', 0):,} | "
                f"{'ok' if res['checks'].get('watch_ok') else 'LOST'} |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--server", required=True, help="our kv-connect-server binary")
    p.add_argument("--bench", required=True, help="kv-bench binary")
    p.add_argument("--denokv", default=None, help="reference denokv binary (omit to skip)")
    p.add_argument("--extra", action="append", default=[],
                   help="name=path of another kv-connect-server build to compare")
    p.add_argument("--watchers", type=int, default=10_000)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--hot-interval-ms", type=int, default=1000,
                   help="ms between writes of the hot-N scenarios")
    p.add_argument("--scenarios", default=None, help="comma-separated subset of scenario names")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    servers = [("ours", "ours", args.server)]
    for e in args.extra:
        name, _, path = e.partition("=")
        servers.append((name, "ours", path))
    if args.denokv:
        servers.append(("denokv", "denokv", args.denokv))
    scen = scenarios(args.watchers, args.duration, args.hot_interval_ms)
    if args.scenarios:
        wanted = args.scenarios.split(",")
        scen = [s for s in scen if s[0] in wanted]
    data_dir = tempfile.mkdtemp(prefix="kv-watch-")
    results = {}
    try:
        for i, (sname, wargs, ours_only) in enumerate(scen):
            results[sname] = {}
            order = servers[i % len(servers):] + servers[:i % len(servers)]
            for name, kind, binary in order:
                if ours_only and kind == "denokv":
                    continue
                res = run_one(args, name, kind, binary, sname, wargs, data_dir, i)
                results[sname][name] = res
                if "error" in res:
                    print(f"{sname:18} {name:10} FAILED {res['error'][:300]}", flush=True)
                else:
                    n = res["latency_by_kind"].get("notify", {})
                    print(f"{sname:18} {name:10} notify p50 {n.get('p50_ms')} p99 {n.get('p99_ms')} "
                          f"rss/stream {res['params'].get('server_rss_kib_per_watcher')} KiB",
                          flush=True)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    info = machine_info(args.out)
    with open("/proc/loadavg") as f:
        info["loadavg"] = f.read().split()[:3]
    names = [s[0] for s in servers]
    md = render(results, names, info, args.watchers)
    md += f"\nLoad average at the end: {' '.join(info['loadavg'])} (other work shares the machine).\n"
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"watch-{stamp}.md"), "w") as f:
        f.write(md)
    with open(os.path.join(args.out, f"watch-{stamp}.json"), "w") as f:
        json.dump({"machine": info, "results": results}, f, indent=1)
    print(md)
    print(f"written to {args.out}/watch-{stamp}.md")


if __name__ == "__main__":
    main()
