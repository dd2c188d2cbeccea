// The official npm `svix` SDK (pinned in package-lock.json) pointed at a real `herald serve`
// (started by scripts/svix-node-tests.sh, which passes HERALD_URL and HERALD_ADMIN_TOKEN).
//
// A platform that sends webhooks with the Node SDK moves to Herald by setting
// `new Svix(token, { serverUrl })` to Herald's base URL and using a Herald admin token. The
// SDK (src/request.ts) sends `Authorization: Bearer <token>`, a `svix-req-id`, an
// `idempotency-key: auto_<uuid>` on every POST, camelCase JSON bodies, and always
// `?with_content=false` on message create (it copies the payload into the answer itself). It
// parses every 2xx body with JSON.parse (so a 2xx needs a JSON body unless it is a 204 or
// the method discards it), throws `ApiException` with `.code` = the HTTP status and `.body`
// = the parsed JSON for a 4xx, and the raw text for a 5xx.
//
// The Herald behaviours relied on are the ones clients/python/tests/test_svix_sdk.py lists
// (H1–H13); each test names the ones it uses. Receivers check signatures the way Svix's docs
// tell consumers to: `new Webhook(secret).verify(rawBody, headers)` from this same package.
//
// Everything talks to 127.0.0.1 only: Herald from the script, the receivers below.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { randomBytes, webcrypto } from "node:crypto";

// The SDK calls the global `crypto.randomUUID()` for idempotency keys; Node < 19 (Debian
// 12's nodejs is 18) has no global `crypto` without a flag.
globalThis.crypto ??= webcrypto;

const { ApiException, MessageAttemptTriggerType, MessageStatus, Svix, Webhook, WebhookVerificationError } =
  await import("svix");

const BASE = process.env.HERALD_URL;
const ADMIN = process.env.HERALD_ADMIN_TOKEN;
if (!BASE || !ADMIN) throw new Error("HERALD_URL and HERALD_ADMIN_TOKEN must be set (scripts/svix-node-tests.sh)");
const WAIT_MS = 30_000;
const TIMEOUT = { timeout: 90_000 };

// No SDK retries (an empty schedule): a 5xx from Herald must fail the test, not be retried.
const svix = new Svix(ADMIN, { serverUrl: BASE, retryScheduleInMs: [], requestTimeout: 15_000 });

const SIGNUP = "user.signup";
const INVOICE = "invoice.paid";
const uniq = (prefix) => `${prefix}-${randomBytes(5).toString("hex")}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, fn, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
    await sleep(50);
  }
}

/** Runs `fn`, expects it to throw the SDK's ApiException with HTTP status `status`. */
async function rejectsWith(status, fn) {
  let caught;
  try {
    await fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught, `expected an ApiException ${status}, the call succeeded`);
  assert.ok(caught instanceof ApiException, `expected an ApiException ${status}, got ${caught && caught.stack}`);
  assert.equal(caught.code, status, `expected HTTP ${status}, got ${caught.code}: ${JSON.stringify(caught.body)}`);
  return caught;
}

// ----- loopback receivers ----------------------------------------------------------------

/**
 * A webhook receiver on 127.0.0.1. Once `secret` is set it answers 401 unless
 * `new Webhook(secret).verify(body, headers)` accepts the request (failures are kept in
 * `failures`); otherwise it answers `status` (200 unless changed).
 */
class Receiver {
  constructor() {
    this.requests = [];
    this.failures = [];
    this.secret = null;
    this.status = 200;
    this.server = http.createServer((req, res) => {
      const chunks = [];
      req.on("data", (c) => chunks.push(c));
      req.on("end", () => {
        const body = Buffer.concat(chunks).toString("utf8");
        let status = this.status;
        if (this.secret !== null) {
          try {
            new Webhook(this.secret).verify(body, req.headers);
          } catch (e) {
            this.failures.push(`${e.name}: ${e.message}`);
            status = 401;
          }
        }
        this.requests.push({ method: req.method, path: req.url, headers: req.headers, body, status });
        res.writeHead(status, { "content-type": "text/plain" });
        res.end(status < 300 ? "ok" : "refused");
      });
    });
  }

  async start() {
    await new Promise((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${this.server.address().port}`;
    return this;
  }

  for(msgId) {
    return this.requests.filter((r) => r.headers["svix-id"] === msgId);
  }

  async waitFor(n, what = `${n} request(s)`) {
    await until(`the receiver to get ${what}`, () => this.requests.length >= n);
    return this.requests;
  }

  close() {
    this.server.closeAllConnections?.();
    this.server.close();
  }
}

