"""The official Svix Python SDK (`svix`, pinned in requirements-test.txt) pointed at `herald serve`.

A team using Svix switches to Herald by changing `SvixOptions(server_url=...)` to Herald's
base URL and using a Herald admin token as the SDK's auth token. What svix 1.99.1 sends
(svix/api/common.py, svix/api/*.py): `Authorization: Bearer <token>`, a `svix-req-id`,
`user-agent: svix-libs/<version>/python …`, and on every POST an `idempotency-key:
auto_<uuid4>` unless the caller gives one; bodies are camelCase JSON of the fields set;
message create always adds `?with_content=false`. It reads every 2xx answer into pydantic
models (a missing required field fails the call), a 422 as `{"detail": [{"loc", "msg",
"type"}]}` and any other error as `{"code", "detail"}` — an error without a JSON body makes
the SDK raise `JSONDecodeError` instead of `HttpError`. /work/svix-spec.md (outside the
repo) has the full route-by-route reference these tests follow.

The Herald behaviour each test relies on (named in each test's docstring):

- H1  The Svix routes live under Herald's `/api/v1` (`/api/v1/app`, `/api/v1/event-type`,
      `/api/v1/auth/...`, `/api/v1/health`) and take the admin token as `Bearer`.
- H2  An application is a tenant: `POST /app?get_if_exists=true` returns the existing tenant
      with that uid unchanged (200) or creates it (201); `{app_id}` is the id or the uid; a
      second create with the same uid is a 409; ids start `app_`.
- H3  Event types: create (201), list (the `{data, iterator, prevIterator, done}` envelope),
      get; a duplicate name is a 409.
- H4  An endpoint is a `webhook` destination of the tenant: `filterTypes` (1.x name; 2.x
      sends `eventTypes`) are exact event-type names that must exist (else 422) and only
      those are delivered; `headers` given at create are sent on every request; GET
      `/headers` moves `Authorization`-like headers to `sensitive`; the answer carries
      `version: 1` (required by SDK 1.x); ids start `ep_`.
- H5  Deliveries are signed Svix-style: `svix-id` (the message id), `svix-timestamp`,
      `svix-signature` (`v1,<base64>` per active secret, current secret first) over
      `"{id}.{timestamp}.{body}"`, and the body is the message `payload` itself (no Herald
      envelope); the generated secret is `whsec_` + base64 of ≥ 24 bytes.
- H6  `eventId` is unique per application: a second create with the same `eventId` (a new
      idempotency key, as every SDK call has) answers 409 like Svix and sends nothing; the
      same `Idempotency-Key` answers the original 202 again. `GET /msg/{eventId}` works.
- H7  Attempts: listed by message and by endpoint (newest first), one by id, and the
      endpoints a message was attempted at; ids start `atmpt_`; `status`/`statusText`
      0/"success" and 2/"fail"; `triggerType` 0 for scheduled delivery, 1 for manual.
- H8  `resend` queues one manual attempt (answer 202 with a JSON object body); the receiver
      sees the same `svix-id` again.
- H9  `secret/rotate` keeps the old secret valid for `gracePeriodSeconds` (default 24 h) and
      signs with both meanwhile; an explicit `key` with grace 0 replaces it at once.
- H10 `recover` (202, `{id: qtask_…, status, task: "endpoint.recover", updatedAt}`) re-sends,
      as manual attempts, messages whose delivery to the endpoint failed since `since`; a
      4xx answer is a failure (Herald stops retrying it: a permanent failure).
- H11 `POST /auth/app-portal-access/{app_id}` answers `{url, token}`: the URL opens the
      customer portal for that app; an unknown app is 404.
- H12 Errors use Svix's shapes: `{"code", "detail"}` (401 for a wrong token, 404 unknown
      id, 409 conflict), 422 `{"detail": [{"loc", "msg", "type"}]}`; a Svix route Herald does
      not implement answers 404 or 501 with a JSON `{"code", "detail"}` body — never 500,
      never an empty body.
- H13 `send-example` sends the event type's first schema example to that endpoint only.

Everything talks to 127.0.0.1 only (Herald from conftest's `herald_server`, receivers from
support.Receiver).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import time
import urllib.error
import urllib.request
import uuid
from typing import Iterator, List, Optional

import pytest

svix = pytest.importorskip("svix", reason="svix is installed by scripts/python-tests.sh")

from svix.api import (  # noqa: E402
    ApplicationListOptions,
    MessageAttemptListByEndpointOptions,
    MessageAttemptListByMsgOptions,
    MessageCreateOptions,
    MessageListOptions,
    Svix,
    SvixOptions,
)
from svix.exceptions import HttpError, HTTPValidationError  # noqa: E402
from svix.models import (  # noqa: E402
    AppPortalAccessIn,
    ApplicationIn,
    BackgroundTaskStatus,
    BackgroundTaskType,
    EndpointIn,
    EndpointSecretRotateIn,
    EventExampleIn,
    EventTypeIn,
    MessageAttemptTriggerType,
    MessageIn,
    MessageStatus,
    MessageStatusText,
    RecoverIn,
)
from svix.webhooks import Webhook, WebhookVerificationError  # noqa: E402

from support import ADMIN_TOKEN, HeraldServer, Receiver, Recorded, wait_until  # noqa: E402

# SDK 1.x calls the endpoint's event filter `filter_types` (JSON `filterTypes`), 2.x
# `event_types` (`eventTypes`); the tests use whichever the installed SDK has.
FILTER_FIELD = "filter_types" if "filter_types" in EndpointIn.model_fields else "event_types"

SIGNUP = "user.signup"
INVOICE = "invoice.paid"
SIGNUP_EXAMPLE = {"user_id": "u_1", "email": "jane@example.com", "name": "김민준"}


# ---- fixtures and helpers ----


def make_client(server: HeraldServer, token: str = ADMIN_TOKEN) -> Svix:
    # No SDK retries: a 5xx from Herald must fail the test, not be papered over.
    return Svix(token, SvixOptions(server_url=server.url, retry_schedule=[], timeout=15.0))


@pytest.fixture(scope="module")
def sx(herald_server: HeraldServer) -> Svix:
    return make_client(herald_server)


@pytest.fixture(scope="module")
def event_types(sx: Svix) -> List[str]:
    """The catalog the endpoints filter on (Svix refuses filterTypes that do not exist)."""
    schema = {"1": {"type": "object", "title": "UserSignup", "examples": [SIGNUP_EXAMPLE]}}
    sx.event_type.create(EventTypeIn(name=SIGNUP, description="A user signed up", schemas=schema))
    sx.event_type.create(EventTypeIn(name=INVOICE, description="An invoice was paid"))
    return [SIGNUP, INVOICE]


@pytest.fixture
def app(sx: Svix):
    uid = f"pytest-{uuid.uuid4().hex[:12]}"
    return sx.application.get_or_create(ApplicationIn(name=f"Tenant {uid}", uid=uid))


class Verifier:
    """A receiver's check, as a consumer following Svix's docs writes it: answer 401 unless
    `svix.webhooks.Webhook(secret).verify(body, headers)` accepts the request."""

    def __init__(self) -> None:
        self.secret: Optional[str] = None
        self.failures: List[str] = []

    def __call__(self, rec: Recorded) -> Optional[int]:
        if self.secret is None:
            return None
        try:
            Webhook(self.secret).verify(rec.body, rec.headers)
        except (WebhookVerificationError, ValueError) as e:  # ValueError: a non-JSON body (1.x parses it)
            self.failures.append(f"{type(e).__name__}: {e}")
            return 401
        return None


@pytest.fixture
def hook() -> Iterator[Receiver]:
    """A loopback receiver that verifies signatures with `hook.verifier.secret` once set."""
    verifier = Verifier()
    r = Receiver(check=verifier)
    r.verifier = verifier  # type: ignore[attr-defined]
    try:
        yield r
    finally:
        r.close()


def endpoint_in(url: str, types: Optional[List[str]] = None, **kw) -> EndpointIn:
    if types is not None:
        kw[FILTER_FIELD] = types
    return EndpointIn(url=url, **kw)


def filter_of(ep) -> Optional[List[str]]:
    return getattr(ep, FILTER_FIELD)


def signatures(rec: Recorded) -> List[str]:
    return rec.headers["svix-signature"].split(" ")


def verifies(secret: str, rec: Recorded) -> bool:
    try:
        Webhook(secret).verify(rec.body, rec.headers)
        return True
    except WebhookVerificationError:
        return False


def requests_for(receiver: Receiver, msg_id: str) -> List[Recorded]:
    return [r for r in receiver.received() if r.headers.get("svix-id") == msg_id]


def wait_attempts(sx: Svix, app_id: str, msg_id: str, pred, what: str):
    """Polls the message's attempts until `pred(attempts)` holds; returns them."""

    def check():
        attempts = sx.message_attempt.list_by_msg(app_id, msg_id, MessageAttemptListByMsgOptions(limit=50)).data
        return attempts if pred(attempts) else None

    return wait_until(check, what=what)


