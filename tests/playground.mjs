// Drives the playground page in headless Chromium (puppeteer-core over the DevTools protocol):
// loads it from a real `kiln serve` (KILN_URL), runs a Python and a C program and a C program
// that does not compile, checks what the page shows, runs the curl line it offers, opens the live
// view, and saves screenshots (SCREENSHOT_DIR). Prints "<part> ok" for each part that holds.
import { execFileSync } from "node:child_process";
import assert from "node:assert/strict";
import puppeteer from "puppeteer-core";

const url = process.env.KILN_URL;
const shots = process.env.SCREENSHOT_DIR;
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
  // A fresh machine's first start (font caches, profile) on a busy host took over puppeteer's
  // default 30 s; Chromium's own stderr goes to ours, so a start that fails says why.
  timeout: 180000,
  dumpio: true,
});
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 860 });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url + "/", { waitUntil: "load" });
  await page.waitForSelector("body[data-ready=true]", { timeout: 20000 });

  const languages = await page.$$eval("#language option", (os) => os.map((o) => o.value));
  assert.ok(languages.includes("python") && languages.includes("c"), String(languages));
  assert.equal(await page.$eval("#language", (s) => s.value), "python", "python first");

  // Sets the editor, stdin and args as typing would, runs, and reads the result back.
  async function runOnPage(language, source, stdin, args) {
    await page.select("#language", language);
    await page.$eval("#source", (t, v) => { t.value = v; t.dispatchEvent(new Event("input")); }, source);
    await page.$eval("#stdin", (t, v) => { t.value = v; t.dispatchEvent(new Event("input")); }, stdin);
    await page.$eval("#args", (t, v) => { t.value = v; t.dispatchEvent(new Event("input")); }, args);
    await page.click("#run-button");
    await page.waitForFunction(
      () => !["ready", "running"].includes(document.getElementById("status").textContent),
      { timeout: 120000 },
    );
    return page.evaluate(() => Object.fromEntries(
      ["status", "message", "stdout", "stderr", "compile-output", "exit-code", "time", "memory", "curl"]
        .map((id) => [id, document.getElementById(id).textContent || document.getElementById(id).value]),
    ));
  }

  const py = await runOnPage(
    "python",
    'import sys\nprint("hello", input(), sys.argv[1:])\nprint("warn", file=sys.stderr)\nsys.exit(3)\n',
    "kiln",
    "a b",
  );
  assert.equal(py.status, "runtime_error", JSON.stringify(py));
  assert.equal(py.stdout, "hello kiln ['a', 'b']\n");
  assert.equal(py.stderr, "warn\n");
  assert.equal(py["exit-code"], "3");
  assert.match(py.time, /^\d+ ms$/);
  assert.match(py.memory, /MiB$/);
  assert.ok(py.curl.includes("/v1/submissions?wait=true"), py.curl);
  console.log("python ok");

  const c = await runOnPage(
    "c",
    '#include <stdio.h>\nint main(int argc, char **argv) {\n    char s[32];\n    scanf("%31s", s);\n    printf("%s from C, %d args\\n", s, argc - 1);\n    return 0;\n}\n',
    "kiln",
    "x y z",
  );
  assert.equal(c.status, "accepted", JSON.stringify(c));
  assert.equal(c.stdout, "kiln from C, 3 args\n");
  assert.equal(c["exit-code"], "0");
  if (shots) await page.screenshot({ path: `${shots}/playground.png` });
  console.log("c ok");

  // The curl line the page offers does what the page did.
  const fromCurl = JSON.parse(execFileSync("sh", ["-c", c.curl], { encoding: "utf8" }));
  assert.equal(fromCurl.stdout, "kiln from C, 3 args\n");
  console.log("curl ok");

  const bad = await runOnPage("c", "int main( {\n", "", "");
  assert.equal(bad.status, "compile_error", JSON.stringify(bad));
  assert.ok(bad["compile-output"].includes("error"), bad["compile-output"]);
  console.log("compile error ok");

  await page.click("#tab-live");
  await page.waitForSelector("body[data-live=true]", { timeout: 20000 });
  await new Promise((r) => setTimeout(r, 2500));
  const live = await page.evaluate(() => Object.fromEntries(
    ["m-standby", "m-pool", "m-queue", "m-inflight", "m-rate"]
      .map((id) => [id, document.getElementById(id).textContent]),
  ));
  assert.ok(Number(live["m-pool"]) > 0, JSON.stringify(live));
  assert.ok(Number(live["m-standby"]) >= 0 && live["m-standby"] !== "-", JSON.stringify(live));
  assert.ok(!Number.isNaN(Number(live["m-rate"])), JSON.stringify(live));
  if (shots) await page.screenshot({ path: `${shots}/playground-live.png` });
  console.log("live ok");

  assert.deepEqual(errors, [], "no script errors on the page");
} finally {
  await browser.close();
}
