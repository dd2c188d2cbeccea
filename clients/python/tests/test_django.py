"""Django + DRF with the real packages: failing views → Herald → a loopback Slack fake.

The test project (tests/django_app) uses exactly the documented settings: HeraldHandler on
the ``django.request`` logger and ``herald.django.exception_handler`` as DRF's
EXCEPTION_HANDLER. Each test uses its own service name and Slack destination, so groups,
alert windows and deliveries do not mix between tests.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import uuid
from typing import Any, Dict, Iterator, List

import pytest

django = pytest.importorskip("django", reason="Django is installed by scripts/python-tests.sh")
pytest.importorskip("rest_framework", reason="djangorestframework is installed by scripts/python-tests.sh")

import herald.django as hd  # noqa: E402
from support import BlackHole, HeraldServer, Receiver, run_python, wait_until  # noqa: E402


@pytest.fixture(scope="module")
def django_project(herald_server: HeraldServer, send_token: str) -> Iterator[Any]:
    os.environ["DJANGO_SETTINGS_MODULE"] = "django_app.settings"
    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.management import call_command

    settings.HERALD_URL = herald_server.url
    settings.HERALD_TOKEN = send_token
    call_command("migrate", verbosity=0)
    User.objects.create_user("alice", "alice@example.com", "correct horse")
    yield settings
    hd.flush(5)


def _handler() -> hd.HeraldHandler:
    (h,) = [h for h in logging.getLogger("django.request").handlers if isinstance(h, hd.HeraldHandler)]
    return h


def _senders():
    return (hd._sender(), _handler().sender)


def _flush(app: Dict[str, Any]) -> None:
    """Waits until both senders handled their reports, and checks that Herald took them."""
    assert hd.flush(15) and _handler().sender.flush(15)
    for sender, before in zip(_senders(), app["failed_before"]):
        assert sender.failed == before, f"Herald did not take a report: {sender.last_error}"


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def app(django_project, herald_server, slack):
    """A fresh service name and a Slack destination (the fake) that its alerts go to."""
    from django.test import override_settings

    name = f"slack-{uuid.uuid4().hex[:8]}"
    herald_server.put_destination(name, {"kind": "slack", "url": slack.url + "/services/T000/B000/XXXX"})
    service = f"shop-{uuid.uuid4().hex[:8]}"
    with override_settings(HERALD_SERVICE=service, HERALD_TO=[name]):
        yield {"service": service, "destination": name, "failed_before": [s.failed for s in _senders()]}


def _groups(server: HeraldServer, service: str) -> List[Dict[str, Any]]:
    return [g for g in server.error_groups() if g.get("service") == service]


def _alert_text(slack: Receiver) -> str:
    (alert,) = slack.wait_for(1)
    return json.dumps(alert.json(), ensure_ascii=False)


def test_drf_view_that_raises_alerts_slack_with_path_method_and_user(app, herald_server, slack):
    from django.test import Client

    resp = Client(raise_request_exception=False).post(
        "/api/orders/42/charge/", HTTP_AUTHORIZATION=_basic("alice", "correct horse")
    )
    assert resp.status_code == 500
    _flush(app)

    text = _alert_text(slack)
    assert "PaymentGatewayError" in text
    assert app["service"] in text
    assert "/api/orders/42/charge/" in text
    assert "POST" in text
    assert "alice" in text
    assert "charge_card" in text  # the innermost in-app frame is shown

    # DRF's handler reported it; Django's own "Internal Server Error" log record of the same
    # exception was not reported a second time.
    (group,) = _groups(herald_server, app["service"])
    assert group["count"] == 1


def test_drf_client_errors_are_not_reported_but_5xx_answers_are(app, herald_server, slack):
    from django.test import Client

    client = Client(raise_request_exception=False)
    assert client.post("/api/cart/", {"quantity": 0}, content_type="application/json").status_code == 400
    assert client.get("/api/inventory/").status_code == 503
    _flush(app)

    text = _alert_text(slack)
    assert "InventoryUnavailable" in text and "/api/inventory/" in text
    groups = _groups(herald_server, app["service"])
    assert len(groups) == 1 and groups[0]["count"] == 1


def test_plain_django_view_is_reported_by_the_logging_handler(app, herald_server, slack):
    from django.contrib.auth.models import User
    from django.test import Client

    client = Client(raise_request_exception=False)
    client.force_login(User.objects.get(username="alice"))
    assert client.get("/reports/legacy/?month=11").status_code == 500
    _flush(app)

    text = _alert_text(slack)
    assert "KeyError" in text
    assert "/reports/legacy/" in text and "GET" in text and "alice" in text
    assert _handler().sender.sent >= 1


def test_handler_never_blocks_or_raises_when_herald_hangs(django_project):
    """Herald accepts connections but never answers: emit() still returns at once, the
    bounded queue drops and counts the overflow, close() gives up after its timeout."""
    hole = BlackHole()
    try:
        handler = hd.HeraldHandler(url=hole.url, token="hrld_x", queue_size=2, timeout=30, flush_timeout=0.2)
        logger = logging.getLogger(f"pytest.hang.{uuid.uuid4().hex}")
        logger.propagate = False
        logger.addHandler(handler)
        for i in range(20):
            try:
                raise RuntimeError(f"boom {i}")
            except RuntimeError:
                logger.exception("failure %d", i)
        assert handler.sender.dropped >= 17
        handler.close()
        logger.removeHandler(handler)
    finally:
        hole.close()
    # The cut connection ends the hung send; let the worker finish inside this test.
    assert handler.sender.flush(30) is True


def test_handler_survives_a_broken_request_object(django_project, herald_server, receiver):
    """A request whose ``user`` raises still yields a report with path and method."""
    herald_server.put_destination("dj-broken", {"kind": "webhook", "url": receiver.url})

    class BrokenRequest:
        method = "DELETE"
        path = "/api/things/9/"

        @property
        def user(self):
            raise RuntimeError("session store down")

        def build_absolute_uri(self):
            raise ValueError("DisallowedHost")

    handler = hd.HeraldHandler(service=f"broken-{uuid.uuid4().hex[:6]}", to="dj-broken")
    record = logging.LogRecord("django.request", logging.ERROR, __file__, 1, "Internal Server Error: %s", ("/api/things/9/",), None)
    record.request = BrokenRequest()
    handler.emit(record)
    handler.close()
    assert handler.sender.failed == 0, handler.sender.last_error
    assert handler.sender.sent == 1
    body = wait_until(lambda: receiver.received(), what="the alert")[0].json()
    text = json.dumps(body)
    assert "/api/things/9/" in text and "DELETE" in text


SHUTDOWN = r"""
import logging, os
from herald.django import HeraldHandler

log = logging.getLogger("worker")
log.addHandler(HeraldHandler(service=os.environ["SERVICE"], to=os.environ["DEST"]))
try:
    {}["missing"]
except KeyError:
    log.exception("job %s failed", 17)
# No flush: the interpreter exits at once; logging.shutdown() closes the handler, which
# sends what is queued before the process ends.
"""


def test_handler_sends_queued_reports_at_interpreter_exit(herald_server, send_token, receiver):
    """Outside Django (a worker script): settings come from the environment."""
    herald_server.put_destination("dj-exit", {"kind": "webhook", "url": receiver.url})
    service = f"worker-{uuid.uuid4().hex[:6]}"
    run_python(
        SHUTDOWN,
        {"HERALD_URL": herald_server.url, "HERALD_TOKEN": send_token, "SERVICE": service, "DEST": "dj-exit"},
    )
    (group,) = [g for g in herald_server.error_groups() if g.get("service") == service]
    assert group["title"].startswith("KeyError")
    body = json.dumps(receiver.wait_for(1)[0].json())
    assert "KeyError" in body and "job 17 failed" in body
