// KV console: a plain JavaScript module, no build step. Talks to the JSON API under
// /console/api/ with the admin token as an Authorization header; the token lives in this tab's
// sessionStorage only and never goes into a URL. All data is put on the page as text
// (textContent), never as HTML.

const TOKEN_KEY = "kv-console-token";
const DATABASE_KEY = "kv-console-database";
const PART_TYPES = ["string", "number", "bigint", "boolean", "bytes"];

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c != null) node.append(c);
  return node;
}

// ---- API ----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.error ? body.error : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

// The database picked on a server with many databases (`null` on a single-database server).
const databases = { many: false, current: null };

function apiUrl(path) {
  const url = `/console/api/${path}`;
  if (path === "databases" || !databases.many || !databases.current) return url;
  return `${url}?database=${encodeURIComponent(databases.current)}`;
}

async function api(path, body, signal) {
  const init = {
    method: body === undefined ? "GET" : "POST",
    headers: { authorization: `Bearer ${token()}` },
    credentials: "omit",
    cache: "no-store",
    signal,
  };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(apiUrl(path), init);
  if (path === "watch" && res.ok) return res;
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = { error: `HTTP ${res.status} (no JSON answer)` };
  }
  if (res.status === 401) {
    signOut("Your token was refused; sign in again.");
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

// ---- Keys ---------------------------------------------------------------------------------

function partText(part) {
  switch (part.type) {
    case "string": return JSON.stringify(part.value);
    case "bigint": return `${part.value}n`;
    case "bytes": return `0x${part.value}`;
    default: return String(part.value);
  }
}

function keyView(key, keyHex) {
  const box = el("span", { class: "key" });
  if (!Array.isArray(key)) {
    box.append(el("span", { class: "part" }, el("span", { class: "t", text: "raw" }), el("span", { class: "v", text: keyHex })));
    return box;
  }
  for (const part of key) {
    box.append(el("span", { class: "part", title: `${part.type}` },
      el("span", { class: "t", text: part.type }),
      el("span", { class: "v", text: partText(part) })));
  }
  return box;
}

function partRow(container, part = { type: "string", value: "" }) {
  const select = el("select", { "aria-label": "Part type" });
  for (const t of PART_TYPES) {
    const o = el("option", { value: t, text: t });
    if (t === part.type) o.selected = true;
    select.append(o);
  }
  const input = el("input", { "aria-label": "Part value", placeholder: "value" });
  input.value = part.type === "string" ? part.value : String(part.value ?? "");
  const remove = el("button", { type: "button", "aria-label": "Remove part", text: "×" });
  const row = el("div", { class: "part-row" }, select, input, remove);
  remove.addEventListener("click", () => row.remove());
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") container.dispatchEvent(new CustomEvent("submit-parts"));
  });
  container.append(row);
  return row;
}

function readParts(container) {
  const parts = [];
  for (const row of container.querySelectorAll(".part-row")) {
    const type = row.querySelector("select").value;
    const raw = row.querySelector("input").value;
    let value = raw;
    if (type === "number") {
      const t = raw.trim();
      const n = Number(t);
      if (["NaN", "Infinity", "-Infinity", "-0"].includes(t)) value = t;
      else if (t !== "" && Number.isFinite(n)) value = n;
      else value = raw; // refused by the server with a clear message
    } else if (type === "boolean") {
      value = raw.trim() === "true" ? true : raw.trim() === "false" ? false : raw;
    }
    parts.push({ type, value });
  }
  return parts;
}

function setParts(container, parts) {
  container.replaceChildren();
  for (const p of parts) partRow(container, p);
}

// ---- Value trees --------------------------------------------------------------------------

function leafText(node) {
  if (node === null || typeof node !== "object") return JSON.stringify(node);
  switch (node.type) {
    case "string": return JSON.stringify(node.value);
    case "ref": return `→ #${node.id}`;
    case "bytes": case "arraybuffer": return `0x${node.hex ?? ""}`;
    case "undecodable": return `${node.reason ?? "cannot decode"} (0x${node.hex ?? ""})`;
    case "null": case "undefined": case "hole": return node.type;
    default:
      if ("value" in node) return typeof node.value === "string" ? node.value : JSON.stringify(node.value);
      if ("hex" in node) return `0x${node.hex}`;
      return "";
  }
}

function children(node) {
  if (!node || typeof node !== "object") return null;
  if (Array.isArray(node.entries)) {
    return node.entries.map((pair, i) => Array.isArray(pair) ? [pair[0], pair[1]] : [i, pair]);
  }
  for (const field of ["items", "elements", "values", "properties"]) {
    if (Array.isArray(node[field])) return node[field].map((v, i) => Array.isArray(v) && v.length === 2 && node.type !== "array" && node.type !== "set" ? [v[0], v[1]] : [i, v]);
  }
  return null;
}

