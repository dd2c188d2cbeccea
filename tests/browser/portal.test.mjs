// The customer portal in a real browser (run by scripts/browser-tests.sh, which starts Herald).
//
// Story: the platform makes an application for its customer Acme and hands Acme a portal
// link. Acme opens it, adds an endpoint for invoices, reads its signing secret, sets a
// header, sends a test event and reads the attempt, resends it, rotates the secret, points
// the endpoint at a broken URL, sees the failure, fixes the URL and recovers what failed,
// disables and enables it, cannot reach another customer's endpoint, and deletes it. When
// the platform revokes the link's token, the session ends. A screenshot of every page.
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
    console.log(`ok   portal: ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL portal: ${name}\n     ${String(e && e.stack ? e.stack : e).split("\n").slice(0, 6).join("\n     ")}`);
  }
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

// ----- a loopback receiver: /ok answers 200, /bad 400 (a permanent failure) ------------------
const received = [];
const receiver = http.createServer((req, res) => {
  let body = "";
  req.on("data", (c) => { body += c; });
  req.on("end", () => {
    const route = req.url.replace(/^\//, "").split("?")[0];
    received.push({ route, headers: req.headers, body });
    if (route === "bad") {
      res.writeHead(400, { "content-type": "text/plain" });
      res.end("no such customer");
    } else {
      res.writeHead(200, { "content-type": "text/plain" });
      res.end("thanks");
    }
  });
});
await new Promise((resolve) => receiver.listen(0, "127.0.0.1", resolve));
const rx = `http://127.0.0.1:${receiver.address().port}`;

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

// ----- the platform's side (API) --------------------------------------------------------------
let access;
let otherEndpoint;
await step("the platform makes an application, event types and a portal link", async () => {
  await api("POST", "/api/v1/event-type", { name: "invoice.paid", description: "An invoice was paid" });
  await api("POST", "/api/v1/event-type", { name: "user.signup", description: "A user signed up" });
  await api("POST", "/api/v1/app", { name: "Acme", uid: "acme", metadata: { portal_accent: "#b4462b" } });
  const other = await api("POST", "/api/v1/app", { name: "Globex", uid: "globex" });
  otherEndpoint = (await api("POST", `/api/v1/app/${other.id}/endpoint`, { url: `${rx}/ok` })).id;
  access = await api("POST", "/api/v1/auth/app-portal-access/acme", {});
  assert(access.url.startsWith(`${BASE}/portal/access?token=`), access.url);
});

// ----- the customer's browser ------------------------------------------------------------------
const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "herald-portal-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
  viewport: { width: 1360, height: 900 },
});
const page = context.pages()[0] || (await context.newPage());
const consoleErrors = [];
const expected = /Failed to load resource: the server responded with a status of (401|404)/;
page.on("console", (m) => { if (m.type() === "error" && !expected.test(m.text())) consoleErrors.push(m.text()); });
page.on("pageerror", (e) => consoleErrors.push(String(e)));
const foreign = [];
page.on("request", (r) => { if (!r.url().startsWith(BASE)) foreign.push(r.url()); });
const shot = (name) => page.screenshot({ path: path.join(SHOTS, `portal-${name}.png`), fullPage: true });
const text = () => page.locator("body").innerText();

let endpointId;
let messageId;

await step("the link opens the portal for Acme only, under a strict CSP", async () => {
  const resp = await page.goto(access.url);
  assert(page.url() === `${BASE}/portal`, `at ${page.url()}`);
  const csp = resp.headers()["content-security-policy"] || "";
  assert(csp.includes("frame-ancestors 'none'") && csp.includes("script-src 'none'"), csp);
  const body = await text();
  assert(body.includes("Acme") && body.includes("No endpoints yet"), body);
  assert(!body.includes("Globex"), "another customer is invisible");
  await shot("01-endpoints-empty");
});

await step("adding an endpoint for invoices", async () => {
  await page.fill("#new-endpoint input[name=url]", `${rx}/ok`);
  await page.fill("#new-endpoint input[name=description]", "Invoices to our ERP");
  await page.check("#new-endpoint input[value='invoice.paid']");
  await page.click("#new-endpoint button[type=submit]");
  await page.waitForURL(/\/portal\/endpoints\/ep_/);
  endpointId = page.url().split("/").pop().split("?")[0];
  const body = await text();
  assert(body.includes("Invoices to our ERP") && body.includes("enabled"), body);
  assert(await page.isChecked("#edit input[value='invoice.paid']"), "the event type is ticked");
  await shot("02-endpoint");
});

let secret;
await step("revealing the signing secret", async () => {
  await page.click("#reveal");
  secret = (await page.locator("#secret").innerText()).trim();
  assert(secret.startsWith("whsec_"), secret);
  await shot("03-secret");
});

