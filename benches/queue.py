#!/usr/bin/env python3
"""Deep queues (issue 17): enqueue and delivery throughput, delivery lateness, server memory and
CPU per message, and behaviour across restarts, for our kv-connect-server on each engine, plus the
reference denokv where it can take part. Started by queue.sh (which builds the binaries); see
benches/README.md.

Every engine gets fresh databases in a scratch folder (deleted afterwards). Scenarios, each one
`kv-bench --workload queue` run:

  enqueue-1        --single messages, one client, one message per write (fresh database)
  fill             --messages messages (--delay-mix), 4 clients, --batch per write
  deliver-1        --sample deliveries from the deep queue with one listener
  deliver-L        --sample deliveries with --listeners listeners
  restart-clean    SIGTERM, restart (time until the metadata exchange answers), then --sample
                   deliveries: time to the first delivery; pending counts before/after from
                   /metrics must match the acknowledged finishes
  restart-kill     deliveries running, SIGKILL after --kill-after s, immediate restart; the
                   listeners keep going (--sample deliveries): longest pause, duplicates, and
                   the pending count again
  drain-kill       --drain messages (--drain-delay-mix), server with --queue-lease-secs 5, every one
                   delivered with a SIGKILL and restart at about a third: lost (must be 0),
                   duplicates, early deliveries (must be 0), lateness of delayed messages
  steady           --steady messages enqueued at --steady-rate per second while 4 listeners
                   run (mix 0:50,1000:25,5000:25): lateness under a load the listeners keep up with

The memory engine keeps nothing across a restart, so it runs without the restart scenarios (and
with --memory-messages). The reference denokv stores enqueues sent over KV Connect but has no
remote way to deliver them, so it runs the enqueue scenarios only.
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
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scale  # noqa: E402
from compare import machine_info  # noqa: E402

TOKEN = scale.TOKEN


def bench(args, url, extra, pid=None, label=None):
    cmd = [args.bench, "--url", url, "--access-token", TOKEN, "--workload", "queue",
           "--value-size", str(args.payload), "--json", "-"] + extra
    if pid:
        cmd += ["--server-pid", str(pid)]
    if label:
        cmd += ["--label", label]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    sys.stderr.write(proc.stderr)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        sys.exit(f"kv-bench failed ({proc.returncode}): {proc.stdout[-2000:]}")
    q = report["params"]["queue"]
    q["exit"] = proc.returncode
    q["errors"] = report["errors"]
    q["unknown_outcomes"] = report["unknown_outcomes"]
    q["finishes_ok"] = report["latency_by_kind"].get("finish", {}).get("count", 0)
    q["violations"] = report["checks"]["details"]
    return q


def pending(port):
    """kv_queue_ready + kv_queue_leased from /metrics (every database summed)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read().decode()
    total = {"kv_queue_ready": 0, "kv_queue_leased": 0}
    for line in text.splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name in total:
            total[name] += int(float(line.rsplit(" ", 1)[1]))
    return total


def settled_pending(port, expected=None, timeout=30.0):
    """/metrics' pending counts once the count taken at open has landed (a deep queue is counted
    in the background after a restart): equal to `expected`, or the same on two reads 0.5 s
    apart and non-zero. Returns (counts, seconds waited)."""
    t0 = time.monotonic()
    last = pending(port)
    while time.monotonic() < t0 + timeout:
        time.sleep(0.05 if expected is not None else 0.5)
        now = pending(port)
        total = sum(now.values())
        if (expected is not None and total == expected) or (
                expected is None and now == last and total > 0):
            return now, time.monotonic() - t0
        last = now
    return last, time.monotonic() - t0


def our_server(args, engine, data_dir, stem, lease=None):
    path = os.path.join(data_dir, f"{stem}.{scale.ext_of(engine)}")
    extra = ["--queue-lease-secs", str(lease)] if lease else []
    return scale.Server(stem, lambda port: [args.server, "--engine", engine, "--path", path,
                                            "--access-token", TOKEN, "--addr",
                                            f"127.0.0.1:{port}"] + extra, data_dir)


def denokv_server(args, data_dir, stem):
    path = os.path.join(data_dir, f"{stem}.sqlite")
    return scale.Server(stem, lambda port: [args.denokv, "--sqlite-path", path, "serve",
                                            "--access-token", TOKEN, "--addr",
                                            f"127.0.0.1:{port}"], data_dir)


