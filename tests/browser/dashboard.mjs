// The dashboard as a kitchen manager uses it, in Debian's headless Chromium driven by
// playwright-core (no downloaded browser). Run by tests/e2e/dashboard.rs against a real
// `gkgw demo`:
//   node tests/browser/dashboard.mjs BASE_URL SCREENSHOT_DIR VIEWER_PW MANAGER_PW ADMIN_PW
// Prints one JSON line per step ({"step": …, "ok": true, …}) and "WAITING <what>" lines when
// it needs the harness to act (stop the gateway, start it again), reading "GO" on stdin.
// Exits non-zero on the first failed step.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { createInterface } from "node:readline";

const [base, shots, viewerPw, managerPw, adminPw] = process.argv.slice(2);
const passwords = { viewer: viewerPw, manager: managerPw, admin: adminPw };
async function login(page, role) {
  await page.goto(base + "/");
  await page.waitForURL(/\/login/);
  await page.fill('input[name="user"]', role);
  await page.fill('input[name="password"]', passwords[role]);
  await page.click('form button[type="submit"], form button');
  await page.waitForURL((u) => !u.pathname.startsWith("/login"));
}
mkdirSync(shots, { recursive: true });
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const step = (name, extra = {}) => console.log(JSON.stringify({ step: name, ok: true, ...extra }));
async function waitFor(what) {
  console.log("WAITING " + what);
  const { value } = await lines.next();
  if (value?.trim() !== "GO") throw new Error("harness said " + value);
}

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
let failed = false;
try {
  // 0. Every role signs in; a viewer sees the alarms without the buttons and is refused if
  // it posts anyway; the admin has the users page.
  for (const role of ["viewer", "admin"]) {
    const c = await browser.newContext();
    const p = await c.newPage();
    await login(p, role);
    const who = await p.locator("header .user").textContent();
    if (!who.includes(role)) throw new Error(`signed in as ${who}`);
    if (role === "viewer") {
      await p.goto(base + "/alarms");
      if (await p.locator('button:has-text("Acknowledge")').count()) throw new Error("a viewer sees Acknowledge");
      const id = await p.locator("article.acard code").first().textContent();
      const csrf = await p.locator('header input[name="csrf"]').inputValue();
      const status = await p.evaluate(async ([id, csrf]) => (await fetch(`/api/alarms/${id}/ack`, {
        method: "POST", headers: { "X-CSRF-Token": csrf, "Content-Type": "application/json" }, body: "{}",
      })).status, [id, csrf]);
      if (status !== 403) throw new Error("viewer ack answered " + status);
    } else {
      await p.goto(base + "/users");
      if ((await p.title()).length === 0) throw new Error("no users page");
    }
    await c.close();
  }
  step("roles");

  // The phone is set to another zone than the site's: times must still be the site's.
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 }, timezoneId: "America/Lima" });
  const page = await ctx.newPage();
  await login(page, "manager");
  const external = [];
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (u.host !== new URL(base).host) external.push(r.url());
  });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));

  // 1. Live values change without a reload.
  await page.goto(base + "/");
  const tile = page.locator('.tile[data-q="digester.pressure"] .value');
  const first = await tile.textContent();
  await page.waitForFunction(
    (t) => document.querySelector('.tile[data-q="digester.pressure"] .value').textContent !== t,
    first, { timeout: 20000 });
  step("live", { before: first, after: await tile.textContent() });

  // 2. Kiswahili and back.
  await page.click("header a.lang");
  await page.waitForSelector('html[lang="sw"]');
  const nav = await page.locator("nav").textContent();
  if (!nav.includes("Muhtasari") || !nav.includes("Kengele")) throw new Error("sw nav: " + nav);
  step("kiswahili", { nav: nav.replace(/\s+/g, " ").trim() });
  await page.click("header a.lang");
  await page.waitForSelector('html[lang="en"]');
  step("english");

  // 3. Acknowledge an alarm with a note.
  await page.goto(base + "/alarms");
  const card = page.locator("article.acard", { has: page.locator('button:has-text("Acknowledge")') }).first();
  const id = await card.locator("code").textContent();
  await card.locator('form[action$="/ack"] input[name="note"]').fill("seen by the manager");
  await card.locator('form[action$="/ack"] button').click();
  await page.waitForURL(/\/alarms$/);
  const after = page.locator("article.acard", { has: page.locator(`code:text-is("${id}")`) });
  const text = (await after.count()) ? await after.first().textContent() : "(gone: cleared and acknowledged)";
  if (text.includes("not acknowledged") && !text.includes("cleared")) throw new Error("still unacknowledged: " + text);
  step("acknowledged", { id });

  // 4. The logbook: a bad value is refused next to its field, the typing kept; a good one is saved.
  await page.goto(base + "/logbook?kind=waste_fed");
  await page.selectOption("#f-waste", "market");
  await page.fill("#f-kg", "lots");
  await page.fill("#f-note", "from the market");
  await page.click('form.logbook button[type="submit"]');
  await page.waitForSelector(".field.invalid #f-kg");
  const msg = await page.locator("#f-kg-error").textContent();
  if ((await page.inputValue("#f-note")) !== "from the market") throw new Error("the note was lost");
  step("logbook_refused", { message: msg });
  await page.fill("#f-kg", "85");
  await page.click('form.logbook button[type="submit"]');
  await page.waitForSelector('p.ok[role="status"]');
  const saved = await page.locator('p.ok[role="status"]').textContent();
  const entry = Number(saved.match(/\d+/)[0]);
  const row = await page.locator("table tbody tr").first().textContent();
  if (!row.includes("85 kg")) throw new Error("not in the list: " + row);
  step("logbook_saved", { entry });

  // 4b. The charts' time axis is in the site's zone, not the phone's (America/Lima here).
  await page.goto(base + "/digester");
  await page.waitForFunction(() => [...document.querySelectorAll("figure.chart")].every((f) => f.dataset.points || f.dataset.error), null, { timeout: 15000 });
  const [siteHour, phoneHour, offset] = await page.evaluate(() => [
    window.gkgwSiteDate(Date.now() / 1000).getHours(), new Date().getHours(), +document.body.dataset.utcOffset]);
  const want = Math.floor((((Date.now() / 1000 + offset) % 86400) + 86400) % 86400 / 3600);
  if (siteHour !== want || phoneHour === want) throw new Error(`chart hour ${siteHour}, site ${want}, phone ${phoneHour}`);
  step("site_time", { site: siteHour, phone: phoneHour });

  // 5. Screenshots of every page at 360 px and 1280 px.
  const pages = ["/", "/digester", "/gas", "/meters", "/alarms", "/logbook", "/system"];
  const meter = await page.goto(base + "/meters").then(() => page.locator("tbody tr a").first().getAttribute("href"));
  pages.push(meter);
  let n = 0;
  for (const width of [360, 1280]) {
    await page.setViewportSize({ width, height: width === 360 ? 800 : 900 });
    for (const p of pages) {
      await page.goto(base + p);
      if (await page.locator("figure.chart").count()) {
        await page.waitForFunction(() => [...document.querySelectorAll("figure.chart")].every((f) => f.dataset.points || f.dataset.error), null, { timeout: 15000 });
      }
      const wide = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
      if (wide) throw new Error(`${p} scrolls sideways at ${width} px`);
      const name = (p === "/" ? "overview" : p.slice(1).replace(/\//g, "-")) + `-${width}.png`;
      await page.screenshot({ path: `${shots}/${name}`, fullPage: true });
      n++;
    }
  }
  step("screenshots", { count: n });

  // 6. The connection-lost banner, and the recovery without a reload, keeping what was typed.
  await page.setViewportSize({ width: 360, height: 800 });
  await page.goto(base + "/logbook?kind=note");
  await page.fill("#f-text", "half typed");
  await page.evaluate(() => { window.__loaded = 1; });
  await waitFor("stop");
  await page.waitForSelector("#conn.lost:not([hidden])", { timeout: 20000 });
  step("lost", { banner: await page.locator("#conn").textContent() });
  await waitFor("start");
  await page.waitForSelector("#conn:not(.lost)", { timeout: 30000 });
  const kept = await page.inputValue("#f-text");
  const same = await page.evaluate(() => window.__loaded === 1);
  if (kept !== "half typed" || !same) throw new Error(`reloaded or lost the text: ${kept} ${same}`);
  step("recovered");

  if (external.length) throw new Error("requests to other hosts: " + external.join(", "));
  if (errors.length) throw new Error("script errors: " + errors.join("; "));
  step("clean");
} catch (e) {
  failed = true;
  console.log(JSON.stringify({ step: "failed", ok: false, error: String(e && e.stack || e) }));
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