function keyLabel(k) {
  if (typeof k === "string") return k;
  if (typeof k === "number") return String(k);
  if (k && typeof k === "object") return leafText(k);
  return String(k);
}

function renderTree(node, label, depth = 0) {
  const kids = children(node);
  const type = node && typeof node === "object" ? node.type ?? "" : typeof node;
  const head = [];
  if (label !== undefined) head.push(el("span", { class: "k", text: `${keyLabel(label)}:` }));
  head.push(el("span", { class: "ty", text: node && node.id !== undefined && type !== "ref" ? `${type} #${node.id}` : type }));
  if (kids) {
    const details = el("details", { "data-type": type });
    if (depth < 3) details.open = true;
    details.append(el("summary", {}, ...head, el("span", { class: "muted", text: ` ${kids.length} ${kids.length === 1 ? "entry" : "entries"}` })));
    for (const [k, v] of kids) details.append(renderTree(v, k, depth + 1));
    return details;
  }
  const cls = type === "undecodable" ? "bad" : type === "string" ? "s" : "";
  return el("div", { class: "leaf", "data-type": type }, ...head, el("span", { class: cls, text: leafText(node) }));
}

// ---- Browse -------------------------------------------------------------------------------

const browse = { prefix: [], cursor: null, seq: 0 };

// Lists the first page of the prefix in the editor (fresh) or the next page. Only the latest
// listing shows its answer: a slower earlier one (e.g. the listing after sign-in) is dropped.
async function listEntries(fresh) {
  const seq = ++browse.seq;
  $("list-error").textContent = "";
  if (fresh) {
    browse.prefix = readParts($("prefix-parts"));
    browse.cursor = null;
  }
  try {
    const body = { prefix: browse.prefix, limit: 25 };
    if (!fresh && browse.cursor) body.cursor = browse.cursor;
    const page = await api("list", body);
    if (seq !== browse.seq) return;
    const tbody = $("entries").tBodies[0];
    if (fresh) tbody.replaceChildren();
    for (const e of page.entries) {
      const tr = el("tr", { tabindex: "0", "data-key-hex": e.key_hex },
        el("td", {}, keyView(e.key, e.key_hex)),
        el("td", { class: "summary", text: `${e.summary}` }),
        el("td", { class: "mono hide-narrow", text: e.versionstamp }));
      const open = () => openEntry(e.key);
      tr.addEventListener("click", open);
      tr.addEventListener("keydown", (ev) => { if (ev.key === "Enter") open(); });
      tbody.append(tr);
    }
    browse.cursor = page.cursor;
    $("next-page").hidden = !page.cursor;
    $("list-empty").hidden = tbody.rows.length > 0;
  } catch (err) {
    if (seq === browse.seq) $("list-error").textContent = err.message;
  }
}

// ---- Entry --------------------------------------------------------------------------------

// `seq` numbers the openings: only the latest one fills the panel.
const entry = { key: null, versionstamp: null, isNew: false, watch: null, seq: 0 };

function message(text, kind = "") {
  const m = $("entry-message");
  m.textContent = text;
  m.className = kind;
}

function showEntry(data) {
  leaveNewEntry();
  entry.key = data.key;
  entry.versionstamp = data.versionstamp;
  $("entry-title").textContent = "Entry";
  $("entry-key").replaceChildren(keyView(data.key, data.key_hex));
  const meta = $("entry-meta");
  meta.replaceChildren();
  for (const [k, v] of [["versionstamp", data.versionstamp], ["encoding", data.encoding], ["size", `${data.size} bytes`]]) {
    meta.append(el("dt", { text: k }), el("dd", { class: "mono", "data-field": k, text: v }));
  }
  $("entry-tree").replaceChildren(renderTree(data.tree));
  $("entry-value").value = JSON.stringify(data.notation, null, 2);
  $("delete-entry").disabled = false;
  $("watch-entry").disabled = false;
}

// Leaves "new entry" mode: the key editor is hidden and emptied, so its parts can never be
// saved while another entry is shown.
function leaveNewEntry() {
  entry.isNew = false;
  const editor = $("entry-key-editor");
  editor.hidden = true;
  editor.replaceChildren();
}