const receivers = [];
async function receiver() {
  const r = await new Receiver().start();
  receivers.push(r);
  return r;
}
after(() => receivers.forEach((r) => r.close()));

function verifies(secret, rec) {
  try {
    new Webhook(secret).verify(rec.body, rec.headers);
    return true;
  } catch (e) {
    if (e instanceof WebhookVerificationError) return false;
    throw e;
  }
}

// ----- shared setup ----------------------------------------------------------------------

// The event-type catalog (Svix refuses filterTypes naming types that do not exist). Event
// types are global, and the script gives Herald a fresh data directory, so fixed names work.
let catalog;
before(async () => {
  catalog = {
    signup: await svix.eventType.create({ name: SIGNUP, description: "A user signed up" }),
    invoice: await svix.eventType.create({ name: INVOICE, description: "An invoice was paid" }),
  };
});

async function newApp() {
  const uid = uniq("node");
  return svix.application.getOrCreate({ name: `Tenant ${uid}`, uid });
}

/** An app with one endpoint at a fresh receiver whose signature check is on. */
async function appWithEndpoint(path = "/hook", endpointIn = {}) {
  const app = await newApp();
  const rx = await receiver();
  const ep = await svix.endpoint.create(app.id, { url: rx.url + path, ...endpointIn });
  const { key } = await svix.endpoint.getSecret(app.id, ep.id);
  rx.secret = key;
  return { app, rx, ep, secret: key };
}

async function attemptsByMsg(appId, msgId) {
  return (await svix.messageAttempt.listByMsg(appId, msgId, { limit: 50 })).data;
}

const isSuccess = (a, trigger) =>
  a.status === MessageStatus.Success && (trigger === undefined || a.triggerType === trigger);

// ----- tests -----------------------------------------------------------------------------

test("application.getOrCreate with a uid twice returns the same application (H1, H2)", TIMEOUT, async () => {
  const uid = uniq("acme");
  const first = await svix.application.getOrCreate({ name: "Acme Corp", uid, metadata: { plan: "pro" } });
  assert.match(first.id, /^app_/);
  assert.equal(first.uid, uid);
  assert.equal(first.name, "Acme Corp");
  assert.deepEqual(first.metadata, { plan: "pro" });
  assert.ok(first.createdAt instanceof Date && !Number.isNaN(first.createdAt.getTime()));

  // Svix answers the existing application unchanged: the new name is ignored.
  const again = await svix.application.getOrCreate({ name: "Renamed", uid });
  assert.equal(again.id, first.id);
  assert.equal(again.name, "Acme Corp");

  assert.equal((await svix.application.get(uid)).id, first.id);
  assert.equal((await svix.application.get(first.id)).uid, uid);
  await rejectsWith(409, () => svix.application.create({ name: "Duplicate", uid }));
});

test("eventType.create, get and list; a duplicate name is a 409 (H3)", TIMEOUT, async () => {
  assert.equal(catalog.signup.name, SIGNUP);
  assert.equal(catalog.signup.description, "A user signed up");
  assert.equal(catalog.signup.deprecated, false);
  assert.equal((await svix.eventType.get(INVOICE)).description, "An invoice was paid");
  const names = (await svix.eventType.list()).data.map((e) => e.name);
  assert.ok(names.includes(SIGNUP) && names.includes(INVOICE), `event types listed: ${names}`);
  await rejectsWith(409, () => svix.eventType.create({ name: SIGNUP, description: "again" }));
});