def restart_on_port(server, sig):
    """Stops the server with `sig` and starts it again on the same port; returns the seconds
    from the signal until it answered again."""
    port = server.port
    t0 = time.monotonic()
    server.stop(sig)
    server.proc = None
    log = open(os.path.join(server.data_dir, f"{server.name}.log"), "a")
    server.proc = subprocess.Popen(server.cmd_for_port(port), stdout=log, stderr=log,
                                   stdin=subprocess.DEVNULL)
    server.port = port
    while time.monotonic() < t0 + 600:
        if server.proc.poll() is not None:
            sys.exit(f"{server.name} exited at restart")
        if scale.metadata_ok(port):
            return time.monotonic() - t0
        time.sleep(0.02)
    sys.exit(f"{server.name} did not come back within 600 s")


def kill_later(server, after, out):
    def go():
        time.sleep(after)
        out["restart_s"] = restart_on_port(server, signal.SIGKILL)
    t = threading.Thread(target=go)
    t.start()
    return t


def run_engine(args, engine, data_dir):
    res = {"engine": engine, "scenarios": {}}
    sc = res["scenarios"]
    n = args.memory_messages if engine == "memory" else args.messages
    res["messages"] = n
    mix = ["--delay-mix", args.delay_mix]

    s = our_server(args, engine, data_dir, f"ours-{engine}-single")
    s.start()
    sc["enqueue-1"] = bench(args, s.url, ["--queue-phase", "enqueue", "--messages",
                                          str(args.single), "--clients", "1"] + mix, s.proc.pid)
    s.stop()

    s = our_server(args, engine, data_dir, f"ours-{engine}")
    res["start_empty_s"] = s.start()
    sc["fill"] = bench(args, s.url, ["--queue-phase", "enqueue", "--messages", str(n),
                                     "--clients", "4", "--enqueue-batch", str(args.batch)] + mix,
                       s.proc.pid)
    res["db_bytes_full"] = scale.files_size(data_dir, f"ours-{engine}")
    for name, listeners in [("deliver-1", 1), (f"deliver-{args.listeners}", args.listeners)]:
        sc[name] = bench(args, s.url, ["--queue-phase", "deliver", "--messages", str(n),
                                       "--listeners", str(listeners), "--max-ops",
                                       str(args.sample)], s.proc.pid)
    if engine != "memory":
        before = pending(s.port)
        restart_s = restart_on_port(s, signal.SIGTERM)
        after, settle_s = settled_pending(s.port, sum(before.values()))
        r = bench(args, s.url, ["--queue-phase", "deliver", "--messages", str(n), "--listeners",
                                str(args.listeners), "--max-ops", str(args.sample)], s.proc.pid)
        r.update(restart_s=restart_s, pending_before=before, pending_after_restart=after,
                 gauges_settled_s=settle_s, rss_after_restart_kib=s.rss_kib())
        sc["restart-clean"] = r
        print(f"clean restart: {restart_s:.2f} s, pending {before} -> {after} (gauges settled "
              f"after {settle_s:.2f} s)", file=sys.stderr)

        before = pending(s.port)
        out = {}
        t = kill_later(s, args.kill_after, out)
        r = bench(args, s.url, ["--queue-phase", "deliver", "--messages", str(n), "--listeners",
                                str(args.listeners), "--max-ops", str(args.sample * 3)])
        t.join()
        after, _ = settled_pending(s.port)
        r.update(restart_s=out.get("restart_s"), pending_before=before, pending_after=after)
        sc["restart-kill"] = r
        print(f"kill restart: {out.get('restart_s')} s, pending {before} -> {after}",
              file=sys.stderr)
        s.stop()
        res["pending_check"] = pending_check(n, sc)

        s = our_server(args, engine, data_dir, f"ours-{engine}-drain", lease=5)
        s.start()
        bench(args, s.url, ["--queue-phase", "enqueue", "--messages", str(args.drain),
                            "--clients", "4", "--enqueue-batch", str(args.batch),
                            "--delay-mix", args.drain_delay_mix])
        out = {}
        t = kill_later(s, args.drain_kill_after, out)
        r = bench(args, s.url, ["--queue-phase", "deliver", "--messages", str(args.drain),
                                "--listeners", str(args.listeners), "--idle-secs", "60"])
        t.join()
        r["restart_s"] = out.get("restart_s")
        sc["drain-kill"] = r
        s.stop()
    else:
        s.stop()

    s = our_server(args, engine, data_dir, f"ours-{engine}-steady")
    s.start()
    sc["steady"] = bench(args, s.url, ["--queue-phase", "both", "--messages", str(args.steady),
                                       "--enqueue-rate", str(args.steady_rate), "--clients", "2",
                                       "--listeners", "4", "--delay-mix", "0:50,1000:25,5000:25",
                                       "--idle-secs", "10"], s.proc.pid)
    s.stop()
    return res


