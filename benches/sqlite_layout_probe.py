#!/usr/bin/env python3
"""How the layout of the SQLite table decides the file size: N rows (about 100-byte keys,
value + 14 bytes of record header, random insertion order) in 500-row transactions, for several
page sizes and value sizes, in a WITHOUT ROWID table (our format) and in a rowid table with a
UNIQUE key index. Python's sqlite3 writes the same B-tree format as rusqlite's bundled SQLite.

    python3 benches/sqlite_layout_probe.py [N] [value sizes, e.g. 200,1000,2000,4000]
"""
import os
import random
import sqlite3
import sys
import tempfile
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
VALUES = [int(v) for v in (sys.argv[2] if len(sys.argv) > 2 else "200,1000,2000,4000").split(",")]
DIR = tempfile.mkdtemp(prefix="sqlite-layout-")

def run(name, ps, schema, vsize, order):
    p=os.path.join(DIR, f"{name}.db")
    for s in ("","-wal","-shm"):
        if os.path.exists(p+s): os.remove(p+s)
    c=sqlite3.connect(p); c.execute(f"PRAGMA page_size={ps}"); c.execute("PRAGMA journal_mode=WAL")
    c.execute(schema)
    keys=[b"\x01"+(b"user/%08d/"%i)+os.urandom(80) for i in range(N)]
    if order=="random": random.shuffle(keys)
    logical=0
    t=time.time()
    for i in range(0,N,500):
        c.executemany("INSERT INTO kv(k,v) VALUES(?,?)", [(k, os.urandom(vsize+14)) for k in keys[i:i+500]])
        c.commit()
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)"); c.close()
    logical=sum(len(k) for k in keys)+N*(vsize+14)
    sz=os.path.getsize(p)
    print(f"| {name} | {ps} | {vsize} | {sz/1e6:.1f} MB | {logical/1e6:.1f} MB | {sz/logical:.2f}x | {time.time()-t:.1f} s |", flush=True)
    os.remove(p)
print(f"{N} rows, random order\n")
print("| table | page size | value B | file | keys+values | ratio | fill time |")
print("|---|---|---|---|---|---|---|")
WR="CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID"
RI="CREATE TABLE kv (id INTEGER PRIMARY KEY, k BLOB NOT NULL UNIQUE, v BLOB NOT NULL)"
for v in VALUES:
  for order in ("random",):
    for ps in (4096,16384,32768,65536):
        run("worowid",ps,WR,v,order)
    run("rowid",4096,RI,v,order)
os.rmdir(DIR)
