// The dashboard in a real browser (run by scripts/browser-tests.sh, which starts Herald).
//
// Story: a webhook receiver is down (answers 500), so an alert dies in the DLQ. The operator
// signs in, finds the delivery by its message id, reads the attempt timeline, replays it
// (the receiver is back: 200) and sees it delivered. A read-only token sees no replay
// button, and a forged POST from its session is refused.
//
// Every request goes to 127.0.0.1 only. Prints `browser: N passed, M failed` last.

import { chromium } from "playwright-core";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";

const BASE = process.env.HERALD_URL;
const ADMIN = process.env.HERALD_ADMIN_TOKEN;
const SHOTS = process.env.SCREENSHOTS || "target/browser-screenshots";
const WAIT_MS = 15000;

let passed = 0;
let failed = 0;

async function step(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}\n     ${String(e && e.stack ? e.stack : e).split("\n").slice(0, 6).join("\n     ")}`);
  }
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

// ----- a loopback receiver ---------------------------------------------------------------
// /flaky: 500 twice (the first message dies after its one retry), then 200.
// /down: always 503.  /ok: always 200.
const hits = { flaky: 0, down: 0, ok: 0 };
const receiver = http.createServer((req, res) => {
  req.resume();
  req.on("end", () => {
    const route = req.url.replace(/^\//, "").split("?")[0];
    hits[route] = (hits[route] || 0) + 1;
    if (route === "flaky" && hits.flaky <= 2) {
      res.writeHead(500, { "content-type": "text/plain" });
      res.end("receiver is down for maintenance");
    } else if (route === "down") {
      res.writeHead(503, { "content-type": "text/plain" });
      res.end("service unavailable");
    } else {
      res.writeHead(200, { "content-type": "text/plain" });
      res.end("ok");
    }
  });
});
await new Promise((resolve) => receiver.listen(0, "127.0.0.1", resolve));
const rx = `http://127.0.0.1:${receiver.address().port}`;

