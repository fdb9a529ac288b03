// Dashboard measurements for docs/PERFORMANCE.md (not a test): run by tests/perf/dashboard.sh.
//   node tests/browser/perf.mjs BASE_URL [TABS]
// Prints: bytes transferred for the first load of each page (empty cache), the overview's
// first contentful paint under a throttled "3G" profile (Chrome DevTools' Slow 3G: 400 ms
// RTT, 400 kbit/s down), the 7-day chart's /api/history fetch and draw, then keeps TABS
// overview pages open on live updates for 60 s (the harness samples the gateway's CPU/RSS).
import { chromium } from "playwright-core";

const [base, tabsArg, password] = process.argv.slice(2);
async function login(ctx, page) {
  await page.goto(base + "/login");
  await page.fill('input[name="user"]', "viewer");
  await page.fill('input[name="password"]', password);
  await page.click("form button");
  await page.waitForURL((u) => !u.pathname.startsWith("/login"));
}
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const pages = ["/", "/digester", "/gas", "/meters", "/alarms", "/logbook", "/system"];
for (const p of pages) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await login(ctx, page);
  const cdp = await ctx.newCDPSession(page);
  await cdp.send("Network.enable");
  // A first load: nothing cached.
  await cdp.send("Network.clearBrowserCache");
  await cdp.send("Network.setCacheDisabled", { cacheDisabled: true });
  let bytes = 0;
  cdp.on("Network.loadingFinished", (e) => { bytes += e.encodedDataLength; });
  await page.goto(base + p, { waitUntil: "load" });
  if (await page.locator("figure.chart").count()) {
    await page.waitForFunction(() => [...document.querySelectorAll("figure.chart")].every((f) => f.dataset.points || f.dataset.error), null, { timeout: 20000 });
  }
  await page.waitForTimeout(300);
  console.log(JSON.stringify({ page: p, first_load_bytes: bytes }));
  await ctx.close();
}
{
  const ctx = await browser.newContext({ viewport: { width: 360, height: 800 } });
  const page = await ctx.newPage();
  await login(ctx, page);
  const cdp = await ctx.newCDPSession(page);
  await cdp.send("Network.setCacheDisabled", { cacheDisabled: true });
  await cdp.send("Network.enable");
  await cdp.send("Network.emulateNetworkConditions", {
    offline: false, latency: 400, downloadThroughput: 400 * 1024 / 8, uploadThroughput: 400 * 1024 / 8,
  });
  const t0 = Date.now();
  await page.goto(base + "/", { waitUntil: "commit" });
  await page.waitForFunction(() => performance.getEntriesByName("first-contentful-paint").length > 0, null, { timeout: 60000 });
  const fcp = await page.evaluate(() => performance.getEntriesByName("first-contentful-paint")[0].startTime);
  await page.waitForLoadState("load");
  console.log(JSON.stringify({ throttled: "slow-3g", overview_first_contentful_paint_ms: Math.round(fcp), load_ms: Date.now() - t0 }));
  await ctx.close();
}
{
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await login(ctx, page);
  await page.goto(base + "/digester?span=7d");
  await page.waitForFunction(() => window.uPlot !== undefined, null, { timeout: 20000 });
  const t = await page.evaluate(async () => {
    const q = "digester.pressure", i = document.querySelector('figure.chart[data-q="digester.pressure"]').dataset.i;
    const from = Date.now() - 7 * 86400e3;
    const t0 = performance.now();
    const r = await fetch(`/api/history?quantity=${q}&instance=${i}&from=${from}&points=300`);
    const h = await r.json();
    const t1 = performance.now();
    const xs = h.points.map((p) => p.ms / 1000), ys = h.points.map((p) => p.mean ?? null);
    const el = document.createElement("div");
    document.body.appendChild(el);
    new uPlot({ width: 800, height: 200, series: [{}, { stroke: "#000" }] }, [xs, ys], el);
    const t2 = performance.now();
    return { points: xs.length, query_ms: Math.round(t1 - t0), draw_ms: Math.round(t2 - t1) };
  });
  console.log(JSON.stringify({ chart_7d: t }));
  await ctx.close();
}
const tabs = Number(tabsArg || 10);
// One context each: ten phones, not ten tabs of one browser (which allows 6 connections per
// host, so a 7th live page would wait for a free one).
for (let i = 0; i < tabs; i++) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await login(ctx, page);
  await page.goto(base + "/");
}
console.log(JSON.stringify({ open_tabs: tabs }));
console.log("TABS-OPEN");
await new Promise((r) => setTimeout(r, 60000));
await browser.close();
