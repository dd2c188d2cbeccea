"""Unit tests that need no server: report building, error mapping, Retry-After, the sender."""

from __future__ import annotations

import json
import os
import time

import herald
from herald.background import BackgroundSender
from herald.client import _retry_after, message_body
from herald.errors import IdempotencyConflictError, ServerError, ValidationError, error_for
from herald.reports import build_report, is_in_app
from support import BlackHole, free_port


def _raise_in_app():
    return json.loads("{not json")  # raises inside the standard library


def test_report_frames_are_oldest_first_with_in_app_marks():
    try:
        _raise_in_app()
    except ValueError as e:
        report = build_report(e, service="svc", request={"method": "GET", "path": "/x", "url": None}, user={"id": 5})
    exc = report["exception"]
    assert exc["type"] == "JSONDecodeError" and exc["module"] == "json.decoder"
    frames = exc["stacktrace"]
    assert frames[0]["function"] == "test_report_frames_are_oldest_first_with_in_app_marks"
    assert frames[0]["in_app"] is True and frames[0]["module"] == "test_units"
    assert frames[1]["function"] == "_raise_in_app" and frames[1]["in_app"] is True
    assert 'json.loads("{not json")' in frames[1]["context_line"]
    assert frames[-1]["in_app"] is False  # raised in the standard library
    assert frames[-1]["filename"].endswith(os.path.join("json", "decoder.py"))
    assert report["message"].startswith("JSONDecodeError: Expecting property name")
    assert report["request"] == {"method": "GET", "path": "/x"}
    assert report["user"] == {"id": "5"}


def test_report_without_exception_and_installed_packages_are_not_in_app():
    report = build_report(message="disk almost full", level="warning", fingerprint=["disk", "/var"], tags={"n": 3})
    assert report == {"level": "warning", "message": "disk almost full", "fingerprint": ["disk", "/var"], "tags": {"n": "3"}}
    assert is_in_app(__file__) is True
    assert is_in_app(json.__file__) is False
    assert is_in_app("<frozen importlib._bootstrap>") is False


def test_error_mapping():
    err = error_for(422, {"status": 422, "title": "Invalid request", "detail": "to: unknown destination",
                          "errors": [{"field": "to", "message": "unknown destination"}]})
    assert type(err) is ValidationError
    assert str(err) == "Herald answered 422 Invalid request: to: unknown destination"
    conflict = error_for(422, {"detail": "this Idempotency-Key was already used with a different request body"})
    assert isinstance(conflict, IdempotencyConflictError)
    assert isinstance(error_for(503, {"detail": "down"}), ServerError)


def test_retry_after_parsing():
    assert _retry_after("3") == 3.0
    assert _retry_after(None) is None and _retry_after("soon") is None
    http_date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 120))
    assert 100 < (_retry_after(http_date) or 0) <= 121


def test_message_body_leaves_out_unset_fields():
    assert message_body("hi") == {"event_type": "message", "severity": "info", "text": "hi"}
    assert message_body(to="a", payload={"k": 1})["to"] == ["a"]


def test_sender_drops_and_counts_when_full_and_never_blocks():
    hole = BlackHole()  # accepts and never answers: the worker's first send hangs
    try:
        sender = BackgroundSender(lambda: herald.Client(hole.url, "hrld_x", timeout=30, retries=0), queue_size=1)
        results = [sender.submit({"message": f"r{i}"}) for i in range(10)]
        # At most one report in flight in the worker and one waiting in the queue.
        assert results.count(True) <= 2
        assert sender.dropped == results.count(False) >= 8
        assert sender.flush(timeout=0.2) is False  # the hung send is still in flight
        sender.close(timeout=0.1)
        assert sender.submit({"message": "after close"}) is False
    finally:
        hole.close()
    # The hung send fails once the connection is cut; let the worker finish here, not later.
    assert sender.flush(timeout=10) is True
    assert sender.failed >= 1


def test_sender_counts_failures_without_raising(capsys):
    port = free_port()
    sender = BackgroundSender(lambda: herald.Client(f"http://127.0.0.1:{port}", "hrld_x", timeout=2, retries=0))
    assert sender.submit({"message": "to a closed port"}) is True
    assert sender.flush(timeout=10) is True
    assert sender.failed == 1 and sender.sent == 0
    assert "HeraldConnectionError" in (sender.last_error or "")
    assert "could not send an error report" in capsys.readouterr().err