def succeeded(attempts, trigger=None) -> list:
    return [
        a
        for a in attempts
        if a.status == MessageStatus.SUCCESS and (trigger is None or a.trigger_type == trigger)
    ]


def raw_get(server: HeraldServer, path: str, token: str = ADMIN_TOKEN):
    """`GET path` without the SDK: (status, content-type, body bytes)."""
    req = urllib.request.Request(server.url + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("content-type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read()


# ---- applications and event types ----


def test_application_get_or_create_and_lookup_by_id_or_uid(sx):
    """H1, H2."""
    uid = f"acme-{uuid.uuid4().hex[:8]}"
    created = sx.application.get_or_create(ApplicationIn(name="Acme Corp", uid=uid, metadata={"plan": "pro"}))
    assert created.id.startswith("app_")
    assert created.uid == uid and created.name == "Acme Corp" and created.metadata == {"plan": "pro"}

    # Svix returns the existing application unchanged: the new name is ignored.
    again = sx.application.get_or_create(ApplicationIn(name="Renamed", uid=uid))
    assert again.id == created.id and again.name == "Acme Corp"

    assert sx.application.get(created.id).uid == uid
    assert sx.application.get(uid).id == created.id

    with pytest.raises(HttpError) as info:
        sx.application.create(ApplicationIn(name="Duplicate", uid=uid))
    assert info.value.status_code == 409

    listed = sx.application.list(ApplicationListOptions(limit=250))
    assert created.id in [a.id for a in listed.data]
    assert isinstance(listed.done, bool)


def test_message_create_can_create_its_application(sx, event_types):
    """H2, H6: `MessageIn.application` creates the application named by the path's uid."""
    uid = f"inline-{uuid.uuid4().hex[:8]}"
    msg = sx.message.create(uid, MessageIn(event_type=SIGNUP, payload={"n": 1}, application=ApplicationIn(name="Inline", uid=uid)))
    assert msg.id.startswith("msg_")
    assert sx.application.get(uid).name == "Inline"


def test_event_types_create_list_get(sx, event_types):
    """H1, H3."""
    listed = sx.event_type.list()
    names = [e.name for e in listed.data]
    assert SIGNUP in names and INVOICE in names
    assert listed.done is True and listed.iterator is not None

    got = sx.event_type.get(SIGNUP)
    assert got.description == "A user signed up"
    assert got.deprecated is False

    with pytest.raises(HttpError) as info:
        sx.event_type.create(EventTypeIn(name=SIGNUP, description="again"))
    assert info.value.status_code == 409


# ---- endpoints, delivery, signatures ----


def test_endpoint_filter_types_headers_and_signed_delivery(sx, event_types, app, hook):
    """H4, H5: only the filtered event type arrives, with the custom headers, signed with the
    endpoint secret over the payload as body."""
    url = hook.url + "/hook"
    ep = sx.endpoint.create(
        app.id,
        endpoint_in(
            url,
            [SIGNUP],
            uid="signups",
            description="Sign-ups only",
            headers={"X-Tenant-Ref": "acme", "Authorization": "Bearer receiver-token"},
            metadata={"team": "growth"},
        ),
    )
    assert ep.id.startswith("ep_")
    assert ep.url == url and ep.uid == "signups" and ep.description == "Sign-ups only"
    assert filter_of(ep) == [SIGNUP]
    assert ep.metadata == {"team": "growth"}
    assert not ep.disabled
    assert sx.endpoint.get(app.id, "signups").id == ep.id

    hdrs = sx.endpoint.get_headers(app.id, ep.id)
    assert {k.lower(): v for k, v in hdrs.headers.items()} == {"x-tenant-ref": "acme"}
    assert [s.lower() for s in hdrs.sensitive] == ["authorization"]

    secret = sx.endpoint.get_secret(app.id, ep.id).key
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[len("whsec_"):])) >= 24
    hook.verifier.secret = secret

    other = sx.message.create(app.id, MessageIn(event_type=INVOICE, payload={"invoice": "in_1"}))
    payload = {"user_id": "u_42", "email": "jane@example.com", "name": "김민준", "tags": ["a", "b"]}
    msg = sx.message.create(app.id, MessageIn(event_type=SIGNUP, payload=payload))

    hook.wait_for(1)
    time.sleep(0.5)  # room for a wrongly routed delivery of the invoice message to show up
    assert requests_for(hook, other.id) == []
    (rec,) = hook.received()
    assert hook.verifier.failures == [] and rec.status == 200
    assert rec.method == "POST" and rec.path == "/hook"
    assert rec.headers["svix-id"] == msg.id
    assert abs(int(rec.headers["svix-timestamp"]) - time.time()) < 300
    assert all(s.startswith("v1,") for s in signatures(rec))
    assert rec.headers["content-type"].startswith("application/json")
    assert rec.headers["x-tenant-ref"] == "acme"
    assert rec.headers["authorization"] == "Bearer receiver-token"
    assert json.loads(rec.body) == payload  # the payload itself is the body

    assert sx.message_attempt.list_attempted_destinations(app.id, other.id).data == []