// ----- the API, for setup ----------------------------------------------------------------
async function api(method, p, body, token = ADMIN) {
  const res = await fetch(BASE + p, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${text}`);
  return json;
}

async function until(what, fn) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const deliveryStatus = async (id) => (await api("GET", `/api/v1/deliveries/${id}`)).status;
const oneRetry = { schedule: ["200ms"], jitter: false };

let alert; // { message, delivery }
let stuck; // a dead delivery that stays dead (legacy-crm)
let readToken;

await step("setup: destinations, traffic, two dead letters", async () => {
  await api("PUT", "/api/v1/destinations/ops-webhook", { kind: "webhook", url: `${rx}/flaky`, retry: oneRetry, circuit_breaker: false });
  await api("PUT", "/api/v1/destinations/billing-events", { kind: "webhook", url: `${rx}/ok`, rate_limit: "50/s" });
  await api("PUT", "/api/v1/destinations/legacy-crm", { kind: "webhook", url: `${rx}/down`, retry: oneRetry, circuit_breaker: false });
  for (let i = 1; i <= 6; i++) {
    await api("POST", "/api/v1/messages", { text: `invoice ${1000 + i} paid`, event_type: "invoice.paid", to: ["billing-events"] });
  }
  const a = await api("POST", "/api/v1/messages", {
    title: "Nightly backup failed",
    text: "pg_dump exited with status 1 on db-1",
    severity: "critical",
    event_type: "backup.failed",
    to: ["ops-webhook"],
    idempotency_key: "backup-db-1-2026-12-01",
  });
  alert = { message: a.id, delivery: a.deliveries[0].id };
  const s = await api("POST", "/api/v1/messages", { text: "customer 42 updated", event_type: "customer.updated", to: ["legacy-crm"] });
  stuck = s.deliveries[0].id;
  await until("the alert to die", async () => (await deliveryStatus(alert.delivery)) === "dead");
  await until("the CRM delivery to die", async () => (await deliveryStatus(stuck)) === "dead");
  readToken = (await api("POST", "/api/v1/tokens", { name: "on-call viewer", scopes: ["read"] })).token;
});

// ----- the browser -----------------------------------------------------------------------
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "herald-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
  ],
  viewport: { width: 1360, height: 900 },
});
const page = context.pages()[0] || (await context.newPage());
const consoleErrors = [];
// The refusals this story provokes (a wrong token, the forged POST) are expected; any other
// failed load or script error is a bug.
const expected = /Failed to load resource: the server responded with a status of (401|403|409)/;
page.on("console", (m) => { if (m.type() === "error" && !expected.test(m.text())) consoleErrors.push(m.text()); });
page.on("pageerror", (e) => consoleErrors.push(String(e)));
// Nothing may leave the machine: every request the page makes must go to Herald.
const foreign = [];
page.on("request", (r) => { if (!r.url().startsWith(BASE)) foreign.push(r.url()); });

const shot = (name) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
const text = () => page.locator("body").innerText();

await step("an anonymous visit lands on the sign-in form", async () => {
  await page.goto(`${BASE}/ui`);
  assert(page.url().endsWith("/ui/signin"), `at ${page.url()}`);
  await page.fill("#token", "hrld_wrongtoken00_nope");
  await page.click("button[type=submit]");
  assert((await text()).includes("not valid"), "a wrong token is refused");
  await page.fill("#token", "");
  await shot("01-sign-in");
});

await step("signing in with the admin token shows the overview", async () => {
  await page.fill("#token", ADMIN);
  await page.click("button[type=submit]");
  await page.waitForURL(`${BASE}/ui`);
  const cookies = await context.cookies(`${BASE}/ui`);
  const c = cookies.find((k) => k.name === "herald_session");
  assert(c && c.httpOnly && c.sameSite === "Strict" && c.path === "/ui", `cookie ${JSON.stringify(c)}`);
  assert(!c.value.includes(ADMIN), "the token is not in the cookie");
  const t = await text();
  for (const s of ["overview", "accepted", "dead letters", "ops-webhook", "billing-events", "legacy-crm"]) assert(t.toLowerCase().includes(s), `overview shows ${s}`);
  await shot("02-overview");
});

await step("the destinations page shows health and the last error", async () => {
  await page.click("nav >> text=Destinations");
  await page.waitForURL(`${BASE}/ui/destinations`);
  const t = await text();
  assert(t.includes("HTTP 503"), "legacy-crm's last error");
  assert(t.includes("50/s"), "billing-events' rate limit");
  await shot("03-destinations");
});

await step("a delivery is found by its message id and shows its attempt timeline", async () => {
  await page.click("nav >> text=Deliveries");
  await page.waitForURL(`${BASE}/ui/deliveries`);
  await page.fill("input[name=id]", alert.message);
  await page.click("form.search button[type=submit]");
  // The unfiltered list shown before the search holds this delivery too: wait for the
  // search's own results (htmx swaps #results and pushes the URL) before counting.
  await page.waitForURL((u) => u.searchParams.get("id") === alert.message, { timeout: WAIT_MS });
  const rows = page.locator("#results tbody tr");
  await until("the results to narrow to the searched message", async () => (await rows.count()) === 1);
  const link = page.locator(`#results a:has-text("${alert.delivery}")`);
  await link.waitFor({ timeout: WAIT_MS });
  assert((await rows.count()) === 1, `exactly the one delivery: ${JSON.stringify(await rows.allInnerTexts())}`);
  await shot("04-search-by-message-id");
  await link.click();
  await page.waitForURL(`${BASE}/ui/deliveries/${alert.delivery}`);
  const t = await text();
  for (const s of ["Attempt timeline", "Attempt 1", "Attempt 2", "HTTP 500", "receiver is down for maintenance", "backup-db-1-2026-12-01", "Nightly backup failed"]) {
    assert(t.includes(s), `the delivery page shows ${s}`);
  }
  await shot("05-delivery-timeline");
});

await step("the idempotency key finds the same delivery", async () => {
  await page.goto(`${BASE}/ui/deliveries?idempotency_key=backup-db-1-2026-12-01`);
  assert((await text()).includes(alert.delivery), "found by idempotency key");
});

await step("replaying the dead letter (after confirming) delivers it", async () => {
  await page.click("nav >> text=Dead letters");
  await page.waitForURL(`${BASE}/ui/dlq`);
  const row = page.locator("tr", { hasText: alert.delivery });
  await row.waitFor();
  await shot("06-dead-letters");
  await row.locator("text=Replay").click();
  await page.waitForURL(/\/ui\/dlq\/confirm/);
  assert((await text()).includes("Replay this dead delivery?"), "a confirmation step");
  await shot("07-confirm-replay");
  await page.click("text=Yes, replay");
  await page.waitForURL(/\/ui\/dlq\?/);
  assert((await text()).includes("Replayed 1 delivery"), "the replay is confirmed");
  await until("the replayed alert to be delivered", async () => (await deliveryStatus(alert.delivery)) === "delivered");
  await page.goto(`${BASE}/ui/deliveries/${alert.delivery}`);
  const t = await text();
  assert(t.includes("delivered") && t.includes("Attempt 3"), "the timeline shows the delivered third attempt");
  await shot("08-delivered-after-replay");
});