def pending_check(n, sc):
    """Messages pending on the server after each step vs the enqueued minus acknowledged
    finishes (a finish lost in the kill leaves its message pending: at-least-once)."""
    finished = sum(sc[k]["finishes_ok"] for k in sc if k.startswith("deliver"))
    expected_clean = n - finished
    before = sc["restart-clean"]["pending_before"]
    after = sc["restart-clean"]["pending_after_restart"]
    finished2 = finished + sc["restart-clean"]["finishes_ok"]
    k = sc["restart-kill"]
    expected_kill = n - finished2 - k["finishes_ok"]
    got_kill = sum(k["pending_after"].values())
    return {
        "expected_before_clean_restart": expected_clean,
        "pending_before_clean_restart": sum(before.values()),
        "pending_after_clean_restart": sum(after.values()),
        "expected_after_kill": expected_kill,
        "pending_after_kill": got_kill,
        "ok": sum(before.values()) == expected_clean == sum(after.values())
        # A finish cut off by the kill may or may not have committed.
        and expected_kill - k["deliver"]["finish_unknown"] <= got_kill <= expected_kill,
    }


def run_denokv(args, data_dir):
    res = {"engine": "denokv (sqlite)", "scenarios": {}}
    mix = ["--delay-mix", args.delay_mix]
    s = denokv_server(args, data_dir, "denokv-single")
    s.start()
    res["scenarios"]["enqueue-1"] = bench(args, s.url, ["--queue-phase", "enqueue", "--messages",
                                                        str(args.single), "--clients", "1"] + mix,
                                          s.proc.pid)
    s.stop()
    s = denokv_server(args, data_dir, "denokv")
    s.start()
    n = args.denokv_messages
    res["messages"] = n
    res["scenarios"]["fill"] = bench(args, s.url, ["--queue-phase", "enqueue", "--messages",
                                                   str(n), "--clients", "4", "--enqueue-batch",
                                                   str(args.batch)] + mix, s.proc.pid)
    res["db_bytes_full"] = scale.files_size(data_dir, "denokv")
    s.stop()
    return res


def f(x, d=0):
    if x is None:
        return "–"
    if isinstance(x, (int, float)):
        return f"{x:,.{d}f}"
    return str(x)


def peak_mib(q):
    """The largest RSS sampled during a scenario or read at its end, MiB."""
    e = q.get("enqueue") or {}
    kib = max(q.get("server_peak_rss_kib") or 0, e.get("server_rss_kib") or 0)
    return kib / 1024 if kib else None


