// The web console's database picker in a real browser (../console.rs): Debian's Chromium
// driven by playwright-core against a server with many databases (--data-dir --console) whose
// databases `alpha` and `beta` each hold one key (`only-in-alpha`, `only-in-beta`).
//
// Usage: node console_picker.mjs <url>
// Environment: DENO_KV_ACCESS_TOKEN (the access token), CONSOLE_BOUND_TOKEN (an admin token of
// database alpha only), PLAYWRIGHT_CORE, CHROMIUM, CONSOLE_ARTIFACTS (as console_browser.mjs).
// Prints one JSON line per passed step; exits 1 on the first failure or if the page logged an
// error.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";

const [base] = process.argv.slice(2);
const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const token = env("DENO_KV_ACCESS_TOKEN");
const bound = env("CONSOLE_BOUND_TOKEN");
const artifacts = env("CONSOLE_ARTIFACTS");
fs.mkdirSync(artifacts, { recursive: true });
const { chromium } = createRequire(import.meta.url)(env("PLAYWRIGHT_CORE"));

const log = (step, detail = {}) => console.log(JSON.stringify({ step, ...detail }));
function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "kv-console-picker-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: env("CHROMIUM"),
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  viewport: { width: 1280, height: 900 },
});
const page = context.pages()[0] ?? (await context.newPage());
page.setDefaultTimeout(15_000);
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(`pageerror: ${e.message}`));
page.on("console", (m) => {
  if (m.type() === "error") pageErrors.push(`console.error: ${m.text()}`);
});

const options = () => page.locator("#database option").allInnerTexts();
const rowsText = () => page.locator("#entries tbody").innerText();
async function signIn(secret) {
  await page.fill("#token", secret);
  await page.click("#sign-in-form button[type=submit]");
  await page.waitForSelector("#browse:not([hidden])");
}

let failed = false;
try {
  await page.goto(`${base}/console`);
  await page.waitForSelector("#sign-in-form");
  check(!(await page.isVisible("#database-picker")), "no picker before sign-in");

  // The access token sees every database; the first is open.
  await signIn(token);
  check(await page.isVisible("#database-picker"), "the picker is shown");
  check(JSON.stringify(await options()) === JSON.stringify(["alpha", "beta"]), `both databases: ${await options()}`);
  await page.waitForSelector("#entries tbody tr:has-text('only-in-alpha')");
  log("signed in", { databases: await options() });

  // Picking another database shows its data only.
  await page.selectOption("#database", "beta");
  await page.waitForSelector("#entries tbody tr:has-text('only-in-beta')");
  check(!(await rowsText()).includes("only-in-alpha"), "alpha's key is gone");
  await page.click("button[data-tab=status]");
  await page.waitForSelector("#health dd[data-field=database]");
  check((await page.locator("#health dd[data-field=database]").innerText()) === "beta", "status of beta");
  await page.screenshot({ path: path.join(artifacts, "09-picker.png") });
  log("picked beta");

  // An admin token of alpha sees alpha only.
  await page.click("#sign-out");
  await page.waitForSelector("#sign-in:not([hidden])");
  await signIn(bound);
  check(JSON.stringify(await options()) === JSON.stringify(["alpha"]), `only alpha: ${await options()}`);
  await page.waitForSelector("#entries tbody tr:has-text('only-in-alpha')");
  log("bound token", { databases: await options() });

  check(pageErrors.length === 0, `no errors in the page: ${pageErrors.join("; ")}`);
} catch (err) {
  failed = true;
  console.error(`console picker test failed: ${err.stack || err}`);
  if (pageErrors.length) console.error(`page errors: ${pageErrors.join("\n")}`);
  try {
    await page.screenshot({ path: path.join(artifacts, "picker-failure.png"), fullPage: true });
  } catch {}
} finally {
  await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
