// Opens the web console in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core), creates a topic, subscribes with last_n, publishes, and checks that the event
// shows up on the page. Run by tests/browser/run.sh, which starts the server.
import { chromium } from "playwright-core";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const base = process.env.PUBSUB_URL;
const key = process.env.PUBSUB_API_KEY || "";
const shots = process.env.SCREENSHOT_DIR || ".";
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
if (!base) throw new Error("PUBSUB_URL is not set");

// A fresh profile each run (playwright passes it to Chromium as --user-data-dir).
const browser = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "pubsub-chromium-")), {
  executablePath,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-component-update", "--disable-sync", "--disable-quic"],
});
let failed = false;
try {
  for (const viewport of [{ width: 1280, height: 900, name: "desktop" }, { width: 390, height: 844, name: "phone" }]) {
    const page = await browser.newPage();
    await page.setViewportSize({ width: viewport.width, height: viewport.height });
    const consoleErrors = [];
    page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
    page.on("pageerror", (e) => consoleErrors.push(String(e)));
    await page.goto(base + "/");
    if (key) {
      await page.fill("#api-key", key);
      await page.dispatchEvent("#api-key", "change");
    }
    await page.waitForSelector("#ws-status.open", { timeout: 10000 });
    // Before the key was entered the page was refused (401s are logged by the browser): expected.
    await page.waitForTimeout(2500);
    consoleErrors.length = 0;

    const topic = `browser-${viewport.name}`;
    await page.fill("#topic-name", topic);
    await page.click("#create-topic");
    await page.waitForSelector(`#topics button[data-topic="${topic}"]`, { timeout: 10000 });

    // Publish once before subscribing, so last_n has something to replay.
    await page.fill("#pub-topic", topic);
    await page.fill("#pub-payload", JSON.stringify({ early: true }));
    await page.click("#publish");
    await page.waitForSelector("#log li.ack", { timeout: 10000 });

    await page.fill("#sub-topic", topic);
    await page.fill("#sub-last-n", "5");
    await page.click("#subscribe");
    await page.waitForFunction(() => [...document.querySelectorAll("#log li.event")].some((li) => li.textContent.includes('"early":true')), null, { timeout: 10000 });

    const marker = `hello from ${viewport.name} ${Date.now()}`;
    await page.fill("#pub-payload", JSON.stringify({ text: marker, n: 42 }));
    await page.click("#publish");
    await page.waitForFunction((m) => [...document.querySelectorAll("#log li.event")].some((li) => li.textContent.includes(m)), marker, { timeout: 10000 });

    const conns = await page.evaluate(async (k) => (await (await fetch("/stats", { headers: { "X-API-Key": k } })).json()).connections, key);
    if (conns.websocket < 1) throw new Error(`${viewport.name}: the server counts no WebSocket: ${JSON.stringify(conns)}`);
    // The stats panel shows live numbers.
    await page.waitForFunction(() => /published/.test(document.querySelector("#stats").textContent), null, { timeout: 10000 });
    // The page fits a phone: nothing wider than the viewport.
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (overflow > 1) throw new Error(`${viewport.name}: the page is ${overflow}px wider than the screen`);

    // Deleting the topic from the page tells the subscription.
    page.once("dialog", (d) => d.accept());
    await page.click(`#topics button[data-topic="${topic}"]`);
    await page.waitForFunction((t) => [...document.querySelectorAll("#log li.info")].some((li) => li.textContent.includes("topic_deleted") && li.textContent.includes(t)), topic, { timeout: 10000 });

    await page.screenshot({ path: join(shots, `console-${viewport.name}.png`), fullPage: true });
    if (consoleErrors.length) throw new Error(`${viewport.name}: console errors: ${consoleErrors.join(" | ")}`);
    console.log(`browser: ${viewport.name} ok`);
    await page.close();
  }
} catch (e) {
  failed = true;
  console.error("browser: FAILED:", e.message);
} finally {
  await browser.close();
}
console.log(failed ? "browser: 0 passed, 1 failed" : "browser: 1 passed, 0 failed");
process.exit(failed ? 1 : 0);
