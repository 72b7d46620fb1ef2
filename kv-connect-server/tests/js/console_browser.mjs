// The web console in a real browser (../console.rs): Debian's Chromium driven by playwright-core
// (both installed by scripts/install-browser.sh), against a server started with --console and
// seeded by a real Deno client (console_seed.mjs). Concurrent writes come from the @deno/kv npm
// client, a second real client.
//
// Usage: node console_browser.mjs <url>
// Environment: DENO_KV_ACCESS_TOKEN (the admin token), PLAYWRIGHT_CORE (package folder),
// CHROMIUM (binary), DENO_KV_NPM_ENTRY (@deno/kv's ESM entry), CONSOLE_ARTIFACTS (folder for
// the screenshots).
// Prints one JSON line per passed step; exits 1 on the first failure (after a failure
// screenshot) or if the page logged an error (a CSP violation included).

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const [base] = process.argv.slice(2);
const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const token = env("DENO_KV_ACCESS_TOKEN");
const artifacts = env("CONSOLE_ARTIFACTS");
fs.mkdirSync(artifacts, { recursive: true });

const { chromium } = createRequire(import.meta.url)(env("PLAYWRIGHT_CORE"));
const npm = await import(pathToFileURL(env("DENO_KV_NPM_ENTRY")).href);
const kv = await npm.openKv(base, { accessToken: token });

const P = "console-demo";
const log = (step, detail = {}) => console.log(JSON.stringify({ step, ...detail }));
function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "kv-console-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: env("CHROMIUM"),
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
  viewport: { width: 1280, height: 900 },
});
const page = context.pages()[0] ?? (await context.newPage());
page.setDefaultTimeout(15_000);
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(`pageerror: ${e.message}`));
// The browser logs every 4xx answer as a resource error; the refused sign-in (401) and the
// conflict (409) are expected, anything else is a failure.
const EXPECTED = /^Failed to load resource: the server responded with a status of (401|409) /;
page.on("console", (m) => {
  if (m.type() === "error" && !EXPECTED.test(m.text())) pageErrors.push(`console.error: ${m.text()}`);
});

const shot = async (name) => {
  await page.screenshot({ path: path.join(artifacts, `${name}.png`) });
  log("screenshot", { name });
};
const rows = () => page.locator("#entries tbody tr");
const text = (selector) => page.locator(selector).innerText();

// Opens the first listed row whose text has `label` and waits until the entry panel shows that
// row's entry (its versionstamp): the panel may still show the previously opened entry.
async function openRow(label) {
  const row = page.locator("#entries tbody tr", { hasText: label }).first();
  const versionstamp = (await row.locator("td").last().innerText()).trim();
  await row.click();
  await page
    .locator("#entry:not([hidden]) #entry-meta dd[data-field=versionstamp]", { hasText: versionstamp })
    .waitFor();
}