def test_unknown_filter_type_is_a_validation_error(sx, event_types, app, hook):
    """H4, H12."""
    with pytest.raises(HTTPValidationError) as info:
        sx.endpoint.create(app.id, endpoint_in(hook.url, ["no.such.type"]))
    assert info.value.status_code == 422
    assert info.value.detail and info.value.detail[0].loc[0] == "body"


def test_event_id_twice_delivers_once(sx, event_types, app, hook):
    """H5, H6: the second create with the same eventId is a 409 (Svix) and sends nothing."""
    ep = sx.endpoint.create(app.id, endpoint_in(hook.url + "/once"))
    hook.verifier.secret = sx.endpoint.get_secret(app.id, ep.id).key
    event_id = f"evt-{uuid.uuid4().hex[:10]}"

    first = sx.message.create(app.id, MessageIn(event_type=SIGNUP, event_id=event_id, payload={"n": 1}))
    assert first.event_id == event_id
    with pytest.raises(HttpError) as info:
        sx.message.create(app.id, MessageIn(event_type=SIGNUP, event_id=event_id, payload={"n": 2}))
    assert info.value.status_code == 409

    hook.wait_for(1)
    time.sleep(1.0)
    (rec,) = hook.received()
    assert rec.headers["svix-id"] == first.id and json.loads(rec.body) == {"n": 1}
    assert rec.status == 200, hook.verifier.failures

    by_event_id = sx.message.get(app.id, event_id)
    assert by_event_id.id == first.id and by_event_id.payload == {"n": 1}
    listed = sx.message.list(app.id, MessageListOptions(event_types=[SIGNUP]))
    assert [m.id for m in listed.data].count(first.id) == 1