test("endpoint with filterTypes and custom headers: only the filtered type arrives, signed (H4, H5)", TIMEOUT, async () => {
  const app = await newApp();
  const rx = await receiver();
  const url = rx.url + "/signups";
  const ep = await svix.endpoint.create(app.id, {
    url,
    uid: "signups",
    description: "Sign-ups only",
    filterTypes: [SIGNUP],
    headers: { "X-Tenant-Ref": "acme", Authorization: "Bearer receiver-token" },
    metadata: { team: "growth" },
  });
  assert.match(ep.id, /^ep_/);
  assert.equal(ep.url, url);
  assert.equal(ep.uid, "signups");
  assert.equal(ep.description, "Sign-ups only");
  assert.deepEqual(ep.filterTypes, [SIGNUP]);
  assert.deepEqual(ep.metadata, { team: "growth" });
  assert.equal(ep.version, 1);
  assert.ok(!ep.disabled);
  assert.equal((await svix.endpoint.get(app.id, "signups")).id, ep.id);

  const hdrs = await svix.endpoint.getHeaders(app.id, ep.id);
  assert.deepEqual(
    Object.fromEntries(Object.entries(hdrs.headers).map(([k, v]) => [k.toLowerCase(), v])),
    { "x-tenant-ref": "acme" },
  );
  assert.deepEqual(hdrs.sensitive.map((s) => s.toLowerCase()), ["authorization"]);

  const { key } = await svix.endpoint.getSecret(app.id, ep.id);
  assert.match(key, /^whsec_[A-Za-z0-9+/=]+$/);
  assert.ok(Buffer.from(key.slice("whsec_".length), "base64").length >= 24);
  rx.secret = key;

  const other = await svix.message.create(app.id, { eventType: INVOICE, payload: { invoice: "in_1" } });
  const payload = { user_id: "u_42", email: "jane@example.com", name: "김민준", tags: ["a", "b"] };
  const msg = await svix.message.create(app.id, { eventType: SIGNUP, payload });
  assert.match(msg.id, /^msg_/);
  assert.equal(msg.eventType, SIGNUP);

  await rx.waitFor(1);
  await sleep(500); // room for a wrongly routed invoice delivery to show up
  assert.deepEqual(rx.for(other.id), [], "the invoice message must not reach a sign-ups-only endpoint");
  assert.equal(rx.requests.length, 1);
  const [rec] = rx.requests;
  assert.deepEqual(rx.failures, []);
  assert.equal(rec.status, 200);
  assert.equal(rec.method, "POST");
  assert.equal(rec.path, "/signups");
  assert.equal(rec.headers["svix-id"], msg.id);
  assert.ok(Math.abs(Number(rec.headers["svix-timestamp"]) - Date.now() / 1000) < 300);
  assert.match(rec.headers["svix-signature"], /^v1,[A-Za-z0-9+/=]+$/);
  assert.match(rec.headers["content-type"], /^application\/json/);
  assert.equal(rec.headers["x-tenant-ref"], "acme");
  assert.equal(rec.headers["authorization"], "Bearer receiver-token");
  assert.deepEqual(JSON.parse(rec.body), payload); // the payload itself is the body
  // The SDK's own verifier, on the raw body: it returns the parsed payload.
  assert.deepEqual(new Webhook(key).verify(rec.body, rec.headers), payload);
});

test("message.create with an eventId twice: the second is a 409 and the receiver gets one request (H5, H6)", TIMEOUT, async () => {
  const { app, rx } = await appWithEndpoint("/once", { filterTypes: [SIGNUP] });
  const eventId = uniq("evt");

  const first = await svix.message.create(app.id, { eventType: SIGNUP, eventId, payload: { n: 1 } });
  assert.equal(first.eventId, eventId);
  const err = await rejectsWith(409, () =>
    svix.message.create(app.id, { eventType: SIGNUP, eventId, payload: { n: 2 } }),
  );
  assert.equal(typeof err.body.code, "string");
  assert.equal(typeof err.body.detail, "string");

  await rx.waitFor(1);
  await sleep(1000);
  assert.equal(rx.requests.length, 1, `requests: ${JSON.stringify(rx.requests.map((r) => r.body))}`);
  const [rec] = rx.requests;
  assert.equal(rec.headers["svix-id"], first.id);
  assert.deepEqual(JSON.parse(rec.body), { n: 1 });
  assert.equal(rec.status, 200, rx.failures.join("; "));

  const byEventId = await svix.message.get(app.id, eventId);
  assert.equal(byEventId.id, first.id);
  assert.deepEqual(byEventId.payload, { n: 1 });
});

