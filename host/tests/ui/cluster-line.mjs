// On a cluster's host, the system page's header says which host it is, its role, the writer,
// how far it has applied the log and its lag; a single process shows no such line.
//
//   node cluster-line.mjs BASE_URL TOKEN
// Prints `cluster line: <text>`, or `no cluster line` when the line stays hidden.
import { chromium } from "playwright-core";

const [base, token] = process.argv.slice(2);
if (!base || !token) {
  console.error("usage: node cluster-line.mjs BASE_URL TOKEN");
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(base + "/admin/ui/");
  await page.fill("#token", token);
  await page.click("#login-form button");
  // The first refresh has run once the head line is filled.
  await page.waitForFunction(() => document.querySelector("#head").textContent.startsWith("log head"));
  const line = page.locator("#cluster");
  if (await line.isVisible()) console.log("cluster line: " + (await line.textContent()));
  else console.log("no cluster line");
  if (errors.length) throw new Error("page errors: " + errors.join("; "));
} finally {
  await browser.close();
}
