"""herald.airflow without Airflow: a faked task context and Connection, a real Herald.

The decorator and the notifier are exercised exactly as Airflow would call them (the
function inside the task, the notifier with the callback context); only Airflow's context
and Connection lookups are replaced. tests/test_airflow_real.py runs them in real Airflow.
"""

from __future__ import annotations

import importlib.util
import uuid
from types import SimpleNamespace
from typing import Any, Dict

import pytest

import herald.airflow as ha
from herald.errors import HeraldConfigError

AIRFLOW_INSTALLED = importlib.util.find_spec("airflow") is not None


class FakeTI(SimpleNamespace):
    pass


def make_context(try_number: int = 1, map_index: int = -1, run_id: str = "scheduled__2026-12-01T00:00:00+00:00",
                 dag_id: str = "messenger_pipeline", task_id: str = "notify_room", **extra: Any) -> Dict[str, Any]:
    ti = FakeTI(dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=map_index, try_number=try_number,
                state=extra.pop("state", "running"))
    return {"ti": ti, "task_instance": ti, "run_id": run_id, **extra}


@pytest.fixture
def airflow_env(monkeypatch, herald_server, send_token):
    """Standalone mode, the Connection `herald` pointing at the test server, a settable context."""
    monkeypatch.setattr(ha, "_airflow_task_decorator", lambda: None)
    conn = SimpleNamespace(host="127.0.0.1", port=herald_server.port, schema="http", password=send_token)
    monkeypatch.setattr(ha, "get_connection", lambda conn_id: conn if conn_id == "herald" else pytest.fail(conn_id))
    state = {"context": make_context()}
    monkeypatch.setattr(ha, "get_current_context", lambda: state["context"])
    return state


@pytest.fixture
def rise(herald_server, receiver):
    """An in-house messenger behind an `http` destination with a body_template and a Bearer token.

    Each test gets its own destination name, so delivery counts are per test."""
    name = f"rise-{uuid.uuid4().hex[:8]}"
    receiver.name = name
    herald_server.put_destination(
        name,
        {
            "kind": "http",
            "url": receiver.url + "/api/v1/message",
            "headers": {"Authorization": "Bearer ${env:HERALD_SECRET_RISE_TOKEN}"},
            "body_template": '{"chatroomId": {{ payload.chatroom_id|tojson }}, "msgType": "TEXT", "chatMsg": {{ text|tojson }}}',
            "retry": {"schedule": ["1s"]},
        },
    )
    return receiver


def test_task_run_key_excludes_the_try_number():
    a = ha.task_run_key(make_context(try_number=1))
    assert a == "airflow:messenger_pipeline:notify_room:scheduled__2026-12-01T00:00:00+00:00:-1"
    assert ha.task_run_key(make_context(try_number=3)) == a
    assert ha.task_run_key(make_context(map_index=2)) != a
    assert ha.task_run_key(make_context(), suffix="second") == a + ":second"
    long_key = ha.task_run_key(make_context(run_id="manual__" + "x" * 300))
    assert long_key.startswith("airflow:sha256:") and len(long_key) < 255
    assert ha.task_run_key(make_context(run_id="수동 실행")).startswith("airflow:sha256:")
    with pytest.raises(HeraldConfigError):
        ha.task_run_key({})


def test_connection_url_forms():
    ns = SimpleNamespace
    assert ha.connection_url(ns(host="herald.internal", port=8080, schema="")) == "http://herald.internal:8080"
    assert ha.connection_url(ns(host="herald.internal", port=None, schema="https")) == "https://herald.internal"
    assert ha.connection_url(ns(host="https://herald.internal/", port=8443, schema=None)) == "https://herald.internal:8443"
    assert ha.connection_url(ns(host="http://h:1", port=2, schema=None)) == "http://h:1"
    with pytest.raises(HeraldConfigError):
        ha.connection_url(ns(host="", port=None, schema=None))
    with pytest.raises(HeraldConfigError):
        ha.connection_url(ns(host="h", port=None, schema="postgres"))


def test_herald_task_sends_the_returned_message_once_across_retries(airflow_env, rise, herald_server):
    calls = []

    @ha.herald_task(to=rise.name, event_type="pipeline.finished", retries=3)
    def notify_room(rows: int) -> Dict[str, Any]:
        calls.append(rows)
        return {"text": f"파이프라인 완료 🎉 {rows} rows", "payload": {"chatroom_id": "room-42"}}

    first = notify_room(1200)
    assert first["deliveries"][0]["destination"] == rise.name
    assert first["idempotent_replayed"] is False

    # Airflow retries the task (the worker died after the send): same run, try 2.
    airflow_env["context"] = make_context(try_number=2)
    second = notify_room(1200)
    assert second["id"] == first["id"] and second["idempotent_replayed"] is True
    assert calls == [1200, 1200]

    (req,) = rise.wait_for(1)
    assert req.path == "/api/v1/message"
    assert req.headers["authorization"] == "Bearer rise-secret-token"
    assert req.json() == {"chatroomId": "room-42", "msgType": "TEXT", "chatMsg": "파이프라인 완료 🎉 1200 rows"}
    assert len(herald_server.deliveries(rise.name)) == 1
    assert herald_server.message(first["id"])["idempotency_key"] == ha.task_run_key(make_context())