test("messageAttempt.listByMsg and listByEndpoint show the successful attempt (H7)", TIMEOUT, async () => {
  const { app, rx, ep } = await appWithEndpoint("/attempts");
  const msg = await svix.message.create(app.id, { eventType: SIGNUP, payload: { attempt: 1 } });

  const attempts = await until("a successful attempt", async () => {
    const a = await attemptsByMsg(app.id, msg.id);
    return a.some((x) => isSuccess(x)) && a;
  });
  assert.equal(attempts.length, 1);
  const [att] = attempts;
  assert.match(att.id, /^atmpt_/);
  assert.equal(att.msgId, msg.id);
  assert.equal(att.endpointId, ep.id);
  assert.equal(att.url, rx.url + "/attempts");
  assert.equal(att.status, MessageStatus.Success); // 0
  assert.equal(att.statusText, "success");
  assert.equal(att.responseStatusCode, 200);
  assert.equal(att.triggerType, MessageAttemptTriggerType.Scheduled); // 0
  assert.equal(typeof att.response, "string");
  assert.ok(att.responseDurationMs >= 0);
  assert.ok(att.timestamp instanceof Date && !Number.isNaN(att.timestamp.getTime()));

  const byEp = await svix.messageAttempt.listByEndpoint(app.id, ep.id, { limit: 10 });
  const mine = byEp.data.find((a) => a.id === att.id);
  assert.ok(mine, `listByEndpoint has no ${att.id}: ${JSON.stringify(byEp.data)}`);
  assert.equal(mine.status, MessageStatus.Success);
  assert.equal(mine.msgId, msg.id);
  assert.equal(typeof byEp.done, "boolean");

  assert.equal((await svix.messageAttempt.get(app.id, msg.id, att.id)).id, att.id);
});

test("messageAttempt.resend: the receiver sees the same svix-id again, as a manual attempt (H7, H8)", TIMEOUT, async () => {
  const { app, rx, ep } = await appWithEndpoint("/resend");
  const msg = await svix.message.create(app.id, { eventType: SIGNUP, payload: { resend: true } });
  await until("the first successful attempt", async () => (await attemptsByMsg(app.id, msg.id)).some((a) => isSuccess(a)));

  await svix.messageAttempt.resend(app.id, msg.id, ep.id);
  await rx.waitFor(2, "the resent request");
  const [first, again] = rx.requests;
  assert.equal(first.headers["svix-id"], msg.id);
  assert.equal(again.headers["svix-id"], msg.id);
  assert.equal(again.body, first.body);
  assert.equal(again.status, 200, rx.failures.join("; "));

  const attempts = await until("the manual attempt", async () => {
    const a = await attemptsByMsg(app.id, msg.id);
    return a.some((x) => isSuccess(x, MessageAttemptTriggerType.Manual)) && a;
  });
  assert.equal(attempts.length, 2);
  assert.equal(attempts[0].triggerType, MessageAttemptTriggerType.Manual); // 1, newest first
  assert.equal(attempts[1].triggerType, MessageAttemptTriggerType.Scheduled);
  assert.notEqual(attempts[0].id, attempts[1].id);
});

