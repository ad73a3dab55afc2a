// Drives carshare's live system page in a real browser (Debian's Chromium through
// playwright-core): log in with the admin token, see orders move the counters and appear in
// the last events, read the event catalog, stop and start a context from the page, retry a dead
// letter from the page, remove a context and add it back from its file (the catalog follows),
// and take the screenshot the README shows.
//
//   node system-page.mjs BASE_URL TOKEN SCREENSHOT.png PARTITIONS AUDITOR.wasm
import { chromium } from "playwright-core";

const [base, token, screenshot, partitionsArg, auditorFile] = process.argv.slice(2);
if (!base || !token || !screenshot) {
  console.error("usage: node system-page.mjs BASE_URL TOKEN SCREENSHOT.png [PARTITIONS]");
  process.exit(2);
}
const partitions = Number(partitionsArg || 1);

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const step = (what) => console.log("ok: " + what);
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });

  await page.goto(base + "/admin/ui/");
  await page.locator("#login").waitFor({ state: "visible" });
  if (page.url().includes(token)) throw new Error("the token is in the URL");
  await page.fill("#token", token);
  await page.click("#login-form button");
  const orderRow = page.locator('#contexts tr[data-context="order"]');
  await orderRow.waitFor();
  step("logged in; the contexts are listed");
  if (await page.locator("#cluster").isVisible()) throw new Error("a single process shows a cluster line");
  // Every partition, each with its writer running.
  await page.waitForFunction((n) => document.querySelectorAll("#partitions tbody tr").length === n, partitions);
  const writers = await page.locator('#partitions td[data-field="writer"]').allTextContents();
  if (writers.length !== partitions || writers.some((w) => w !== "running")) {
    throw new Error("partition writers: " + JSON.stringify(writers));
  }
  step(partitions + " partition(s) shown, every writer running");
  if (page.url().includes(token)) throw new Error("the token is in the URL");

  // Orders placed now move the order context's request rate, and show in the last events.
  const place = () => fetch(base + "/orders", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ productId: 1, qty: 1 }),
  }).then((r) => { if (r.status !== 201) throw new Error("order: " + r.status); });
  const moved = page.waitForFunction(() => {
    const td = document.querySelector('#contexts tr[data-context="order"] td[data-field="requests"]');
    return td && Number(td.textContent) > 0;
  }, null, { timeout: 20000 });
  for (let i = 0; i < 10; i++) await place();
  let placing = true;
  const keepPlacing = (async () => { while (placing) { await place(); await new Promise((r) => setTimeout(r, 100)); } })();
  await moved;
  step("orders moved the order context's request rate");
  await page.waitForFunction(() => [...document.querySelectorAll("#events td")].some((td) => td.textContent === "Ordered"));
  step("the orders are in the last events");
  // The event catalog: Ordered, from order, handled by product, the customer page and the auditor.
  const orderedSubscribers = () => page.evaluate(() => {
    const td = document.querySelector('#catalog tr[data-event="Ordered"] td[data-field="subscribers"]');
    return td ? td.textContent : "";
  });
  await page.waitForFunction(() => document.querySelector('#catalog tr[data-event="Ordered"]'));
  const ordered = await page.textContent('#catalog tr[data-event="Ordered"]');
  if (!ordered.includes("order 0.1.0") || !ordered.includes("productId: integer") || !ordered.includes("the order id")) {
    throw new Error("catalog row: " + ordered);
  }
  for (const c of ["auditor", "customerpage", "product"]) {
    if (!(await orderedSubscribers()).split(", ").includes(c)) throw new Error("Ordered subscribers: " + await orderedSubscribers());
  }
  step("the event catalog shows Ordered with its payload and its subscribers");
  // The README's picture: taken while orders flow, so the rates show.
  await page.waitForTimeout(1500);
  await page.screenshot({ path: screenshot, fullPage: true });
  step("screenshot taken");
  placing = false;
  await keepPlacing;

  // Stop delivery from the page: it shows as stopped; start it again.
  await page.click('#contexts tr[data-context="delivery"] button[data-action="stop"]');
  await page.waitForFunction(() => document.querySelector('#contexts tr[data-context="delivery"] td[data-field="state"]').textContent === "stopped");
  step("delivery stopped from the page, shown as stopped");
  await page.click('#contexts tr[data-context="delivery"] button[data-action="start"]');
  await page.waitForFunction(() => document.querySelector('#contexts tr[data-context="delivery"] td[data-field="state"]').textContent === "running");
  step("delivery started again");

  // A dead letter the test left for us: make its subscriber work again, retry it from the page.
  const deadRow = page.locator('#dead tr[data-subscriber="auditor"]');
  await deadRow.first().waitFor({ timeout: 20000 });
  const position = await deadRow.first().getAttribute("data-position");
  const healed = await fetch(base + "/audits/mode", { method: "PUT", body: JSON.stringify({ failing: false }) });
  if (healed.status !== 200) throw new Error("auditor mode: " + healed.status);
  await deadRow.first().locator("button").click();
  await page.waitForFunction((p) => !document.querySelector(`#dead tr[data-subscriber="auditor"][data-position="${p}"]`), position);
  step("a dead letter retried from the page: auditor " + position);

  // Remove the auditor from the page (confirming), then add it back from its file.
  page.once("dialog", (dialog) => dialog.accept());
  await page.click('#contexts tr[data-context="auditor"] button[data-action="remove"]');
  await page.waitForFunction(() => !document.querySelector('#contexts tr[data-context="auditor"]'));
  await page.waitForFunction(() => !document.querySelector('#catalog tr[data-event="Ordered"] td[data-field="subscribers"]').textContent.includes("auditor"));
  step("auditor removed from the page, and from the event catalog");
  await page.fill("#add-name", "auditor");
  await page.setInputFiles("#add-file", auditorFile);
  await page.click("#add");
  await page.waitForFunction(() => document.querySelector('#contexts tr[data-context="auditor"]'));
  const added = await page.textContent("#add-result");
  if (!added.includes("auditor") || !added.includes("added")) throw new Error("add result: " + added);
  await page.waitForFunction(() => document.querySelector('#catalog tr[data-event="Ordered"] td[data-field="subscribers"]').textContent.includes("auditor"));
  step("auditor added back from the page: " + added);

  if (errors.length) throw new Error("the page reported errors: " + errors.join("; "));
  console.log("system page: all steps passed");
} finally {
  await browser.close();
}
