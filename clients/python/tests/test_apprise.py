"""The real `apprise` package's Apprise API plugin (apprise:// URLs) pointed at `herald serve`.

What apprise 2.x sends (its plugins/apprise_api.py, NotifyAppriseAPI): by default (version 2)
`POST /notify` with the key in the `X-Apprise-Config-ID` header; with `?version=1`
`POST /notify/{key}`. The body is a form (`body`, `title`, `type`, `format`, `tag`) unless
`?method=json`. It counts only a 200 answer as delivered.
"""

from __future__ import annotations

import uuid

import pytest

apprise = pytest.importorskip("apprise", reason="apprise is installed by scripts/python-tests.sh")


def apprise_url(server, token: str, tag: str, extra: str = "") -> str:
    """The URL a user configures: Herald's host, a `send` token as the key, the tag to route to."""
    return f"apprise://127.0.0.1:{server.port}/{token}?tags={tag}{extra}"


@pytest.mark.parametrize(
    "extra",
    ["", "&version=1", "&method=json", "&method=json&version=1"],
    ids=["v2-form", "v1-form", "v2-json", "v1-json"],
)
def test_apprise_notify_is_delivered(herald_server, send_token, receiver, extra):
    tag = f"ops-{uuid.uuid4().hex[:6]}"
    herald_server.put_destination(f"apprise-{tag}", {"kind": "webhook", "url": receiver.url, "tags": [tag]})

    a = apprise.Apprise()
    assert a.add(apprise_url(herald_server, send_token, tag, extra))
    ok = a.notify(body="디스크 91% on db-1 💾", title="Disk almost full", notify_type=apprise.NotifyType.WARNING)
    assert ok is True  # apprise saw a 200

    (req,) = receiver.wait_for(1)
    body = req.json()
    assert body["text"] == "디스크 91% on db-1 💾"
    assert body["title"] == "Disk almost full"
    assert body["severity"] == "warning"


def test_apprise_failure_type_is_an_error_and_bad_key_fails(herald_server, send_token, receiver):
    tag = f"ops-{uuid.uuid4().hex[:6]}"
    herald_server.put_destination(f"apprise-{tag}", {"kind": "webhook", "url": receiver.url, "tags": [tag]})
    a = apprise.Apprise()
    a.add(apprise_url(herald_server, send_token, tag))
    assert a.notify(body="backup failed", notify_type=apprise.NotifyType.FAILURE) is True
    assert receiver.wait_for(1)[0].json()["severity"] == "error"

    wrong = apprise.Apprise()
    wrong.add(apprise_url(herald_server, "hrld_not_a_token", tag))
    assert wrong.notify(body="must not arrive") is False
    assert [r.json()["text"] for r in receiver.received()] == ["backup failed"]