async function openEntry(key) {
  const seq = ++entry.seq;
  stopWatch();
  leaveNewEntry();
  // The panel shows this key from now on, even while it loads or if it cannot be read.
  entry.key = key;
  entry.versionstamp = null;
  $("entry-title").textContent = "Entry";
  $("entry-key").replaceChildren(keyView(key, ""));
  $("entry-meta").replaceChildren();
  $("entry-tree").replaceChildren();
  $("watch-panel").hidden = true;
  $("entry").hidden = false;
  message("");
  try {
    const data = await api("get", { key });
    if (seq === entry.seq) showEntry(data);
  } catch (err) {
    if (seq === entry.seq) message(err.message, "failed");
  }
  $("entry").scrollIntoView({ block: "start" });
}

function newEntry() {
  entry.seq++;
  stopWatch();
  $("watch-panel").hidden = true;
  entry.key = null;
  entry.versionstamp = null;
  entry.isNew = true;
  $("entry").hidden = false;
  $("entry-title").textContent = "New entry";
  const editor = $("entry-key-editor");
  editor.hidden = false;
  setParts(editor, browse.prefix.length ? [...browse.prefix, { type: "string", value: "" }] : [{ type: "string", value: "" }]);
  $("entry-key").replaceChildren();
  $("entry-meta").replaceChildren();
  $("entry-tree").replaceChildren(el("p", { class: "muted", text: "Not saved yet." }));
  $("entry-value").value = "{}";
  $("delete-entry").disabled = true;
  $("watch-entry").disabled = true;
  message("");
}

async function saveEntry() {
  let value;
  try {
    value = JSON.parse($("entry-value").value);
  } catch (err) {
    message(`The value is not valid JSON: ${err.message}`, "failed");
    return;
  }
  const key = entry.isNew ? readParts($("entry-key-editor")) : entry.key;
  if (!key) return;
  try {
    const out = await api("set", { key, value, versionstamp: entry.versionstamp });
    message(`Saved (versionstamp ${out.versionstamp}).`, "saved");
    const data = await api("get", { key });
    showEntry(data);
    message(`Saved (versionstamp ${out.versionstamp}).`, "saved");
  } catch (err) {
    if (err.status === 409) {
      message(`${err.message} Reload to see the current value; your edit is still in the box.`, "conflict");
    } else {
      message(err.message, "failed");
    }
  }
}

async function deleteEntry() {
  if (entry.isNew || !entry.key) return;
  try {
    await api("delete", { key: entry.key, versionstamp: entry.versionstamp });
    message("Deleted. Save writes it again.", "saved");
    // Still this key: saving re-creates it (only if nobody has written it meanwhile).
    entry.versionstamp = null;
    $("delete-entry").disabled = true;
    $("watch-entry").disabled = false;
  } catch (err) {
    message(err.message, err.status === 409 ? "conflict" : "failed");
  }
}

// ---- Watch --------------------------------------------------------------------------------

function stopWatch() {
  if (entry.watch) entry.watch.abort();
  entry.watch = null;
  $("watch-entry").textContent = "Watch";
  $("watch-state").textContent = "stopped";
}

async function startWatch() {
  if (!entry.key) return;
  stopWatch();
  const controller = new AbortController();
  entry.watch = controller;
  $("watch-entry").textContent = "Stop watching";
  $("watch-panel").hidden = false;
  $("watch-log").replaceChildren();
  $("watch-state").textContent = "connecting";
  try {
    const res = await api("watch", { key: entry.key }, controller.signal);
    $("watch-state").textContent = "watching";
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
        if (data) watchEvent(JSON.parse(data));
      }
    }
    if (entry.watch === controller) $("watch-state").textContent = "ended";
  } catch (err) {
    if (err.name !== "AbortError") $("watch-state").textContent = `failed: ${err.message}`;
  }
}

function watchEvent(ev) {
  const time = new Date().toLocaleTimeString();
  const e = ev.entry;
  const text = e ? `${time} — versionstamp ${e.versionstamp}: ${JSON.stringify(e.notation)}` : `${time} — deleted`;
  const li = el("li", { "data-versionstamp": e ? e.versionstamp : "" , text });
  $("watch-log").prepend(li);
}

// ---- Status -------------------------------------------------------------------------------

function fillMeta(dl, pairs) {
  dl.replaceChildren();
  for (const [k, v] of pairs) dl.append(el("dt", { text: k }), el("dd", { "data-field": k, text: String(v) }));
}

async function loadStatus() {
  try {
    const s = await api("status");
    const pairs = [["status", s.ok ? "ok" : "failing"]];
    if (s.database) pairs.push(["database", s.database]);
    pairs.push(["database id", s.database_id]);
    if (s.replica) pairs.push(["replica of", s.replica.source]);
    for (const [k, v] of Object.entries(s.health || {})) pairs.push([k, v]);
    fillMeta($("health"), pairs);
    if (s.queues && !s.queues.error) {
      fillMeta($("queues"), Object.entries(s.queues));
    } else {
      fillMeta($("queues"), [["queues", s.queues ? s.queues.error : "not available for this database"]]);
    }
    $("backup").replaceChildren(el("p", { class: "muted", text: s.backup ? "Continuous backup is on." : "No backup configured (start the server with --backup-to)." }));
    $("load-backup").hidden = !s.backup;
  } catch (err) {
    fillMeta($("health"), [["error", err.message]]);
  }
}

