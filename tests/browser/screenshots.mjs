// The committed screenshot set (docs/screenshots/): the sign-in page; every page at 360 px and
// 1280 px, signed in as the manager, in English; the overview and a refused logbook correction
// in Kiswahili; the users page as the admin.
//   node tests/browser/screenshots.mjs BASE_URL MANAGER_PASSWORD OUT_DIR [ADMIN_PASSWORD]
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [base, password, out, adminPassword] = process.argv.slice(2);
mkdirSync(out, { recursive: true });
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const ctx = await browser.newContext();
const page = await ctx.newPage();
await page.setViewportSize({ width: 360, height: 640 });
await page.goto(base + "/login");
await page.screenshot({ path: `${out}/login-360.png`, fullPage: true });
await page.fill('input[name="user"]', "manager");
await page.fill('input[name="password"]', password);
await page.click("form button");
await page.waitForURL((u) => !u.pathname.startsWith("/login"));
await page.goto(base + "/meters");
const meter = await page.locator("tbody tr a").first().getAttribute("href");
const pages = ["/", "/digester", "/gas", "/meters", meter, "/alarms", "/logbook", "/system"];
for (const width of [360, 1280]) {
  await page.setViewportSize({ width, height: width === 360 ? 780 : 900 });
  for (const p of pages) {
    await page.goto(base + p);
    if (await page.locator("figure.chart").count()) {
      await page.waitForFunction(() => [...document.querySelectorAll("figure.chart")].every((f) => f.dataset.points || f.dataset.error), null, { timeout: 20000 });
    }
    await page.waitForTimeout(1500);
    const name = (p === "/" ? "overview" : p.slice(1).replace(/\//g, "-").replace(/^meters-.*/, "meter")) + `-${width}.png`;
    await page.screenshot({ path: `${out}/${name}`, fullPage: true });
  }
}
await page.goto(base + "/lang/sw?next=/");
await page.setViewportSize({ width: 360, height: 780 });
await page.waitForTimeout(1500);
await page.screenshot({ path: `${out}/overview-sw-360.png`, fullPage: true });
// A correction refused: the entry's forms open, the message next to the field, in Kiswahili.
await page.goto(base + "/logbook?kind=waste_fed");
const change = page.locator("details.change").first();
await change.locator("summary").click();
await change.locator('input[name="kg"], input[name="count"], input[name="litres"], input[name="ph"], input[name="ratio"]').first().fill("-5");
await change.locator('form[action$="/revise"] button').click();
await page.waitForSelector("details.change[open] .field.invalid");
await page.screenshot({ path: `${out}/logbook-correction-sw-360.png`, fullPage: true });
await page.goto(base + "/lang/en?next=/");
if (adminPassword) {
  const admin = await (await browser.newContext()).newPage();
  await admin.goto(base + "/login");
  await admin.fill('input[name="user"]', "admin");
  await admin.fill('input[name="password"]', adminPassword);
  await admin.click("form button");
  await admin.waitForURL((u) => !u.pathname.startsWith("/login"));
  for (const width of [360, 1280]) {
    await admin.setViewportSize({ width, height: width === 360 ? 780 : 900 });
    await admin.goto(base + "/users");
    await admin.screenshot({ path: `${out}/users-${width}.png`, fullPage: true });
  }
}
await browser.close();