def test_same_idempotency_key_returns_the_original_message(sx, event_types, app, hook):
    """H6: with one Idempotency-Key the repeat is answered with the stored 202 (same id), as
    an SDK retry after a lost answer would be, and nothing is sent twice."""
    sx.endpoint.create(app.id, endpoint_in(hook.url))
    key = f"pytest-{uuid.uuid4()}"
    event_id = f"evt-{uuid.uuid4().hex[:10]}"
    body = MessageIn(event_type=SIGNUP, event_id=event_id, payload={"k": key})
    first = sx.message.create(app.id, body, MessageCreateOptions(idempotency_key=key))
    second = sx.message.create(app.id, body, MessageCreateOptions(idempotency_key=key))
    assert second.id == first.id
    hook.wait_for(1)
    time.sleep(1.0)
    assert len(hook.received()) == 1


# ---- attempts, resend, recover ----


def test_attempts_by_message_and_endpoint_and_resend(sx, event_types, app, hook):
    """H7, H8."""
    url = hook.url + "/attempts"
    ep = sx.endpoint.create(app.id, endpoint_in(url))
    hook.verifier.secret = sx.endpoint.get_secret(app.id, ep.id).key
    msg = sx.message.create(app.id, MessageIn(event_type=SIGNUP, payload={"attempt": 1}))

    attempts = wait_attempts(sx, app.id, msg.id, succeeded, "a successful attempt")
    (att,) = attempts
    assert att.id.startswith("atmpt_")
    assert att.msg_id == msg.id and att.endpoint_id == ep.id and att.url == url
    assert att.status == MessageStatus.SUCCESS and att.status_text == MessageStatusText.SUCCESS
    assert att.response_status_code == 200 and att.response_duration_ms >= 0
    assert att.trigger_type == MessageAttemptTriggerType.SCHEDULED
    assert isinstance(att.response, str)

    by_ep = sx.message_attempt.list_by_endpoint(app.id, ep.id, MessageAttemptListByEndpointOptions(limit=10))
    assert att.id in [a.id for a in by_ep.data]
    assert sx.message_attempt.get(app.id, msg.id, att.id).id == att.id

    dests = sx.message_attempt.list_attempted_destinations(app.id, msg.id).data
    assert [d.id for d in dests] == [ep.id]
    assert dests[0].status == MessageStatus.SUCCESS

    sx.message_attempt.resend(app.id, msg.id, ep.id)
    hook.wait_for(2)
    first, again = hook.received()
    assert again.headers["svix-id"] == first.headers["svix-id"] == msg.id
    assert json.loads(again.body) == {"attempt": 1}
    assert again.status == 200, hook.verifier.failures

    attempts = wait_attempts(
        sx, app.id, msg.id, lambda a: succeeded(a, MessageAttemptTriggerType.MANUAL), "the manual attempt"
    )
    assert len(attempts) == 2
    assert attempts[0].trigger_type == MessageAttemptTriggerType.MANUAL  # newest first