def test_a_retry_that_renders_other_text_is_not_sent_again(airflow_env, rise, herald_server):
    texts = iter(["first try at 09:00:01", "second try at 09:05:07"])

    @ha.herald_task(to=rise.name)
    def clock_report() -> str:
        return next(texts)

    airflow_env["context"] = make_context(task_id="clock_report")
    first = clock_report()
    airflow_env["context"] = make_context(task_id="clock_report", try_number=2)
    second = clock_report()
    assert second == {"idempotency_key": ha.task_run_key(make_context(task_id="clock_report")), "already_sent": True}
    (req,) = rise.wait_for(1)
    assert req.json()["chatMsg"] == "first try at 09:00:01"
    assert [d["message_id"] for d in herald_server.deliveries(rise.name)] == [first["id"]]


def test_mapped_task_instances_send_one_message_each(airflow_env, rise):
    @ha.herald_task(to=rise.name)
    def per_room(room: str) -> Dict[str, Any]:
        return {"text": f"hello {room}", "payload": {"chatroom_id": room}}

    ids = set()
    for i, room in enumerate(["a", "b"]):
        airflow_env["context"] = make_context(task_id="per_room", map_index=i)
        ids.add(per_room(room)["id"])
    assert len(ids) == 2
    assert sorted(r.json()["chatroomId"] for r in rise.wait_for(2)) == ["a", "b"]


def test_returning_none_sends_nothing_and_bad_returns_are_clear(airflow_env):
    @ha.herald_task(to="rise")
    def nothing() -> None:
        return None

    assert nothing() is None

    @ha.herald_task(to="rise")
    def raw_messenger_body() -> Dict[str, Any]:
        return {"chatroomId": "r", "msgType": "TEXT", "chatMsg": "hi"}

    with pytest.raises(TypeError, match="unknown field"):
        raw_messenger_body()

    @ha.herald_task
    def number() -> int:
        return 3

    with pytest.raises(TypeError, match="str"):
        number()


def test_bare_decorator_and_dict_overrides(airflow_env, herald_server, receiver):
    herald_server.put_destination("af-hook", {"kind": "webhook", "url": receiver.url})

    @ha.herald_task
    def plain() -> Dict[str, Any]:
        return {"text": "overridden", "to": ["af-hook"], "event_type": "pipeline.done", "severity": "warning"}

    airflow_env["context"] = make_context(task_id="plain")
    accepted = plain()
    assert accepted["event_type"] == "pipeline.done"
    body = receiver.wait_for(1)[0].json()
    assert (body["type"], body["text"], body["severity"]) == ("pipeline.done", "overridden", "warning")


@pytest.mark.skipif(AIRFLOW_INSTALLED, reason="with Airflow installed the notifier renders through Airflow (test_airflow_real.py)")
def test_notifier_renders_the_context_and_sends_once_per_try(airflow_env, herald_server, receiver):
    herald_server.put_destination("af-alerts", {"kind": "webhook", "url": receiver.url})
    notifier = ha.HeraldNotifier(
        to="af-alerts",
        text="{{ ti.dag_id }}.{{ ti.task_id }} failed on try {{ ti.try_number }}: {{ exception }}",
        title="Airflow: {{ ti.dag_id }}",
        payload={"run": "{{ run_id }}"},
    )
    context = make_context(try_number=2, state="failed", exception=RuntimeError("upstream API timed out"))
    notifier(context)
    notifier(context)  # the callback fired twice for the same try
    (req,) = receiver.wait_for(1)
    body = req.json()
    assert body["text"] == "messenger_pipeline.notify_room failed on try 2: upstream API timed out"
    assert body["title"] == "Airflow: messenger_pipeline"
    assert body["severity"] == "error"
    assert body["type"] == "airflow.task"
    assert body["data"]["run"] == "scheduled__2026-12-01T00:00:00+00:00"
    assert body["data"]["try_number"] == 2
    assert notifier.text.startswith("{{")  # the instance keeps its templates
    assert len(herald_server.deliveries("af-alerts")) == 1

    notifier(make_context(try_number=3, state="failed", exception=RuntimeError("again")))
    assert len(receiver.wait_for(2)) == 2


@pytest.mark.skipif(AIRFLOW_INSTALLED, reason="with Airflow installed the notifier renders through Airflow (test_airflow_real.py)")
def test_notifier_default_text(airflow_env, herald_server, receiver):
    herald_server.put_destination("af-default", {"kind": "webhook", "url": receiver.url})
    ha.HeraldNotifier(to="af-default")(make_context(state="success"))
    body = receiver.wait_for(1)[0].json()
    assert body["text"] == "messenger_pipeline.notify_room success (run scheduled__2026-12-01T00:00:00+00:00, try 1)"
    assert body["severity"] == "info"


def test_default_text_for_a_dag_level_callback():
    dag_run = SimpleNamespace(dag_id="nightly", run_id="manual__1")
    context = {"dag": SimpleNamespace(dag_id="nightly"), "dag_run": dag_run, "exception": "2 tasks failed"}
    assert ha.default_text(context) == "nightly failed (run manual__1): 2 tasks failed"
