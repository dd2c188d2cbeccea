"""herald.Client against a real `herald serve` and loopback receivers."""

from __future__ import annotations

import base64
import uuid

import pytest

import herald
from support import ADMIN_TOKEN, FlakyProxy, HeraldServer, Receiver, free_port


def _hook(server: HeraldServer, receiver: Receiver, name: str) -> None:
    server.put_destination(name, {"kind": "webhook", "url": receiver.url + "/hook", "retry": {"schedule": ["1s"]}})


def test_send_delivers_text_payload_and_attachments(herald_server, send_token, receiver):
    _hook(herald_server, receiver, "py-send")
    client = herald.Client(herald_server.url, send_token)
    accepted = client.send(
        "파이프라인 완료 🎉",
        to="py-send",
        event_type="pipeline.finished",
        title="Nightly load",
        severity="warning",
        payload={"rows": 1200},
        attachments=[{"filename": "rows.csv", "content_type": "text/csv", "data": b"id,rows\n1,1200\n"}],
    )
    assert accepted["id"].startswith("msg_")
    assert accepted["event_type"] == "pipeline.finished"
    assert [d["destination"] for d in accepted["deliveries"]] == ["py-send"]
    assert accepted["idempotent_replayed"] is False

    (req,) = receiver.wait_for(1)
    body = req.json()
    assert req.headers["webhook-id"] == accepted["id"]
    assert body["type"] == "pipeline.finished"
    assert body["text"] == "파이프라인 완료 🎉"
    assert body["title"] == "Nightly load"
    assert body["data"] == {"rows": 1200}
    (att,) = body["attachments"]
    assert att["filename"] == "rows.csv"
    assert base64.b64decode(att["data"]) == b"id,rows\n1,1200\n"


def test_same_idempotency_key_returns_the_same_message(herald_server, send_token, receiver):
    _hook(herald_server, receiver, "py-idem")
    client = herald.Client(herald_server.url, send_token)
    key = f"py-idem-{uuid.uuid4()}"
    first = client.send("once", to=["py-idem"], idempotency_key=key)
    second = client.send("once", to=["py-idem"], idempotency_key=key)
    assert second["id"] == first["id"]
    assert second["deliveries"] == first["deliveries"]
    assert first["idempotent_replayed"] is False and second["idempotent_replayed"] is True
    assert len(herald_server.message(first["id"])["deliveries"]) == 1

    with pytest.raises(herald.IdempotencyConflictError) as info:
        client.send("different text", to=["py-idem"], idempotency_key=key)
    assert info.value.status == 422


def test_retries_5xx_and_a_lost_answer_without_duplicating(herald_server, send_token, receiver):
    """The first attempt gets a 503, the second reaches Herald but its answer is lost; the
    third is answered with the message the second created — one message, one delivery."""
    _hook(herald_server, receiver, "py-retry")
    proxy = FlakyProxy(herald_server.url, ["503", "drop-after"])
    try:
        client = herald.Client(proxy.url, send_token, retries=3, backoff=0.05)
        accepted = client.send("retried safely", to=["py-retry"])
    finally:
        proxy.close()
    assert [a for a, _ in proxy.seen] == ["503", "drop-after", "forward"]
    assert proxy.seen[1][1] == 202  # Herald accepted the attempt whose answer was lost
    assert accepted["idempotent_replayed"] is True
    receiver.wait_for(1)
    deliveries = herald_server.deliveries("py-retry")
    assert len(deliveries) == 1 and deliveries[0]["message_id"] == accepted["id"]


def test_unreachable_herald_raises_connection_error():
    client = herald.Client(f"http://127.0.0.1:{free_port()}", "hrld_x", retries=1, backoff=0.01, timeout=2)
    with pytest.raises(herald.HeraldConnectionError) as info:
        client.send("nobody listens")
    assert "after 2 attempt(s)" in str(info.value)


def test_validation_error_carries_the_problem_document(herald_server, send_token):
    client = herald.Client(herald_server.url, send_token)
    with pytest.raises(herald.ValidationError) as info:
        client.send("to nowhere", to=["no-such-destination"])
    err = info.value
    assert err.status == 422
    assert err.type and err.type.startswith("urn:herald:problem:")
    assert err.problem["status"] == 422
    assert "no-such-destination" in str(err)

    with pytest.raises(herald.ValidationError) as info:
        client.send("bad severity", severity="loud")
    assert any(e["field"] == "severity" for e in info.value.errors) or "severity" in str(info.value)


