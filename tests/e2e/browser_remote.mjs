// A remote control for Debian's chromium (playwright-core, no browser download): one JSON
// command per line on stdin, one JSON answer per line on stdout, so a pytest scenario can act
// (stop a cabinet, pay) between the steps a person takes in the browser.
//   node browser_remote.mjs <fresh user-data folder>
// Commands: {"do": "goto"|"fill"|"click"|"text"|"wait_text"|"shot"|"axe"|"fetch"|"url", ...}
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const [userDataDir] = process.argv.slice(2);
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 390, height: 844 },
  acceptDownloads: true,
});
const pages = { main: context.pages()[0] || (await context.newPage()) };

async function page(name) {
  if (!pages[name]) pages[name] = await context.newPage();
  return pages[name];
}

const actions = {
  async goto(p, c) { const r = await p.goto(c.url); return { status: r.status(), url: p.url() }; },
  async url(p) { return { url: p.url() }; },
  async fill(p, c) {
    const field = c.selector ? p.locator(c.selector) : p.getByLabel(c.label, { exact: true });
    await field.fill(c.value);
    return {};
  },
  async post(p, c) {
    const r = await p.request.post(c.url, { form: c.form, maxRedirects: 0 });
    return { status: r.status(), body: await r.text() };
  },
  async click(p, c) {
    const target = c.selector ? p.locator(c.selector) : p.getByRole("button", { name: c.button });
    await Promise.all([p.waitForLoadState("load"), target.first().click()]);
    await p.waitForLoadState("load");
    return { url: p.url() };
  },
  async text(p, c) { return { text: await p.locator(c.selector || "body").first().innerText() }; },
  async wait_text(p, c) {
    // Waits for text to show up WITHOUT a reload: the page's own script must bring it.
    await p.locator(c.selector || "body").filter({ hasText: c.text }).first()
      .waitFor({ timeout: c.timeout || 20000 });
    return { text: await p.locator(c.selector || "body").first().innerText() };
  },
  async shot(p, c) {
    await p.setViewportSize({ width: c.width, height: c.height });
    await p.screenshot({ path: c.path, fullPage: !!c.full });
    return { path: c.path };
  },
  async axe(p) {
    await p.evaluate(axeSource); // through DevTools, so the page's CSP stays as it is
    const result = await p.evaluate(() => window.axe.run(document, {
      runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } }));
    return { violations: result.violations.map((v) => ({
      id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(" ")) })) };
  },
  async fetch(p, c) {
    // Same cookies as the page: what a click on the download link would get.
    const r = await p.request.get(c.url);
    return { status: r.status(), type: r.headers()["content-type"], body: await r.text() };
  },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const command = JSON.parse(line);
  if (command.do === "quit") break;
  try {
    const answer = await actions[command.do](await page(command.page || "main"), command);
    console.log(JSON.stringify({ ok: true, ...answer }));
  } catch (error) {
    console.log(JSON.stringify({ ok: false, error: String(error).slice(0, 2000) }));
  }
}
await context.close();
