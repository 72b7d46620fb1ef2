#!/usr/bin/env python3
"""Open time of a store holding 1M queue messages, two server builds interleaved (issue 17).

Fills one store per engine with 1,000,000 immediate messages (kv-bench --workload queue), then
starts each build on it in turn, three rounds, and prints the seconds from spawn until the
metadata exchange answers. Usage: queue_open_ab.py OLD_SERVER NEW_SERVER KV_BENCH SCRATCH_DIR
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scale
TOKEN = scale.TOKEN
old, new, bench, scratch = sys.argv[1:5]
d = tempfile.mkdtemp(dir=scratch)
res = {}
for engine in ["sqlite", "redb"]:
    path = os.path.join(d, f"ab.{scale.ext_of(engine)}")
    mk = lambda b: scale.Server("ab", lambda port: [b, "--engine", engine, "--path", path, "--access-token", TOKEN, "--addr", f"127.0.0.1:{port}"], d)
    s = mk(new); s.start()
    subprocess.run([bench, "--url", s.url, "--access-token", TOKEN, "--workload", "queue", "--queue-phase", "enqueue", "--messages", "1000000", "--clients", "4", "--enqueue-batch", "100", "--delay-mix", "0:1"], capture_output=True, check=True)
    s.stop()
    for rnd in range(3):
        for name, b in [("main", old), ("new", new)]:
            s = mk(b)
            t = s.start()
            s.stop()
            res.setdefault(f"{engine}-{name}", []).append(round(t, 3))
    os.unlink(path)
shutil.rmtree(d, ignore_errors=True)
print(json.dumps(res), "load average", os.getloadavg())
