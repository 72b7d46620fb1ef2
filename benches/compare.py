#!/usr/bin/env python3
"""Side-by-side load comparison: our kv-connect-server (each engine) against the reference
denokv server (default and batched configurations), all running at once on fresh files in one
directory, driven by kv-bench over KV Connect/h2c. Started by compare.sh (which builds the
binaries and installs denokv); see benches/README.md.

Rounds interleave the servers (the order rotates every round and workload) so slow drifts of a
shared machine hit every server alike; the tables report medians over the rounds and ratios of
those medians, the peak RSS (VmHWM) of each server, and the server CPU time per operation.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TOKEN = "kv-bench-compare-token"

# name, kv-bench arguments. The read workloads use the keys seeded once per server.
WORKLOADS = [
    ("set-c64", ["--workload", "set", "--clients", "64"]),
    ("get-c64", ["--workload", "get", "--clients", "64", "--no-seed"]),
    ("list10k-c4", ["--workload", "list", "--list-keys", "10000", "--clients", "4", "--no-seed"]),
    ("mixed90-c64", ["--workload", "mixed", "--clients", "64", "--read-ratio", "0.9", "--no-seed"]),
    ("bank-c16", ["--workload", "bank", "--clients", "16", "--accounts", "100"]),
    ("sum-c64", ["--workload", "sum", "--clients", "64"]),
    ("set-c1", ["--workload", "set", "--clients", "1"]),
]
# Valid in --workloads, not run by default.
EXTRA_WORKLOADS = [
    ("bank-c64", ["--workload", "bank", "--clients", "64", "--accounts", "100"]),
]
REFS = ["denokv", "denokv-batched"]
OURS = ["ours-sqlite", "ours-redb", "ours-memory"]
# The same engines served by an earlier build (--baseline), to show a change's cost.
BASES = ["base-sqlite", "base-redb", "base-memory"]
DURABLE = ["ours-sqlite", "ours-redb"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_cmd(name, args, data_dir, port):
    addr = f"127.0.0.1:{port}"
    if name.startswith("ours-") or name.startswith("base-"):
        binary = args.server if name.startswith("ours-") else args.baseline
        engine = name.split("-", 1)[1]
        ext = {"sqlite": "sqlite", "redb": "redb", "memory": "mem"}[engine]
        return [binary, "--engine", engine, "--path", os.path.join(data_dir, f"{name}.{ext}"),
                "--access-token", TOKEN, "--addr", addr]
    cmd = [args.denokv, "--sqlite-path", os.path.join(data_dir, f"{name}.sqlite"), "serve",
           "--access-token", TOKEN, "--addr", addr]
    if name == "denokv-batched":
        cmd += ["--num-workers", "8", "--atomic-write-batch-timeout-ms", "50"]
    return cmd


def wait_listening(port, proc, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def proc_status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])  # kB
    return None


def cpu_secs(pid):
    """User + system CPU seconds of a process (all threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=0):
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def machine_info(data_dir):
    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
        out = subprocess.run(["findmnt", "-no", "FSTYPE,SOURCE", "--target", data_dir],
                             capture_output=True, text=True, check=False)
        info["data_fs"] = out.stdout.strip()
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=False, cwd=os.path.dirname(os.path.abspath(__file__)))
        info["commit"] = out.stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=False,
                               cwd=os.path.dirname(os.path.abspath(__file__)))
        if dirty.stdout.strip():
            info["commit"] += " + uncommitted changes"
    except OSError:
        pass
    return info


