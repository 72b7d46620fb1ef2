// Opens a KV Connect database (DENO_KV_ACCESS_TOKEN from the environment),
// does one read, and prints {"ok":true} or the error Deno shows, as JSON.
// Usage: deno run --unstable-kv --no-remote --no-npm --no-config --allow-net --allow-env \
//          deno_open_error.ts <database URL>

const url = Deno.args[0];
let result;
try {
  const kv = await Deno.openKv(url);
  await kv.get(["x"]);
  kv.close();
  result = { ok: true };
} catch (e) {
  const err = e as Error;
  result = { error: { name: err.name, message: err.message.split(new URL(url).origin).join("<URL>") } };
}
console.log(JSON.stringify(result));
Deno.exit(0);
