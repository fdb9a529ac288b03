// The committed screenshot set (docs/screenshots/): every page at 360 px and 1280 px, signed in
// as the manager, in English and the overview in Kiswahili.
//   node tests/browser/screenshots.mjs BASE_URL MANAGER_PASSWORD OUT_DIR
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [base, password, out] = process.argv.slice(2);
mkdirSync(out, { recursive: true });
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const ctx = await browser.newContext();
const page = await ctx.newPage();
await page.goto(base + "/login");
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
await browser.close();
