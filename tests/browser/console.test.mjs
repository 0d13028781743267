// Opens the web console in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core), creates a topic, subscribes with last_n, publishes, and checks that the event
// shows up on the page; that a refused subscription is never shown as one; that the page's
// content security policy lets its own script run and nothing else; and that the topics card
// holds its buttons at every width. Run by tests/browser/run.sh, which starts the server.
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
  const viewports = [
    { width: 1280, height: 900, name: "desktop" },
    { width: 1024, height: 768, name: "laptop" },
    { width: 390, height: 844, name: "phone" },
  ];
  for (const viewport of viewports) {
    const page = await browser.newPage();
    await page.setViewportSize({ width: viewport.width, height: viewport.height });
    const consoleErrors = [];
    page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
    page.on("pageerror", (e) => consoleErrors.push(String(e)));
    const response = await page.goto(base + "/");
    const csp = response.headers()["content-security-policy"] || "";
    if (/unsafe|ws:/.test(csp) || !/connect-src 'self'/.test(csp)) throw new Error(`${viewport.name}: a loose policy: ${csp}`);
    // Under that policy, a script the page did not come with does not run.
    const injected = await page.evaluate(() => new Promise((done) => {
      document.addEventListener("securitypolicyviolation", () => done("refused"), { once: true });
      const s = document.createElement("script");
      s.textContent = "window.injectedRan = true";
      document.body.append(s);
      setTimeout(() => done(window.injectedRan ? "ran" : "silent"), 2000);
    }));
    if (injected !== "refused") throw new Error(`${viewport.name}: an injected inline script: ${injected}`);
    if (key) {
      await page.fill("#api-key", key);
      await page.dispatchEvent("#api-key", "change");
    }
    await page.waitForSelector("#ws-status.open", { timeout: 10000 });
    // Before the key was entered the page was refused (401s are logged by the browser): expected.
    await page.waitForTimeout(2500);
    consoleErrors.length = 0;

    // A long name (the longest cell the topics table gets) at each width.
    const topic = `browser-${viewport.name}-${"x".repeat(40)}`;
    await page.fill("#topic-name", topic);
    await page.click("#create-topic");
    await page.waitForSelector(`#topics button[data-topic="${topic}"]`, { timeout: 10000 });

    // Publish once before subscribing, so last_n has something to replay.
    await page.fill("#pub-topic", topic);
    await page.fill("#pub-payload", JSON.stringify({ early: true }));
    await page.click("#publish");
    await page.waitForSelector("#log li.ack", { timeout: 10000 });

    // A subscription the server refuses is reported and never listed.
    await page.fill("#sub-topic", "no-such-topic");
    await page.click("#subscribe");
    await page.waitForFunction(() => /TOPIC_NOT_FOUND/.test(document.querySelector("#sub-notice").textContent), null, { timeout: 10000 });
    if (await page.evaluate(() => document.querySelector("#subscriptions").textContent.includes("no-such-topic"))) {
      throw new Error(`${viewport.name}: a refused subscription is listed`);
    }

    await page.fill("#sub-topic", topic);
    await page.fill("#sub-last-n", "5");
    await page.click("#subscribe");
    await page.waitForFunction(() => [...document.querySelectorAll("#log li.event")].some((li) => li.textContent.includes('"early":true')), null, { timeout: 10000 });
    await page.waitForFunction((t) => document.querySelector("#subscriptions").textContent.includes(t), topic, { timeout: 10000 });

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
    // Everything in each card (the topics table's buttons, the notices naming the long topic)
    // lies inside the card's border.
    const outside = await page.evaluate(() => {
      const out = [];
      for (const card of document.querySelectorAll("main > section")) {
        const box = card.getBoundingClientRect();
        for (const el of card.querySelectorAll("*")) {
          if (el.closest("#log")) continue; // scrolls within itself
          const range = document.createRange();
          range.selectNodeContents(el);
          for (const r of [el.getBoundingClientRect(), range.getBoundingClientRect()]) {
            if (r.width > 0 && (r.right > box.right - 1 || r.left < box.left + 1)) {
              out.push(`${card.querySelector("h2").textContent}: ${el.tagName}#${el.id} ${r.left}..${r.right} in ${box.left}..${box.right}`);
            }
          }
        }
      }
      return out;
    });
    if (outside.length) throw new Error(`${viewport.name}: outside its card: ${outside.slice(0, 5).join(", ")}`);

    await page.screenshot({ path: join(shots, `console-${viewport.name}.png`), fullPage: true });

    // Deleting the topic from the page tells the subscription.
    page.once("dialog", (d) => d.accept());
    await page.click(`#topics button[data-topic="${topic}"]`);
    await page.waitForFunction((t) => [...document.querySelectorAll("#log li.info")].some((li) => li.textContent.includes("topic_deleted") && li.textContent.includes(t)), topic, { timeout: 10000 });

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