def render(info, results, args, load):
    out = [f"# Deep queues ({info['date_utc']})", ""]
    out.append(f"Machine: {info.get('cpu', '?')}, {info.get('cpus')} cores, "
               f"{info.get('mem_gib')} GiB, data on {info.get('data_fs', '?')}; commit "
               f"{info.get('commit', '?')}. Load average at start {load[0]}, at end {load[1]} "
               "(shared machine: compare rows of one run only).")
    out.append(f"Payload {args.payload} B; delay mix `{args.delay_mix}` (delay ms:weight); "
               f"fill batch {args.batch} messages per write over 4 clients.")
    out.append("")
    out.append("## Enqueue")
    out.append("")
    out.append("| server | messages | single msg/s | fill msg/s | ratio to sqlite | server CPU ms/msg (fill) "
               "| RSS after fill MiB | peak RSS MiB | DB MiB |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    base = next((r for r in results if r["engine"] == "sqlite"), None)
    for r in results:
        e1 = r["scenarios"]["enqueue-1"]["enqueue"]
        fill = r["scenarios"]["fill"]
        fe = fill["enqueue"]
        ratio = None
        if base:
            ratio = fe["msgs_per_sec"] / base["scenarios"]["fill"]["enqueue"]["msgs_per_sec"]
        out.append(f"| {r['engine']} | {f(r['messages'])} | {f(e1['msgs_per_sec'])} | "
                   f"{f(fe['msgs_per_sec'])} | {f(ratio, 2)} | {f(fe['server_cpu_ms_per_msg'], 4)} | "
                   f"{f((fe['server_rss_kib'] or 0) / 1024, 1)} | "
                   f"{f(peak_mib(fill), 1)} | "
                   f"{f(r.get('db_bytes_full', 0) / 2**20, 1)} |")
    out.append("")
    out.append("## Delivery from the deep queue")
    out.append("")
    out.append("| server | scenario | deliveries | msg/s | server CPU ms/msg | peak RSS MiB | "
               "first delivery s | duplicates | early |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for name, q in r["scenarios"].items():
            d = q.get("deliver")
            if not d or name in ("steady", "drain-kill"):
                continue
            out.append(f"| {r['engine']} | {name} | {f(d['unique'])} | {f(d['msgs_per_sec'])} | "
                       f"{f(d['server_cpu_ms_per_msg'], 4)} | "
                       f"{f(peak_mib(q), 1)} | "
                       f"{f(d['first_delivery_s'], 2)} | {f(d['duplicates'])} | {f(d['early'])} |")
    out.append("")
    out.append("## Restarts")
    out.append("")
    out.append("| server | scenario | restart s (signal → answering) | longest pause between deliveries ms "
               "| pending before → after | duplicates | redeliveries | lost | early |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for name in ("restart-clean", "restart-kill", "drain-kill"):
            q = r["scenarios"].get(name)
            if not q:
                continue
            d = q["deliver"]
            pb = q.get("pending_before")
            pa = q.get("pending_after_restart") or q.get("pending_after")
            pend = f"{f(sum(pb.values()))} → {f(sum(pa.values()))}" if pb and pa else "–"
            if q.get("gauges_settled_s") is not None:
                pend += f" (gauges after {q['gauges_settled_s']:.2f} s)"
            out.append(f"| {r['engine']} | {name} | {f(q.get('restart_s'), 2)} | "
                       f"{f(d['max_gap_ms'])} | {pend} | {f(d['duplicates'])} | "
                       f"{f(d['redeliveries'])} | {f(d['lost']) if name == 'drain-kill' else '–'} | "
                       f"{f(d['early'])} |")
        pc = r.get("pending_check")
        if pc:
            out.append(f"| {r['engine']} | pending check | | | expected {f(pc['expected_before_clean_restart'])}"
                       f" / {f(pc['expected_after_kill'])} | | | {'ok' if pc['ok'] else 'MISMATCH'} | |")
    out.append("")
    out.append("## Lateness (delivered-at minus requested ready time)")
    out.append("")
    out.append("| server | scenario | class | messages | p50 ms | p99 ms | max ms |")
    out.append("|---|---|---|---|---|---|---|")
    for r in results:
        for name in ("steady", "drain-kill"):
            q = r["scenarios"].get(name)
            if not q:
                continue
            for cls in ("immediate", "delayed"):
                l = q["deliver"][f"lateness_{cls}"]
                out.append(f"| {r['engine']} | {name} | {cls} | {f(l['count'])} | "
                           f"{f(l['p50_ms'], 1)} | {f(l['p99_ms'], 1)} | {f(l['max_ms'], 1)} |")
    out.append("")
    violations = [(r["engine"], k, v) for r in results for k, q in r["scenarios"].items()
                  for v in q["violations"]]
    out.append("## Violations")
    out.append("")
    if violations:
        for e, k, v in violations:
            out.append(f"- {e} {k}: {v}")
    else:
        out.append("None (no early delivery, nothing acknowledged and lost).")
    out.append("")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", required=True)
    p.add_argument("--bench", required=True)
    p.add_argument("--denokv")
    p.add_argument("--out", required=True)
    p.add_argument("--engines", default="sqlite,redb,memory")
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--memory-messages", type=int, default=100_000)
    p.add_argument("--denokv-messages", type=int, default=100_000)
    p.add_argument("--single", type=int, default=2000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--sample", type=int, default=3000)
    p.add_argument("--listeners", type=int, default=8)
    p.add_argument("--kill-after", type=float, default=2.0)
    p.add_argument("--drain", type=int, default=20_000)
    p.add_argument("--drain-kill-after", type=float, default=8.0)
    p.add_argument("--drain-delay-mix", default="0:80,1000:10,10000:10")
    p.add_argument("--steady", type=int, default=5000)
    p.add_argument("--steady-rate", type=int, default=250)
    p.add_argument("--payload", type=int, default=100)
    p.add_argument("--delay-mix", default="0:80,1000:10,60000:10")
    p.add_argument("--scratch", default=None, help="folder for the databases (default: a temp dir)")
    args = p.parse_args()

    data_dir = tempfile.mkdtemp(prefix="kv-queue-", dir=args.scratch)
    info = machine_info(data_dir)
    load0 = os.getloadavg()
    results = []
    try:
        for engine in args.engines.split(","):
            print(f"== {engine}", file=sys.stderr)
            results.append(run_engine(args, engine, data_dir))
            for name in os.listdir(data_dir):
                if not name.endswith(".log"):
                    os.unlink(os.path.join(data_dir, name))
        if args.denokv:
            print("== denokv", file=sys.stderr)
            results.append(run_denokv(args, data_dir))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    load1 = os.getloadavg()
    load = (" ".join(f"{x:.1f}" for x in load0), " ".join(f"{x:.1f}" for x in load1))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, f"queue-{stamp}")
    with open(base + ".json", "w") as fh:
        json.dump({"machine": info, "load": load, "args": vars(args), "results": results}, fh,
                  indent=1)
    md = render(info, results, args, load)
    with open(base + ".md", "w") as fh:
        fh.write(md)
    print(md)
    print(f"wrote {base}.md and .json", file=sys.stderr)


if __name__ == "__main__":
    main()