await step("the audit log verifies and lists the replay", async () => {
  await page.click("nav >> text=Audit log");
  await page.waitForURL(`${BASE}/ui/audit`);
  await page.click("text=Verify the chain now");
  await page.locator("text=The chain verifies").waitFor({ timeout: WAIT_MS });
  assert((await text()).includes("dlq.replayed"), "the replay is audited");
  await shot("09-audit-log");
});

await step("an error reported by an app shows as a group and is resolved", async () => {
  const report = {
    service: "shop", environment: "production", level: "error", message: "division by zero",
    exception: { type: "ZeroDivisionError", value: "division by zero",
      stacktrace: [{ filename: "shop/views.py", function: "divide", lineno: 7, in_app: true }] },
    request: { method: "GET", path: "/divide" }, user: { username: "kim" },
  };
  const first = await api("POST", "/api/v1/errors", report);
  await api("POST", "/api/v1/errors", report);
  await page.click("nav >> text=Errors");
  await page.waitForURL(`${BASE}/ui/errors`);
  const t = await text();
  assert(t.includes("ZeroDivisionError") && t.includes(first.group), "the group is listed");
  await shot("09b-error-groups");
  await page.click("button:has-text('Resolve')");
  await page.locator("text=Resolved: the next report").waitFor({ timeout: WAIT_MS });
  assert((await api("GET", `/api/v1/error-groups/${first.group}`)).status === "resolved", "resolved");
});

await step("a read-only token sees no replay button and a forged POST is refused", async () => {
  await page.click("text=Sign out");
  await page.waitForURL(`${BASE}/ui/signin`);
  await page.fill("#token", readToken);
  await page.click("button[type=submit]");
  await page.waitForURL(`${BASE}/ui`);
  await page.goto(`${BASE}/ui/dlq`);
  const t = await text();
  assert(t.includes(stuck), "the dead CRM delivery is listed");
  assert(t.includes("read-only"), "the session says read-only");
  assert((await page.locator("a:has-text('Replay'), button:has-text('Replay')").count()) === 0, "no replay button");
  assert((await page.locator("a:has-text('Discard'), button:has-text('Discard')").count()) === 0, "no discard button");
  await shot("10-read-only-dead-letters");
  // A hand-made form post from this page, with the session's own CSRF token.
  const status = await page.evaluate(async (id) => {
    const csrf = document.querySelector("input[name=csrf]").value;
    const r = await fetch("/ui/dlq/replay", {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ csrf, queue: "legacy-crm", id }).toString(),
    });
    return r.status;
  }, stuck);
  assert(status === 403, `forged replay answered ${status}`);
  assert((await deliveryStatus(stuck)) === "dead", "still dead");
  await page.goto(`${BASE}/ui/dlq/confirm?action=replay&queue=legacy-crm&id=${stuck}`);
  assert((await text()).includes("read-only"), "the confirmation page refuses too");
  await shot("11-read-only-refused");
});

await step("an action on a letter that changed meanwhile shows why it failed", async () => {
  await page.goto(`${BASE}/ui`);
  await page.click("text=Sign out");
  await page.waitForURL(`${BASE}/ui/signin`);
  await page.fill("#token", ADMIN);
  await page.click("button[type=submit]");
  await page.waitForURL(`${BASE}/ui`);
  await page.goto(`${BASE}/ui/dlq/confirm?action=replay&queue=legacy-crm&id=${stuck}`);
  // Someone else discards it first (through the API).
  await api("DELETE", `/api/v1/dlq/legacy-crm/${stuck}`);
  await page.click("text=Yes, replay");
  await page.locator("text=no longer dead-lettered").waitFor({ timeout: WAIT_MS });
  assert((await text()).includes("409"), "the conflict is shown, not swallowed");
  await shot("12-conflict-shown");
});

await step("no console errors and no request left Herald", async () => {
  assert(consoleErrors.length === 0, `console errors: ${consoleErrors.join(" | ")}`);
  assert(foreign.length === 0, `foreign requests: ${foreign.join(", ")}`);
});

await context.close();
receiver.close();
fs.rmSync(userDataDir, { recursive: true, force: true });
console.log(`browser: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
