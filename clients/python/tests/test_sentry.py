"""The real sentry-sdk pointed at a real `herald serve` (DSN http://<send token>@127.0.0.1:<port>/<project>).

Sentry keeps process-global state (hub, transport thread, integrations), so each scenario
runs in a fresh interpreter, as an application would.
"""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path

import pytest

pytest.importorskip("sentry_sdk", reason="sentry-sdk is installed by scripts/python-tests.sh")

from support import run_python, wait_until  # noqa: E402

TESTS_DIR = Path(__file__).resolve().parent


@pytest.fixture
def alerts(herald_server, slack):
    """A Slack destination taking every `error.reported` alert (Sentry events carry no `to`)."""
    name = f"sentry-slack-{uuid.uuid4().hex[:8]}"
    herald_server.put_destination(
        name, {"kind": "slack", "url": slack.url + "/services/T000/B000/XXXX", "events": ["error.reported"]}
    )
    yield slack
    herald_server.api("DELETE", f"/api/v1/destinations/{name}")


def _dsn(server, token: str, project: int) -> str:
    return f"http://{token}@127.0.0.1:{server.port}/{project}"


PLAIN = r"""
import os, sentry_sdk
sentry_sdk.init(dsn=os.environ["SENTRY_DSN"], environment="staging", release="shop@1.2.3",
                default_integrations=False, auto_enabling_integrations=False)
sentry_sdk.set_tag("service", os.environ["SERVICE"])
sentry_sdk.set_user({"id": "7", "username": "alice", "email": "alice@example.com"})

def apply_discount(percent):
    if percent > 100:
        raise ValueError(f"discount above 100%: {percent}")

try:
    apply_discount(120)
except ValueError:
    print(sentry_sdk.capture_exception())
sentry_sdk.flush(timeout=10)
"""


def test_capture_exception_creates_a_group_and_alerts(herald_server, send_token, alerts):
    project = random.randint(1000, 10**9)
    service = f"sentry-{uuid.uuid4().hex[:8]}"
    out = run_python(PLAIN, {"SENTRY_DSN": _dsn(herald_server, send_token, project), "SERVICE": service})
    event_id = out.stdout.strip().splitlines()[-1]
    assert len(event_id) == 32

    groups = wait_until(
        lambda: [g for g in herald_server.error_groups() if g.get("service") == service], what="the Sentry group"
    )
    assert len(groups) == 1

    (alert,) = alerts.wait_for(1)
    text = json.dumps(alert.json(), ensure_ascii=False)
    assert "ValueError" in text and service in text
    assert "discount above 100%: 120" in text
    assert "alice" in text and "staging" in text


DJANGO = r"""
import base64, os, sys, threading, urllib.error, urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server
sys.path.insert(0, os.environ["TESTS_DIR"])
os.environ["DJANGO_SETTINGS_MODULE"] = "django_app.settings_sentry"
import sentry_sdk
from sentry_sdk.integrations.django import DjangoIntegration
sentry_sdk.init(dsn=os.environ["SENTRY_DSN"], integrations=[DjangoIntegration()], send_default_pii=True,
                environment="production")
sentry_sdk.set_tag("service", os.environ["SERVICE"])

import django
django.setup()
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.wsgi import get_wsgi_application

call_command("migrate", verbosity=0)
User.objects.create_user("alice", "alice@example.com", "correct horse")

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

server = make_server("127.0.0.1", 0, get_wsgi_application(), handler_class=Quiet)
threading.Thread(target=server.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{server.server_port}/api/orders/42/charge/"
auth = "Basic " + base64.b64encode(b"alice:correct horse").decode()
req = urllib.request.Request(url, data=b"{}", method="POST",
                             headers={"Authorization": auth, "Content-Type": "application/json"})
try:
    urllib.request.urlopen(req, timeout=30)
    sys.exit("the view did not fail")
except urllib.error.HTTPError as e:
    assert e.code == 500, e.code
server.shutdown()
sentry_sdk.flush(timeout=10)
"""


def test_django_app_with_only_sentry_dsn_alerts_with_path_method_and_user(herald_server, send_token, alerts, tmp_path):
    project = random.randint(1000, 10**9)
    service = f"sentry-dj-{uuid.uuid4().hex[:8]}"
    run_python(
        DJANGO,
        {"SENTRY_DSN": _dsn(herald_server, send_token, project), "SERVICE": service, "TESTS_DIR": str(TESTS_DIR),
         "DJANGO_DB": str(tmp_path / "shop.sqlite3")},
    )
    (alert,) = alerts.wait_for(1)
    text = json.dumps(alert.json(), ensure_ascii=False)
    assert "PaymentGatewayError" in text and service in text
    assert "/api/orders/42/charge/" in text and "POST" in text and "alice" in text
    (group,) = [g for g in herald_server.error_groups() if g.get("service") == service]
    assert group["count"] == 1


def test_wrong_key_is_refused(herald_server):
    out = run_python(
        r"""
import os, sentry_sdk
sentry_sdk.init(dsn=os.environ["SENTRY_DSN"], default_integrations=False, auto_enabling_integrations=False, debug=True)
sentry_sdk.capture_message("nobody should see this")
sentry_sdk.flush(timeout=10)
""",
        {"SENTRY_DSN": _dsn(herald_server, "hrld_wrong_key", 5)},
    )
    assert "401" in out.stderr + out.stdout  # sentry-sdk's debug log shows Herald's refusal
    assert not [g for g in herald_server.error_groups() if "nobody should see this" in json.dumps(g)]