async function loadBackup() {
  const box = $("backup");
  box.replaceChildren(el("p", { class: "muted", text: "Reading the backup…" }));
  try {
    const b = await api("backup");
    box.replaceChildren();
    if (!b.enabled) { box.append(el("p", { text: "No backup configured." })); return; }
    if (b.error) { box.append(el("p", { class: "error", text: b.error })); return; }
    const info = b.backup;
    const dl = el("dl", { class: "meta" });
    fillMeta(dl, Object.entries(info).filter(([, v]) => typeof v !== "object"));
    box.append(dl);
    const points = el("ul", { class: "points" });
    for (const p of info.recovery_points || []) points.append(el("li", { class: "mono", text: `${p.time}  ${p.versionstamp}` }));
    box.append(el("h3", { text: "Newest recovery points" }), points);
  } catch (err) {
    box.replaceChildren(el("p", { class: "error", text: err.message }));
  }
}

// ---- Shell --------------------------------------------------------------------------------

function closeEntry() {
  entry.seq++;
  stopWatch();
  leaveNewEntry();
  entry.key = null;
  entry.versionstamp = null;
  $("entry").hidden = true;
}

// Asks which databases the token may see and fills the picker (hidden on a single-database
// server); keeps the picked database across reloads of the tab if it is still there.
async function loadDatabases() {
  const d = await api("databases");
  databases.many = !!d.many;
  const picker = $("database");
  picker.replaceChildren();
  $("database-picker").hidden = !databases.many;
  if (!databases.many) {
    databases.current = null;
    return;
  }
  const names = (d.databases || []).map((db) => db.name);
  if (names.length === 0) {
    throw new ApiError(403, { error: "This token may not open any database of this server (it needs the admin scope)." });
  }
  for (const name of names) picker.append(el("option", { value: name, text: name }));
  const saved = sessionStorage.getItem(DATABASE_KEY);
  databases.current = names.includes(saved) ? saved : names[0];
  picker.value = databases.current;
}

function pickDatabase(name) {
  databases.current = name;
  sessionStorage.setItem(DATABASE_KEY, name);
  closeEntry();
  browse.seq++;
  browse.prefix = [];
  browse.cursor = null;
  $("entries").tBodies[0].replaceChildren();
  if (!$("status").hidden) loadStatus();
  else listEntries(true);
}

function showTab(name) {
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.tab === name);
  $("browse").hidden = name !== "browse";
  $("status").hidden = name !== "status";
  if (name === "status") loadStatus();
}

function signedIn() {
  $("sign-in").hidden = true;
  $("tabs").hidden = false;
  showTab("browse");
  listEntries(true);
}

function signOut(reason = "") {
  stopWatch();
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(DATABASE_KEY);
  databases.many = false;
  databases.current = null;
  $("database-picker").hidden = true;
  $("sign-in").hidden = false;
  $("tabs").hidden = true;
  $("browse").hidden = true;
  $("status").hidden = true;
  $("sign-in-error").textContent = reason;
}

async function signIn(ev) {
  ev.preventDefault();
  const value = $("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, value);
  $("token").value = "";
  try {
    await loadDatabases();
    await api("status");
    signedIn();
  } catch (err) {
    signOut(err.status === 401 ? "That token was refused." : err.message);
  }
}

function init() {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut());
  for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $("add-part").addEventListener("click", () => partRow($("prefix-parts")).querySelector("input").focus());
  $("prefix-parts").addEventListener("submit-parts", () => listEntries(true));
  $("list-button").addEventListener("click", () => listEntries(true));
  $("next-page").addEventListener("click", () => listEntries(false));
  $("new-entry").addEventListener("click", newEntry);
  $("close-entry").addEventListener("click", closeEntry);
  $("database").addEventListener("change", (ev) => pickDatabase(ev.target.value));
  $("save-entry").addEventListener("click", saveEntry);
  $("delete-entry").addEventListener("click", deleteEntry);
  $("reload-entry").addEventListener("click", () => entry.key && openEntry(entry.key));
  $("watch-entry").addEventListener("click", () => (entry.watch ? stopWatch() : startWatch()));
  $("load-backup").addEventListener("click", loadBackup);
  if (token()) {
    loadDatabases().then(() => api("status")).then(signedIn, () => {});
  }
}

init();