def run_bench(args, name, port, wl_args, json_path):
    cmd = [args.bench, "--url", f"http://127.0.0.1:{port}", "--access-token", TOKEN,
           "--label", name, "--duration-secs", str(args.duration), "--warmup-secs",
           str(args.warmup), "--json", json_path] + wl_args
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result = None
    if os.path.exists(json_path):
        with open(json_path) as f:
            result = json.load(f)
        os.unlink(json_path)
    return proc.returncode, proc.stdout.strip() + proc.stderr.strip(), result, client_cpu


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--server", required=True, help="kv-connect-server binary")
    p.add_argument("--bench", required=True, help="kv-bench binary")
    p.add_argument("--denokv", required=True, help="denokv binary")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--baseline", default=None, help="an earlier kv-connect-server build: servers "
                   "base-sqlite, base-redb, base-memory run it (e.g. --servers "
                   "ours-sqlite,base-sqlite), and the report adds ours ÷ base ratios")
    p.add_argument("--baseline-label", default="an earlier build",
                   help="what --baseline is, for the report (e.g. its commit)")
    p.add_argument("--servers", default=",".join(OURS + REFS))
    p.add_argument("--workloads", default=",".join(w for w, _ in WORKLOADS))
    p.add_argument("--data-dir", default=None, help="where the database files go (default: a "
                   "fresh temporary directory, removed afterwards)")
    p.add_argument("--out", required=True, help="directory for compare-*.md/json and latest.md")
    args = p.parse_args()

    servers = [s for s in args.servers.split(",") if s]
    for s in servers:
        if s not in OURS + REFS + BASES:
            sys.exit(f"unknown server {s}")
        if s in BASES and not args.baseline:
            sys.exit(f"{s} needs --baseline")
    workloads = [(n, a) for n, a in WORKLOADS + EXTRA_WORKLOADS if n in args.workloads.split(",")]
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="kv-compare-")
    os.makedirs(data_dir, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)

    procs = {}
    try:
        for s in servers:
            port = free_port()
            log = open(os.path.join(data_dir, f"{s}.log"), "w")
            proc = subprocess.Popen(server_cmd(s, args, data_dir, port), stdout=log, stderr=log,
                                    stdin=subprocess.DEVNULL)
            procs[s] = (proc, port)
            if not wait_listening(port, proc):
                sys.exit(f"{s} did not start; see {data_dir}/{s}.log")
        print(f"servers up: {', '.join(f'{s}=:{pp[1]}' for s, pp in procs.items())}; data in {data_dir}",
              flush=True)
        for s, (proc, port) in procs.items():
            out = subprocess.run([args.bench, "--url", f"http://127.0.0.1:{port}", "--access-token",
                                  TOKEN, "--seed-only", "--keys", "10000"],
                                 capture_output=True, text=True, check=False)
            if out.returncode != 0:
                sys.exit(f"seeding {s} failed: {out.stdout}{out.stderr}")

        runs = []  # one dict per (round, workload, server)
        json_path = os.path.join(data_dir, "run.json")
        for r in range(args.rounds):
            for wi, (wname, wargs) in enumerate(workloads):
                k = (r + wi) % len(servers)
                for s in servers[k:] + servers[:k]:
                    proc, port = procs[s]
                    cpu0 = cpu_secs(proc.pid)
                    rc, text, res, client_cpu = run_bench(args, s, port, wargs, json_path)
                    cpu1 = cpu_secs(proc.pid)
                    row = {"round": r, "workload": wname, "server": s, "rc": rc, "report": res,
                           "server_cpu_secs": cpu1 - cpu0, "client_cpu_secs": client_cpu}
                    runs.append(row)
                    first = text.splitlines()[0] if text else ""
                    print(f"[round {r + 1}/{args.rounds}] {wname:12} {s:15} rc={rc} {first}",
                          flush=True)
                    if rc not in (0,):
                        print(text, flush=True)
        rss = {}
        for s, (proc, _) in procs.items():
            rss[s] = proc_status(proc.pid, "VmHWM")
    finally:
        for s, (proc, _) in procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for s, (proc, _) in procs.items():
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    summary = summarise(runs, servers, workloads)
    info = machine_info(data_dir)
    info.update({"rounds": args.rounds, "duration_secs": args.duration, "warmup_secs": args.warmup})
    if args.baseline:
        info["baseline"] = args.baseline_label
    md = render(summary, rss, servers, workloads, info)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    doc = {"machine": info, "peak_rss_kib": rss, "summary": summary, "runs": runs}
    for name in (f"compare-{stamp}.md", "latest.md"):
        with open(os.path.join(args.out, name), "w") as f:
            f.write(md)
    with open(os.path.join(args.out, f"compare-{stamp}.json"), "w") as f:
        json.dump(doc, f, indent=1)
    print(md)
    print(f"written to {args.out}/compare-{stamp}.md (and latest.md)")
    if args.data_dir is None:
        shutil.rmtree(data_dir, ignore_errors=True)