await step("setting a custom header", async () => {
  await page.fill("#headers textarea", "X-Customer: acme\nAuthorization: Bearer erp-token");
  await page.click("#headers button[type=submit]");
  await page.locator("#notice").waitFor({ timeout: WAIT_MS });
  const value = await page.inputValue("#headers textarea");
  assert(value.includes("X-Customer: acme"), value);
  assert(!value.includes("erp-token"), "a sensitive header value stays masked");
});

await step("a test event arrives signed, with the headers, and its attempt is shown", async () => {
  await page.selectOption("#test select", "invoice.paid");
  await page.click("#test button[type=submit]");
  await page.waitForURL(/\/portal\/messages\/msg_/);
  messageId = page.url().split("/").pop();
  const got = await until("the test event", async () => received.find((r) => r.route === "ok" && r.headers["svix-id"] === messageId));
  assert(got.headers["x-customer"] === "acme", JSON.stringify(got.headers));
  assert(got.headers["authorization"] === "Bearer erp-token", "the masked header kept its value");
  assert(got.headers["svix-signature"].startsWith("v1,"), got.headers["svix-signature"]);
  assert(JSON.parse(got.body).test === true, got.body);
  await until("the attempt on the page", async () => {
    await page.reload();
    return (await text()).includes("thanks");
  });
  await shot("04-message");
});

await step("resending the message makes a manual attempt", async () => {
  await page.selectOption("#resend select", endpointId);
  await page.click("#resend button[type=submit]");
  await until("the resend", async () => received.filter((r) => r.headers["svix-id"] === messageId).length === 2);
  await until("the manual attempt on the page", async () => {
    await page.reload();
    return (await text()).includes("manual");
  });
});

await step("the messages list", async () => {
  await page.click("nav >> text=Messages");
  await page.waitForURL(`${BASE}/portal/messages`);
  assert((await text()).includes(messageId), "the test message is listed");
  await shot("05-messages");
});

await step("rotating the secret keeps the old one signing for 24 hours", async () => {
  await page.goto(`${BASE}/portal/endpoints/${endpointId}`);
  await page.click("#rotate");
  const fresh = (await page.locator("#secret").innerText()).trim();
  assert(fresh.startsWith("whsec_") && fresh !== secret, "a new secret");
  const body = await text();
  assert(body.includes("24 hours") && body.includes("previous secret still signs"), body);
  await shot("06-rotated");
});

await step("a failure, the fix, and recovering what failed", async () => {
  await page.fill("#edit input[name=url]", `${rx}/bad`);
  await page.click("#edit button[type=submit]");
  await page.locator("#notice").waitFor({ timeout: WAIT_MS });
  await page.click("#test button[type=submit]");
  await page.waitForURL(/\/portal\/messages\/msg_/);
  const failing = page.url().split("/").pop();
  await until("the failed attempt", async () => {
    await page.reload();
    const t = await text();
    return t.includes("no such customer") && t.includes("dead");
  });
  await shot("07-failed");
  await page.goto(`${BASE}/portal/endpoints/${endpointId}`);
  await page.fill("#edit input[name=url]", `${rx}/ok`);
  await page.click("#edit button[type=submit]");
  await page.locator("#notice").waitFor({ timeout: WAIT_MS });
  await page.click("#recover button[type=submit]");
  await page.locator("text=Recovering 1 failed message").waitFor({ timeout: WAIT_MS });
  await until("the recovered delivery", async () => received.some((r) => r.route === "ok" && r.headers["svix-id"] === failing));
  await shot("08-recovered");
});

await step("disabling and enabling the endpoint", async () => {
  await page.click("#disable");
  await page.locator("#enable").waitFor({ timeout: WAIT_MS });
  assert((await text()).includes("disabled"), "shown disabled");
  await shot("09-disabled");
  await page.click("#enable");
  await page.locator("#disable").waitFor({ timeout: WAIT_MS });
});

await step("another customer's endpoint is not found, and the dashboard stays closed", async () => {
  const resp = await page.goto(`${BASE}/portal/endpoints/${otherEndpoint}`);
  assert(resp.status() === 404, `status ${resp.status()}`);
  await shot("10-not-found");
  await page.goto(`${BASE}/ui`);
  assert(page.url().endsWith("/ui/signin"), "a portal session is not a dashboard session");
});

await step("deleting the endpoint", async () => {
  await page.goto(`${BASE}/portal/endpoints/${endpointId}`);
  await page.click("#delete");
  await page.waitForURL(`${BASE}/portal`);
  assert((await text()).includes("No endpoints yet"), "the list is empty again");
});

await step("revoking the link's token ends the session", async () => {
  const tokenId = access.token.split("_")[1];
  await api("DELETE", `/api/v1/tokens/${tokenId}`);
  const resp = await page.goto(`${BASE}/portal`);
  assert(resp.status() === 401, `status ${resp.status()}`);
  assert((await text()).includes("session has ended"), await text());
  await shot("11-ended");
  const again = await page.goto(access.url);
  assert(again.status() === 401, "the revoked link opens nothing");
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