let failed = false;
try {
  // Sign in: the token goes into a password field, then into sessionStorage only.
  await page.goto(`${base}/console`);
  await page.waitForSelector("#sign-in-form");
  await shot("01-sign-in");
  await page.fill("#token", "wrong-token");
  await page.click("#sign-in-form button[type=submit]");
  await page.waitForSelector("#sign-in-error:has-text('refused')");
  await page.fill("#token", token);
  await page.click("#sign-in-form button[type=submit]");
  await page.waitForSelector("#browse:not([hidden])");
  check(!page.url().includes(token), "the token is not in the URL");
  check((await page.evaluate(() => document.cookie)) === "", "no cookies");
  check((await page.evaluate(() => sessionStorage.getItem("kv-console-token"))) === token, "token in sessionStorage");
  log("signed in", { url: page.url() });

  // Browse the prefix ["console-demo"] written by Deno, typed parts, two pages.
  await page.click("#add-part");
  const part = page.locator("#prefix-parts .part-row").first();
  await part.locator("select").selectOption("string");
  await part.locator("input").fill(P);
  await page.click("#list-button");
  await page.waitForFunction(() => document.querySelectorAll("#entries tbody tr").length === 25);
  check(await page.isVisible("#next-page"), "a next page is offered");
  await shot("02-browse");
  await page.click("#next-page");
  await page.waitForFunction(() => document.querySelectorAll("#entries tbody tr").length === 35);
  check(!(await page.isVisible("#next-page")), "no page after the last");
  const typed = rows().filter({ hasText: "2026n" }).first();
  const types = await typed.locator(".part .t").allInnerTexts();
  check(JSON.stringify(types) === JSON.stringify(["string", "bigint", "boolean"]), `typed parts shown: ${types}`);
  const avatar = await rows().filter({ hasText: '"avatar"' }).first().innerText();
  check(avatar.includes("bytes 0x89504e47"), `raw bytes shown as hex: ${avatar}`);
  log("browsed", { rows: await rows().count(), types });

  // Open a nested value written by Deno: a tree with objects, a Date, a Map and a BigInt.
  await openRow('"alice"');
  await page.waitForSelector("#entry-tree .leaf:has-text('Lisbon')");
  const nested = page.locator("#entry-tree details[data-type=object] details[data-type=object] details[data-type=object]");
  check((await nested.count()) >= 1, "address.geo is a nested object node");
  const tree = await text("#entry-tree");
  for (const needle of ["Lisbon", "2024-05-01T10:00:00.000Z", "42", "dark", "admin"]) {
    check(tree.includes(needle), `the tree shows ${needle}`);
  }
  check((await page.locator("#entry-tree [data-type=map]").count()) === 1, "the Map is a map node");
  check((await page.locator("#entry-tree [data-type=date]").count()) === 1, "the Date is a date node");
  check((await page.locator("#entry-tree [data-type=bigint]").count()) === 1, "the BigInt is a bigint node");
  const openedVs = await text("#entry-meta dd[data-field=versionstamp]");
  await page.locator("#entry").scrollIntoViewIfNeeded();
  await shot("03-value-tree");
  log("opened", { versionstamp: openedVs });

  // Edit with a conflict: another client writes between open and save; nothing is overwritten.
  const edited = JSON.parse(await page.inputValue("#entry-value"));
  edited.name = "Alice Silva";
  await page.fill("#entry-value", JSON.stringify(edited, null, 2));
  const other = await kv.set([P, "users", "alice"], { name: "Alice (changed by another client)", tags: ["admin"] });
  check(other.ok, "the concurrent write committed");
  await page.click("#save-entry");
  await page.waitForSelector("#entry-message.conflict");
  const conflict = await text("#entry-message");
  check(conflict.includes("Conflict") && conflict.includes("Nothing was written"), `conflict shown: ${conflict}`);
  const kept = await kv.get([P, "users", "alice"]);
  check(kept.value.name === "Alice (changed by another client)", "the concurrent write was not overwritten");
  check(kept.versionstamp === other.versionstamp, "the stored versionstamp is the other client's");
  await page.locator("#entry-message").scrollIntoViewIfNeeded();
  await shot("04-conflict");
  log("conflict", { message: conflict });

  // Reload, edit again: now it saves.
  await page.click("#reload-entry");
  await page.waitForSelector("#entry-tree .leaf:has-text('changed by another client')");
  const fresh = JSON.parse(await page.inputValue("#entry-value"));
  fresh.name = "Alice Silva";
  await page.fill("#entry-value", JSON.stringify(fresh));
  await page.click("#save-entry");
  await page.waitForSelector("#entry-message.saved");
  const saved = await kv.get([P, "users", "alice"]);
  check(saved.value.name === "Alice Silva" && saved.versionstamp !== other.versionstamp, "the edit was saved");
  log("saved", { versionstamp: saved.versionstamp });

  // Create an entry under typed parts, then delete it.
  await page.click("#new-entry");
  const keyRows = page.locator("#entry-key-editor .part-row");
  await keyRows.last().locator("select").selectOption("bigint");
  await keyRows.last().locator("input").fill("-5");
  await page.fill("#entry-value", JSON.stringify({ created: { "$date": "2026-01-02T03:04:05.000Z" } }));
  await page.click("#save-entry");
  await page.waitForSelector("#entry-message.saved");
  const created = await kv.get([P, -5n]);
  check(created.value && created.value.created instanceof Date, "the new entry was created with a Date");
  await page.click("#delete-entry");
  await page.waitForSelector("#entry-message.saved:has-text('Deleted')");
  check((await kv.get([P, -5n])).versionstamp === null, "the entry was deleted");
  log("created and deleted", { versionstamp: created.versionstamp });

  // A new key's parts never outlive the entry they were typed for: type one, open another
  // entry instead, delete that and save it again: the save re-creates the shown entry and
  // writes nothing under the abandoned new key.
  await page.click("#new-entry");
  await page.locator("#entry-key-editor .part-row").last().locator("input").fill("ghost");
  await openRow('"bob"');
  check(!(await page.isVisible("#entry-key-editor")), "no key editor for an existing entry");
  await page.click("#delete-entry");
  await page.waitForSelector("#entry-message.saved:has-text('Deleted')");
  check((await kv.get([P, "users", "bob"])).versionstamp === null, "bob was deleted");
  await page.click("#save-entry");
  await page.waitForSelector("#entry-message.saved:has-text('Saved')");
  const bob = await kv.get([P, "users", "bob"]);
  check(bob.value && bob.value.name === "Bob", "saving after the delete re-created the shown entry");
  check((await kv.get([P, "ghost"])).versionstamp === null, "nothing was written under the abandoned new key");
  log("new key parts dropped", { versionstamp: bob.versionstamp });

  // Watch a key: a write by another client arrives live.
  await openRow('"counter"');
  check((await text("#entry-meta dd[data-field=encoding]")) === "u64", "the counter is a KvU64");
  await page.click("#watch-entry");
  await page.waitForSelector("#watch-log li");
  const bumped = await kv.set([P, "counter"], new npm.KvU64(8n));
  const li = page.locator(`#watch-log li[data-versionstamp="${bumped.versionstamp}"]`);
  await li.waitFor();
  check((await li.innerText()).includes('"$u64":"8"'), "the update shows the new value");
  check((await text("#watch-state")) === "watching", "still watching");
  await page.locator("#watch-panel").scrollIntoViewIfNeeded();
  await shot("05-watch");
  await page.click("#watch-entry");
  log("watched", { versionstamp: bumped.versionstamp });

  // Status: health and queue counts from the database's counters (one delayed message,
  // enqueued by @deno/kv, waits; nothing dead-lettered).
  await kv.enqueue({ job: "nightly-report" }, { delay: 3_600_000 });
  await page.click("button[data-tab=status]");
  await page.waitForSelector("#queues dd[data-field=waiting]");
  check((await text("#queues dd[data-field=waiting]")) === "1", "one waiting message");
  check((await text("#queues dd[data-field=dead_lettered]")) === "0", "no dead letters");
  check((await text("#health dd[data-field=status]")) === "ok", "healthy");
  // Backup: recovery points of the continuous backup (segments ship about once a second, so
  // ask again until the seeded writes are there).
  let points = 0;
  for (let attempt = 0; attempt < 30 && points < 2; attempt++) {
    if (attempt > 0) await page.waitForTimeout(500);
    await page.click("#load-backup");
    await page.waitForSelector("#backup dl, #backup .error");
    points = await page.locator("#backup .points li").count();
  }
  check(points >= 2, `recovery points listed (${points})`);
  check((await text("#backup dd[data-field=initial_snapshot_done]")) === "true", "the backup runs");
  await shot("06-status");
  log("status", { recovery_points: points });

  // Phone width: the page fits without sideways scrolling.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.click("button[data-tab=browse]");
  await page.click("#list-button");
  await page.waitForFunction(() => document.querySelectorAll("#entries tbody tr").length === 25);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `no sideways scrolling at phone width (${overflow}px)`);
  await shot("07-phone-browse");
  await page.click("#next-page");
  await page.waitForFunction(() => document.querySelectorAll("#entries tbody tr").length === 35);
  await openRow('"alice"');
  await page.locator("#entry").scrollIntoViewIfNeeded();
  const overflow2 = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow2 <= 1, `no sideways scrolling for an entry at phone width (${overflow2}px)`);
  await shot("08-phone-entry");
  log("phone width");

  // Sign out forgets the token.
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.click("#sign-out");
  await page.waitForSelector("#sign-in:not([hidden])");
  check((await page.evaluate(() => sessionStorage.getItem("kv-console-token"))) === null, "signed out");
  log("signed out");

  check(pageErrors.length === 0, `no errors in the page: ${pageErrors.join("; ")}`);
} catch (err) {
  failed = true;
  console.error(`console browser test failed: ${err.stack || err}`);
  if (pageErrors.length) console.error(`page errors: ${pageErrors.join("\n")}`);
  try {
    await page.screenshot({ path: path.join(artifacts, "failure.png"), fullPage: true });
    console.error(`failure screenshot: ${path.join(artifacts, "failure.png")}`);
  } catch {}
} finally {
  await context.close();
  kv.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