def summarise(runs, servers, workloads):
    out = {}
    for wname, _ in workloads:
        out[wname] = {}
        for s in servers:
            rs = [x for x in runs if x["workload"] == wname and x["server"] == s]
            reps = [x["report"] for x in rs if x["report"]]
            # CPU is sampled around the whole kv-bench run: warm-up plus measurement.
            ops = sum(x["ops"] + x["params"].get("warmup_ops", 0) for x in reps)
            cpu = sum(x["server_cpu_secs"] for x in rs)
            client_cpu = sum(x["client_cpu_secs"] for x in rs)
            out[wname][s] = {
                "ops_per_sec": median([x["ops_per_sec"] for x in reps]),
                "ops_per_sec_all": [round(x["ops_per_sec"], 1) for x in reps],
                "p50_ms": median([x["latency"]["p50_ms"] for x in reps]),
                "p99_ms": median([x["latency"]["p99_ms"] for x in reps]),
                "max_ms": max([x["latency"]["max_ms"] for x in reps], default=None),
                "errors": sum(x["errors"] for x in reps),
                "conflicts": sum(x["conflicts"] for x in reps),
                "check_failures": sum(0 if x["checks"]["bank_violations"] == 0 and
                                      x["checks"]["sum_ok"] is not False else 1 for x in reps)
                + sum(1 for x in rs if x["rc"] not in (0,)),
                "server_cpu_us_per_op": (cpu / ops * 1e6) if ops else None,
                "client_cpu_us_per_op": (client_cpu / ops * 1e6) if ops else None,
            }
    return out


