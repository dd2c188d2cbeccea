"""The real `apprise` package's Apprise API plugin (apprise:// URLs) pointed at `herald serve`.

What apprise 2.x sends (its plugins/apprise_api.py, NotifyAppriseAPI): by default
(`version=2`) `POST /notify` with the key in the `X-Apprise-Config-ID` header; with
`?version=1` `POST /notify/{key}`. The body is a form (`body`, `title`, `type`, `format`,
`tag`) unless `?method=json`. It counts only a 200 answer as delivered.

Herald's side: the key is a `send` token (the URL a user configures is
`apprise://herald-host:port/<token>`); the message goes to the destinations tagged with the
token's name, narrowed by apprise's `tags`.
"""

from __future__ import annotations

import uuid

import pytest

apprise = pytest.importorskip("apprise", reason="apprise is installed by scripts/python-tests.sh")


@pytest.fixture
def keyed(herald_server, receiver):
    """A `send` token whose name is the key, and a webhook destination tagged with it."""
    key = f"ops-{uuid.uuid4().hex[:6]}"
    token = herald_server.token(["send"], name=key)
    herald_server.put_destination(f"apprise-{key}", {"kind": "webhook", "url": receiver.url, "tags": [key]})
    return {"key": key, "token": token, "receiver": receiver}


def apprise_url(server, token: str, query: str = "") -> str:
    return f"apprise://127.0.0.1:{server.port}/{token}" + (f"?{query}" if query else "")


@pytest.mark.parametrize(
    "query",
    ["", "version=1", "method=json", "method=json&version=1"],
    ids=["v2-form", "v1-form", "v2-json", "v1-json"],
)
def test_apprise_notify_is_delivered(herald_server, keyed, query):
    a = apprise.Apprise()
    assert a.add(apprise_url(herald_server, keyed["token"], query))
    ok = a.notify(body="디스크 91% on db-1 💾", title="Disk almost full", notify_type=apprise.NotifyType.WARNING)
    assert bool(ok) is True  # apprise saw a 200

    (req,) = keyed["receiver"].wait_for(1)
    body = req.json()
    assert body["text"] == "디스크 91% on db-1 💾"
    assert body["title"] == "Disk almost full"
    assert body["severity"] == "warning"
    assert body["type"] == "notify.warning"


def test_apprise_tags_narrow_the_destinations(herald_server, keyed, slack):
    # A second destination with the same key but another tag must not get the message.
    herald_server.put_destination(f"apprise-{keyed['key']}-web", {"kind": "webhook", "url": slack.url, "tags": [keyed["key"], "web"]})
    herald_server.put_destination(f"apprise-{keyed['key']}", {"kind": "webhook", "url": keyed["receiver"].url, "tags": [keyed["key"], "db"]})
    a = apprise.Apprise()
    a.add(apprise_url(herald_server, keyed["token"], "version=1&tags=db"))
    assert bool(a.notify(body="backup failed", notify_type=apprise.NotifyType.FAILURE)) is True
    (req,) = keyed["receiver"].wait_for(1)
    assert req.json()["severity"] == "error"
    assert herald_server.deliveries(f"apprise-{keyed['key']}-web") == []


def test_apprise_with_a_wrong_token_fails(herald_server, keyed):
    wrong = apprise.Apprise()
    wrong.add(apprise_url(herald_server, "hrld_not_a_token", "version=1"))
    assert bool(wrong.notify(body="must not arrive")) is False
    assert herald_server.deliveries(f"apprise-{keyed['key']}") == []


def test_apprise_basic_auth_url_with_the_tag_as_key(herald_server, keyed):
    a = apprise.Apprise()
    url = f"apprise://airflow:{keyed['token']}@127.0.0.1:{herald_server.port}/{keyed['key']}?version=1"
    assert a.add(url)
    assert bool(a.notify(body="ETL failed: 3 rows rejected", title="ETL")) is True
    (req,) = keyed["receiver"].wait_for(1)
    assert (req.json()["text"], req.json()["severity"]) == ("ETL failed: 3 rows rejected", "info")


def test_apprise_command_line(herald_server, keyed):
    import subprocess
    import sys
    from pathlib import Path

    cli = Path(sys.executable).with_name("apprise")
    url = apprise_url(herald_server, keyed["token"], "version=1")
    proc = subprocess.run([str(cli), "-t", "Disk almost full", "-b", "db-1 at 91%", url], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (req,) = keyed["receiver"].wait_for(1)
    assert (req.json()["title"], req.json()["text"]) == ("Disk almost full", "db-1 at 91%")