def test_recover_resends_failed_messages(sx, event_types, app, hook):
    """H7, H10: the receiver refuses (400), then accepts; recover re-sends as a manual attempt."""
    hook.status = 400
    ep = sx.endpoint.create(app.id, endpoint_in(hook.url + "/recover"))
    hook.verifier.secret = sx.endpoint.get_secret(app.id, ep.id).key
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10)
    msg = sx.message.create(app.id, MessageIn(event_type=SIGNUP, payload={"recover": True}))

    failed = wait_attempts(
        sx, app.id, msg.id, lambda a: [x for x in a if x.status == MessageStatus.FAIL], "a failed attempt"
    )
    assert failed[0].response_status_code == 400
    assert failed[0].status_text == MessageStatusText.FAIL

    hook.status = 200
    task = sx.endpoint.recover(app.id, ep.id, RecoverIn(since=since))
    assert task.id.startswith("qtask_")
    assert task.task == BackgroundTaskType.ENDPOINT_RECOVER
    assert task.status in (BackgroundTaskStatus.RUNNING, BackgroundTaskStatus.FINISHED)

    wait_until(lambda: [r for r in requests_for(hook, msg.id) if r.status == 200], what="the recovered delivery")
    attempts = wait_attempts(
        sx, app.id, msg.id, lambda a: succeeded(a, MessageAttemptTriggerType.MANUAL), "a manual success"
    )
    assert hook.verifier.failures == []
    assert any(a.status == MessageStatus.FAIL for a in attempts)


# ---- secrets ----


def test_secret_rotation_signs_with_old_and_new_during_grace(sx, event_types, app, hook):
    """H5, H9: after a rotation with the default grace period, svix-signature carries the new
    secret's signature first and the old one's too; both secrets verify."""
    ep = sx.endpoint.create(app.id, endpoint_in(hook.url + "/rotate"))
    old = sx.endpoint.get_secret(app.id, ep.id).key
    sx.endpoint.rotate_secret(app.id, ep.id, EndpointSecretRotateIn())
    new = sx.endpoint.get_secret(app.id, ep.id).key
    assert new.startswith("whsec_") and new != old
    hook.verifier.secret = new

    msg = sx.message.create(app.id, MessageIn(event_type=SIGNUP, payload={"rotated": True}))
    (rec,) = hook.wait_for(1)
    assert rec.headers["svix-id"] == msg.id and rec.status == 200, hook.verifier.failures
    sigs = signatures(rec)
    assert len(sigs) == 2
    assert verifies(new, rec) and verifies(old, rec)

    ts = dt.datetime.fromtimestamp(int(rec.headers["svix-timestamp"]), tz=dt.timezone.utc)
    assert sigs[0] == Webhook(new).sign(msg.id, ts, rec.body)
    assert sigs[1] == Webhook(old).sign(msg.id, ts, rec.body)