test("endpoint.rotateSecret: during the overlap two v1 signatures, old and new secrets verify (H5, H9)", TIMEOUT, async () => {
  const { app, rx, ep, secret: old } = await appWithEndpoint("/rotate");
  await svix.endpoint.rotateSecret(app.id, ep.id, {});
  const { key: fresh } = await svix.endpoint.getSecret(app.id, ep.id);
  assert.match(fresh, /^whsec_/);
  assert.notEqual(fresh, old);
  rx.secret = fresh;

  const msg = await svix.message.create(app.id, { eventType: SIGNUP, payload: { rotated: true } });
  const [rec] = await rx.waitFor(1);
  assert.equal(rec.headers["svix-id"], msg.id);
  assert.equal(rec.status, 200, rx.failures.join("; "));
  const sigs = rec.headers["svix-signature"].split(" ");
  assert.equal(sigs.length, 2, `svix-signature: ${rec.headers["svix-signature"]}`);
  assert.ok(sigs.every((s) => s.startsWith("v1,")));
  assert.ok(verifies(fresh, rec), "the new secret verifies");
  assert.ok(verifies(old, rec), "the old secret still verifies during the grace period");

  // The current secret's signature comes first.
  const ts = new Date(Number(rec.headers["svix-timestamp"]) * 1000);
  assert.equal(sigs[0], new Webhook(fresh).sign(msg.id, ts, rec.body));
  assert.equal(sigs[1], new Webhook(old).sign(msg.id, ts, rec.body));
  assert.ok(!verifies(`whsec_${randomBytes(24).toString("base64")}`, rec), "an unrelated secret does not verify");
});

test("endpoint.recover re-sends what failed while the receiver answered 400 (H7, H10)", TIMEOUT, async () => {
  const { app, rx, ep } = await appWithEndpoint("/recover");
  rx.status = 400;
  const since = new Date(Date.now() - 10 * 60_000);
  const msg = await svix.message.create(app.id, { eventType: SIGNUP, payload: { recover: true } });

  const failed = await until("a failed attempt", async () =>
    (await attemptsByMsg(app.id, msg.id)).find((a) => a.status === MessageStatus.Fail),
  );
  assert.equal(failed.responseStatusCode, 400);
  assert.equal(failed.statusText, "fail");
  assert.equal(failed.triggerType, MessageAttemptTriggerType.Scheduled);

  rx.status = 200;
  const task = await svix.endpoint.recover(app.id, ep.id, { since });
  assert.match(task.id, /^qtask_/);
  assert.equal(task.task, "endpoint.recover");
  assert.ok(["running", "finished"].includes(task.status), `task status ${task.status}`);

  await until("the recovered delivery", () => rx.for(msg.id).some((r) => r.status === 200));
  const attempts = await until("a successful manual attempt", async () => {
    const a = await attemptsByMsg(app.id, msg.id);
    return a.some((x) => isSuccess(x, MessageAttemptTriggerType.Manual)) && a;
  });
  assert.ok(attempts.some((a) => a.status === MessageStatus.Fail));
  assert.deepEqual(rx.failures, []);
  assert.ok(rx.for(msg.id).every((r) => JSON.parse(r.body).recover === true));
});

test("an unknown application is a 404 (H12)", TIMEOUT, async () => {
  const missing = uniq("no-such-app");
  const err = await rejectsWith(404, () => svix.application.get(missing));
  assert.equal(typeof err.body.code, "string");
  assert.ok(err.body.code);
  await rejectsWith(404, () => svix.endpoint.list(missing));
  await rejectsWith(404, () => svix.message.create(missing, { eventType: SIGNUP, payload: { lost: true } }));
});

test("health answers 2xx; app portal access gives a link that opens the portal (H1, H11)", TIMEOUT, async () => {
  await svix.health.get();
  const app = await newApp();
  const access = await svix.authentication.appPortalAccess(app.id, {});
  assert.ok(access.url.includes("/portal/access?token="), access.url);
  assert.ok(access.token && access.url.includes(access.token));
  // The link sets the portal's session cookie and sends the browser to the portal.
  const res = await fetch(access.url, { redirect: "manual" });
  assert.equal(res.status, 303);
  assert.match(res.headers.get("set-cookie") || "", /^herald_portal=/);
  assert.equal(res.headers.get("location"), "/portal");
});