def render(summary, rss, servers, workloads, info):
    L = []
    L.append(f"# kv-bench comparison, {info['date_utc']}\n")
    L.append(f"Machine: {info.get('cpu', '?')}, {info['cpus']} CPUs, {info.get('mem_gib', '?')} GiB, "
             f"Linux {info['kernel']}; data files on `{info.get('data_fs', '?')}`; commit "
             f"`{info.get('commit', '?')}`. {info['rounds']} interleaved rounds of "
             f"{info['duration_secs']:g} s per workload and server (after {info['warmup_secs']:g} s "
             "warm-up); kv-bench shares the machine with the servers. Figures are medians over the "
             "rounds; ratios are ours ÷ reference (higher is better, except latency and RSS).\n")
    L.append("Servers: `ours-*` = `kv-connect-server --engine *` (durable default; memory is not "
             "durable, for reference only); `denokv` = `denokv serve` 0.14 default (SQLite WAL, "
             "synchronous=FULL, 1 worker, no batching); `denokv-batched` = `--num-workers 8 "
             "--atomic-write-batch-timeout-ms 50`. h2c, one connection per client.\n")
    if info.get("baseline"):
        L.append(f"`base-*` = the same engines served by {info['baseline']}.\n")
    L.append("## Throughput (ops/s, median)\n")
    L.append("| workload | " + " | ".join(servers) + " |")
    L.append("|---|" + "---|" * len(servers))
    for w, _ in workloads:
        L.append(f"| {w} | " + " | ".join(fmt(summary[w][s]["ops_per_sec"]) for s in servers) + " |")
    L.append("")
    refs = [r for r in REFS if r in servers]
    ours = [o for o in OURS if o in servers]
    if refs and ours:
        cols = [(o, r) for o in ours for r in refs]
        L.append("## Throughput ratios (ours ÷ reference)\n")
        L.append("| workload | " + " | ".join(f"{o} ÷ {r}" for o, r in cols) + " |")
        L.append("|---|" + "---|" * len(cols))
        for w, _ in workloads:
            L.append(f"| {w} | " + " | ".join(
                fmt(ratio(summary[w][o]["ops_per_sec"], summary[w][r]["ops_per_sec"]), 2) + "x"
                for o, r in cols) + " |")
        L.append("")
    pairs = [(o, "base-" + o.split("-", 1)[1]) for o in ours
             if "base-" + o.split("-", 1)[1] in servers]
    if pairs:
        L.append("## Against the baseline build (ours ÷ base)\n")
        L.append("Throughput ratio (higher is better) / server CPU per operation ratio (lower is "
                 "better).\n")
        L.append("| workload | " + " | ".join(f"{o} ÷ {b}" for o, b in pairs) + " |")
        L.append("|---|" + "---|" * len(pairs))
        for w, _ in workloads:
            L.append(f"| {w} | " + " | ".join(
                fmt(ratio(summary[w][o]["ops_per_sec"], summary[w][b]["ops_per_sec"]), 2) + "x / "
                + fmt(ratio(summary[w][o]["server_cpu_us_per_op"],
                            summary[w][b]["server_cpu_us_per_op"]), 2) + "x"
                for o, b in pairs) + " |")
        L.append("")
    L.append("## Latency p50 / p99 (ms, median over rounds)\n")
    L.append("| workload | " + " | ".join(servers) + " |")
    L.append("|---|" + "---|" * len(servers))
    for w, _ in workloads:
        L.append(f"| {w} | " + " | ".join(
            f"{fmt(summary[w][s]['p50_ms'], 2)} / {fmt(summary[w][s]['p99_ms'], 2)}"
            for s in servers) + " |")
    L.append("")
    L.append("## CPU per operation, server / kv-bench client (µs, all rounds incl. warm-up)\n")
    L.append("The steadiest efficiency measure on a shared machine: CPU time the server process "
             "(user + system, all threads) and the load generator spent per successful "
             "operation.\n")
    L.append("| workload | " + " | ".join(servers) + " |")
    L.append("|---|" + "---|" * len(servers))
    for w, _ in workloads:
        L.append(f"| {w} | " + " | ".join(
            f"{fmt(summary[w][s]['server_cpu_us_per_op'])} / {fmt(summary[w][s]['client_cpu_us_per_op'])}"
            for s in servers) + " |")
    L.append("")
    L.append("## Peak RSS (VmHWM, MiB)\n")
    L.append("| " + " | ".join(servers) + " |")
    L.append("|" + "---|" * len(servers))
    L.append("| " + " | ".join(fmt(rss[s] / 1024 if rss.get(s) else None, 1) for s in servers) + " |")
    L.append("")
    errs = [(w, s, summary[w][s]) for w, _ in workloads for s in servers
            if summary[w][s]["errors"] or summary[w][s]["check_failures"]]
    L.append("## Errors and checks\n")
    if errs:
        for w, s, x in errs:
            L.append(f"- {w} on {s}: {x['errors']} errors, {x['check_failures']} failed checks/runs")
    else:
        L.append("No errors; every bank audit and sum check passed on every server.")
    conf = [(w, s, summary[w][s]["conflicts"]) for w, _ in workloads for s in servers
            if summary[w][s]["conflicts"]]
    if conf:
        L.append("Bank conflicts (retried check failures, all rounds): " +
                 ", ".join(f"{s} {c}" for w, s, c in conf) + ".")
    L.append("")
    L.append("## Targets (issue 6; durable engines)\n")
    L.append("| target | " + " | ".join(d for d in DURABLE if d in servers) + " |")
    L.append("|---|" + "---|" * len([d for d in DURABLE if d in servers]))
    targets = []
    def thr(w, r, need):
        return (f"{w} ≥ {need}x {r}",
                lambda o: ratio(summary[w][o]["ops_per_sec"], summary[w][r]["ops_per_sec"]),
                lambda v: v is not None and v >= need, 2, "x")
    names = [w for w, _ in workloads]
    if "set-c64" in names and "denokv" in servers:
        targets.append(thr("set-c64", "denokv", 10))
    if "set-c64" in names and "denokv-batched" in servers:
        targets.append(thr("set-c64", "denokv-batched", 2))
    for r in refs:
        if "get-c64" in names:
            targets.append(thr("get-c64", r, 2))
        if "list10k-c4" in names:
            targets.append(thr("list10k-c4", r, 1.5))
    for r in refs:
        if "set-c64" in names:
            targets.append((f"set-c64 p99 ≤ {r}'s",
                            lambda o, r=r: ratio(summary["set-c64"][o]["p99_ms"], summary["set-c64"][r]["p99_ms"]),
                            lambda v: v is not None and v <= 1.0, 2, "x of it"))
        targets.append((f"peak RSS ≤ {r}'s",
                        lambda o, r=r: ratio(rss.get(o), rss.get(r)),
                        lambda v: v is not None and v <= 1.0, 2, "x of it"))
    for label, value, ok, digits, unit in targets:
        cells = []
        for o in DURABLE:
            if o not in servers:
                continue
            v = value(o)
            cells.append(f"{fmt(v, digits)}{unit} {'met' if ok(v) else '**missed**'}")
        L.append(f"| {label} | " + " | ".join(cells) + " |")
    L.append("")
    return "\n".join(L)


if __name__ == "__main__":
    main()