def test_auth_errors(herald_server):
    with pytest.raises(herald.AuthenticationError) as info:
        herald.Client(herald_server.url, "hrld_not_a_real_token").send("x")
    assert info.value.status == 401
    read_only = herald_server.token(["read"], name="pytest-read")
    with pytest.raises(herald.PermissionDeniedError) as info:
        herald.Client(herald_server.url, read_only).send("x")
    assert info.value.status == 403
    assert isinstance(info.value, herald.HeraldAPIError) and isinstance(info.value, herald.HeraldError)


def test_not_found(herald_server):
    with pytest.raises(herald.NotFoundError):
        herald_server.admin().get_message("msg_00000000000000000000000000")


def test_send_batch(herald_server, send_token, receiver):
    _hook(herald_server, receiver, "py-batch")
    client = herald.Client(herald_server.url, send_token)
    results = client.send_batch(
        [
            {"text": "one", "to": "py-batch"},
            {"text": "two", "to": ["py-batch"], "idempotency_key": f"b-{uuid.uuid4()}"},
            {"text": "three", "to": ["nowhere"]},
        ]
    )
    assert [r["status"] for r in results] == [202, 202, 422]
    assert results[0]["id"] != results[1]["id"]
    texts = sorted(r.json()["text"] for r in receiver.wait_for(2))
    assert texts == ["one", "two"]


def test_config_from_environment(herald_server, send_token, receiver, monkeypatch):
    _hook(herald_server, receiver, "py-env")
    monkeypatch.setenv("HERALD_URL", herald_server.url + "/")
    monkeypatch.setenv("HERALD_TOKEN", send_token)
    assert herald.Client().send("from env", to="py-env")["deliveries"][0]["destination"] == "py-env"
    monkeypatch.delenv("HERALD_TOKEN")
    with pytest.raises(herald.HeraldConfigError):
        herald.Client()
    with pytest.raises(herald.HeraldConfigError):
        herald.Client("ftp://example", "t")


def test_report_error_groups_and_alerts(herald_server, send_token, receiver):
    _hook(herald_server, receiver, "py-errors")
    client = herald.Client(herald_server.url, send_token)

    def charge(order: int) -> float:
        return 100 / (order - order)

    results = []
    for _ in range(2):
        try:
            charge(42)
        except ZeroDivisionError as e:
            results.append(
                client.report_error(
                    e,
                    service="py-billing",
                    environment="test",
                    request={"method": "POST", "path": "/orders/42/charge", "url": "http://shop.test/orders/42/charge"},
                    user={"id": 7, "username": "alice", "email": "alice@example.com"},
                    tags={"region": "kr"},
                    to="py-errors",
                )
            )
    first, second = results
    assert first["group"] == second["group"]
    assert first["new_group"] is True and second["new_group"] is False
    assert first["alerted"] is True and second["alerted"] is False  # folded into the window

    (alert,) = receiver.wait_for(1)
    body = alert.json()
    assert body["type"] == "error.reported"
    text = alert.text()
    assert "ZeroDivisionError" in text and "py-billing" in text
    assert "/orders/42/charge" in text and "alice" in text

    groups = [g for g in herald_server.error_groups() if g.get("service") == "py-billing"]
    assert len(groups) == 1 and groups[0]["id"] == first["group"]
    assert groups[0]["count"] == 2

    # Inside an `except` block the handled exception is the default.
    try:
        charge(7)
    except ZeroDivisionError:
        third = client.report_error(service="py-billing", to="py-errors")
    assert third["group"] == first["group"] and third["alerted"] is False


def test_admin_token_is_accepted(herald_server):
    # The fixture's fixed admin token (HERALD_ADMIN_TOKEN) reads the API.
    assert herald.Client(herald_server.url, ADMIN_TOKEN).request("GET", "/api/v1/destinations").status == 200


def test_error_groups_list_resolve_and_unresolve(herald_server, send_token):
    sender = herald.Client(herald_server.url, send_token)
    service = f"py-groups-{uuid.uuid4().hex[:6]}"
    result = sender.report_error(message="cache warmup skipped", level="warning", service=service, fingerprint="warmup")
    admin = herald_server.admin()
    page = admin.error_groups(service=service)
    (group,) = page["items"]
    assert group["id"] == result["group"] and group["status"] == "unresolved" and group["level"] == "warning"
    assert admin.resolve_error_group(group["id"])["status"] == "resolved"
    assert [g["id"] for g in admin.error_groups(status="resolved", service=service)["items"]] == [group["id"]]
    assert admin.unresolve_error_group(group["id"])["status"] == "unresolved"
    with pytest.raises(herald.NotFoundError):
        admin.resolve_error_group("grp_00000000000000000000000000000000")
