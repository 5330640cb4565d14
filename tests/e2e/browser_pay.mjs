// Drives the test-checkout page in Debian's chromium (no browser download): open it, check the
// TEST banner, press "Pay (test)", land on the receipt page and wait until it shows the final
// outcome (it polls by itself). Prints one JSON line of what a user saw.
//   node browser_pay.mjs <page url> <screenshot folder> <fresh user-data folder>
import { chromium } from "playwright-core";

const [url, shots, userDataDir] = process.argv.slice(2);
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  viewport: { width: 390, height: 720 }, // a phone, as a player would use it
});
try {
  const page = context.pages()[0] || (await context.newPage());
  const errors = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`${m.text()} ${m.location().url || ""}`.trim());
  });
  page.on("pageerror", (e) => errors.push(String(e)));
  const opened = await page.goto(url);
  const seen = {
    status: opened.status(),
    title: await page.title(),
    banner: await page.locator(".test").innerText(),
    machine: await page.locator("#machine").innerText(),
    button: await page.locator("#pay").innerText(),
  };
  await page.screenshot({ path: `${shots}/checkout-before.png` });
  await Promise.all([page.waitForURL(/\/receipt\//), page.click("#pay")]);
  seen.receiptPath = new URL(page.url()).pathname;
  seen.checkoutErrors = errors.splice(0); // the checkout page's own (e.g. its favicon)
  seen.firstHeadline = await page.locator("#headline").innerText();
  // The page follows the payment by itself; wait until it says the outcome is final.
  await page.locator('#receipt[data-final="true"]').waitFor({ timeout: 45000 });
  seen.headline = await page.locator("#headline").innerText();
  seen.detail = await page.locator("#detail").innerText();
  seen.steps = await page.locator("#steps li").allInnerTexts();
  seen.facts = await page.locator("#facts").innerText();
  seen.width = await page.evaluate(() => document.documentElement.scrollWidth);
  seen.errors = errors; // the receipt page's: none expected
  await page.screenshot({ path: `${shots}/receipt-final.png`, fullPage: true });
  console.log(JSON.stringify(seen));
} finally {
  await context.close();
}
