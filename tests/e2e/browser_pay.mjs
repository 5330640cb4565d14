// Drives the test-checkout page in Debian's chromium (no browser download): open it, check the
// TEST banner, press "Pay (test)", wait for the answer. Prints one JSON line of what a user saw.
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
  viewport: { width: 420, height: 720 }, // a phone, as a player would use it
});
try {
  const page = context.pages()[0] || (await context.newPage());
  const opened = await page.goto(url);
  const seen = {
    status: opened.status(),
    title: await page.title(),
    banner: await page.locator(".test").innerText(),
    machine: await page.locator("#machine").innerText(),
    button: await page.locator("#pay").innerText(),
  };
  await page.screenshot({ path: `${shots}/checkout-before.png` });
  const answer = page.waitForResponse((r) => r.request().method() === "POST");
  await page.click("#pay");
  seen.paidStatus = (await answer).status();
  seen.result = await page.locator("#result").innerText({ timeout: 15000 });
  await page.screenshot({ path: `${shots}/checkout-paid.png`, fullPage: true });
  await page.reload();
  seen.reloaded = await page.locator("#result").innerText({ timeout: 15000 });
  console.log(JSON.stringify(seen));
} finally {
  await context.close();
}