def test_rotation_to_a_given_key_without_grace(sx, event_types, app, hook):
    """H5, H9: a secret given at create is kept as is; rotating to a given key with grace 0
    leaves only the new key signing."""
    first = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    second = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    ep = sx.endpoint.create(app.id, endpoint_in(hook.url, secret=first))
    assert sx.endpoint.get_secret(app.id, ep.id).key == first

    sx.endpoint.rotate_secret(app.id, ep.id, EndpointSecretRotateIn(key=second, grace_period_seconds=0))
    assert sx.endpoint.get_secret(app.id, ep.id).key == second
    hook.verifier.secret = second

    sx.message.create(app.id, MessageIn(event_type=SIGNUP, payload={"key": "second"}))
    (rec,) = hook.wait_for(1)
    assert rec.status == 200, hook.verifier.failures
    assert len(signatures(rec)) == 1
    assert verifies(second, rec) and not verifies(first, rec)


# ---- example, portal, health, errors ----


def test_send_example_uses_the_schema_example(sx, event_types, app, hook):
    """H13."""
    ep = sx.endpoint.create(app.id, endpoint_in(hook.url))
    hook.verifier.secret = sx.endpoint.get_secret(app.id, ep.id).key
    msg = sx.endpoint.send_example(app.id, ep.id, EventExampleIn(event_type=SIGNUP))
    assert msg.id.startswith("msg_") and msg.event_type == SIGNUP
    (rec,) = hook.wait_for(1)
    assert rec.headers["svix-id"] == msg.id and rec.status == 200, hook.verifier.failures
    assert json.loads(rec.body) == SIGNUP_EXAMPLE


def test_app_portal_access_and_health(herald_server, sx, app):
    """H1, H11."""
    access = sx.authentication.app_portal_access(app.id, AppPortalAccessIn())
    assert access.url.startswith(f"{herald_server.url}/portal/access?token=")
    assert access.token and access.token in access.url
    # The link opens the customer portal: a session cookie, then the portal's page.
    import http.cookiejar

    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    with opener.open(access.url, timeout=10) as r:
        assert r.status == 200 and r.url.endswith("/portal")
        assert "text/html" in r.headers.get("content-type", "")
        assert b"Endpoints" in r.read()
    with pytest.raises(HttpError) as info:
        sx.authentication.app_portal_access(f"nope-{uuid.uuid4().hex[:8]}", AppPortalAccessIn())
    assert info.value.status_code == 404
    sx.health.get()  # any 2xx


def test_errors_use_svix_shapes(herald_server, sx):
    """H12: 401, 404 and 422 in the bodies the SDK parses."""
    with pytest.raises(HttpError) as info:
        make_client(herald_server, "hrld_not_a_real_token").application.list()
    assert info.value.status_code == 401 and info.value.code

    with pytest.raises(HttpError) as info:
        sx.application.get(f"no-such-app-{uuid.uuid4().hex[:8]}")
    assert info.value.status_code == 404 and info.value.code

    with pytest.raises(HTTPValidationError) as info:
        sx.application.create(ApplicationIn(name="Bad uid", uid="not a valid uid!"))
    assert info.value.status_code == 422
    item = info.value.detail[0]
    assert item.loc[0] == "body" and item.msg and item.type


def test_unimplemented_svix_route_is_a_clean_json_error(herald_server, sx, app):
    """H12: Svix Cloud features Herald does not have answer 404/501 JSON, not 500."""
    with pytest.raises(HttpError) as info:
        sx.integration.list(app.id)
    assert info.value.status_code in (404, 501)
    with pytest.raises(HttpError) as info:
        sx.message.expunge_all_contents(app.id)
    assert info.value.status_code in (404, 501)

    status, content_type, body = raw_get(herald_server, f"/api/v1/app/{app.id}/integration")
    assert status in (404, 501)
    assert "json" in content_type
    doc = json.loads(body)
    assert isinstance(doc.get("code"), str) and doc["code"]
    assert isinstance(doc.get("detail"), str) and doc["detail"]
