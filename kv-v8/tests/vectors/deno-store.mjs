// Runs on Deno (`deno run -A --unstable-kv deno-store.mjs <mode> [input.json]`); prints JSON.
//
// mode "dump": stores every case through a real Deno KV (a local SQLite database) and prints
//   the bytes Deno wrote, read back from the database file: [{name, encoding, hex, tree}].
// mode "readback": input.json is [{name, hex}] of V8 bytes written by kv-v8; each is put into
//   the database file as a stored V8 value, read through Deno KV's `get`, and described:
//   [{name, tree}] or [{name, error}].
import { DatabaseSync } from "node:sqlite";
import { cases, describe } from "./cases.mjs";

const [mode, input] = Deno.args;
const dir = Deno.makeTempDirSync();
const path = `${dir}/kv.sqlite3`;
const out = [];
try {
  if (mode === "dump") {
    const kv = await Deno.openKv(path);
    const stored = [];
    for (const [i, [name, make, only]] of cases.entries()) {
      if (only && only !== "deno") continue;
      const value = make();
      await kv.set([i], value);
      stored.push({ i, name, tree: describe(value, "native") });
    }
    kv.close();
    const db = new DatabaseSync(path);
    const rows = db.prepare("SELECT v, v_encoding FROM kv ORDER BY k").all();
    db.close();
    if (rows.length !== stored.length) throw new Error(`stored ${stored.length}, read ${rows.length}`);
    rows.forEach((row, n) => {
      const hex = Array.from(row.v, (b) => b.toString(16).padStart(2, "0")).join("");
      // Deno KV stores a top-level Uint8Array raw (encoding 3) and a KvU64 as 8 bytes
      // (encoding 2); everything else through V8 (encoding 1).
      const tree = row.v_encoding === 3
        ? { type: "bytes", hex }
        : row.v_encoding === 2
        ? { type: "u64", value: new DataView(row.v.buffer, row.v.byteOffset, 8).getBigUint64(0, true).toString() }
        : stored[n].tree;
      out.push({ name: stored[n].name, encoding: row.v_encoding, hex, tree });
    });
  } else if (mode === "readback") {
    const items = JSON.parse(Deno.readTextFileSync(input));
    // Create the schema, then write the rows the way Deno KV stores a V8 value.
    (await Deno.openKv(path)).close();
    const db = new DatabaseSync(path);
    const insert = db.prepare(
      "INSERT INTO kv (k, v, v_encoding, version, seq, expiration_ms) VALUES (?, ?, 1, 1, 0, -1)",
    );
    items.forEach((item, i) => {
      insert.run(encodeNumberKey(i), Uint8Array.from(item.hex.match(/../g) ?? [], (h) => parseInt(h, 16)));
    });
    db.close();
    const kv = await Deno.openKv(path);
    for (const [i, item] of items.entries()) {
      try {
        const entry = await kv.get([i]);
        if (entry.versionstamp === null) throw new Error("not found");
        out.push({ name: item.name, tree: describe(entry.value, "native") });
      } catch (e) {
        out.push({ name: item.name, error: String(e) });
      }
    }
    kv.close();
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
} finally {
  Deno.removeSync(dir, { recursive: true });
}
console.log(JSON.stringify(out));

/** The Deno KV key encoding of the one-part key [n] (n a non-negative number). */
function encodeNumberKey(n) {
  const b = new Uint8Array(9);
  b[0] = 0x21;
  new DataView(b.buffer).setFloat64(1, n);
  b[1] ^= 0x80; // non-negative: flip the sign bit
  return b;
}
