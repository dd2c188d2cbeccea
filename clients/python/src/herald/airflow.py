"""Apache Airflow integration (2.6+ and 3.x): ``@herald_task`` and ``HeraldNotifier``.

The Airflow Connection ``herald`` (any conn type, e.g. HTTP) holds Herald's address in
host / schema / port and an API token (``send`` scope) as the password::

    AIRFLOW_CONN_HERALD='{"conn_type": "http", "host": "herald.internal", "port": 8080,
                          "schema": "http", "password": "hrld_…"}'

A task whose function returns the text (``str``) or the message (``dict``)::

    from herald.airflow import herald_task

    @herald_task(to="rise", event_type="pipeline.finished", retries=3)
    def report(rows: int) -> str:
        return f"파이프라인 완료 🎉 {rows} rows"

The message's idempotency key is derived from dag_id, task_id, run_id and map_index (never
the try number), so when Airflow retries the task Herald answers with the original message
instead of sending a second one.

A callback::

    from herald.airflow import HeraldNotifier

    DAG(..., default_args={"on_failure_callback": HeraldNotifier(
        to="oncall-slack", text="{{ ti.dag_id }}.{{ ti.task_id }} failed: {{ exception }}")})

Airflow is imported lazily and defensively (``airflow.sdk`` on 3.x, the 2.x modules
otherwise). Without Airflow this module still imports: ``herald_task`` then returns a plain
callable and ``HeraldNotifier`` renders its templates itself, which is what the unit tests use.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
import re
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

from .client import Client
from .errors import HeraldConfigError, IdempotencyConflictError

__all__ = [
    "herald_task",
    "HeraldNotifier",
    "client_from_connection",
    "connection_url",
    "task_run_key",
    "default_text",
]

log = logging.getLogger("herald.airflow")

#: Fields a task may return in its message dict (those of :meth:`herald.Client.send`).
MESSAGE_FIELDS = frozenset(
    {"text", "to", "event_type", "title", "severity", "payload", "idempotency_key", "channels", "attachments"}
)
_MAX_KEY = 255
_VISIBLE_ASCII = re.compile(r"^[\x21-\x7e]+$")


# ---- Airflow, imported defensively ------------------------------------------------------


def _airflow_task_decorator() -> Optional[Callable[..., Any]]:
    try:
        from airflow.sdk import task  # Airflow 3.x

        return task
    except ImportError:
        pass
    try:
        from airflow.decorators import task  # Airflow 2.x

        return task
    except ImportError:
        return None


def get_current_context() -> Mapping[str, Any]:
    """The running task's context (Airflow's ``get_current_context``)."""
    try:
        from airflow.sdk import get_current_context as current  # Airflow 3.x
    except ImportError:
        try:
            from airflow.operators.python import get_current_context as current  # Airflow 2.x
        except ImportError as e:
            raise HeraldConfigError("herald_task runs inside Airflow: apache-airflow is not installed") from e
    return current()


def get_connection(conn_id: str) -> Any:
    """Airflow's Connection ``conn_id`` (via ``BaseHook.get_connection``)."""
    try:
        from airflow.sdk import BaseHook  # Airflow 3.x
    except ImportError:
        try:
            from airflow.hooks.base import BaseHook  # Airflow 2.x
        except ImportError as e:
            raise HeraldConfigError(f"cannot read the Airflow Connection {conn_id!r}: apache-airflow is not installed") from e
    return BaseHook.get_connection(conn_id)


def _base_notifier() -> type:
    for module, name in (
        ("airflow.sdk", "BaseNotifier"),  # Airflow 3.x
        ("airflow.sdk.bases.notifier", "BaseNotifier"),
        ("airflow.notifications.basenotifier", "BaseNotifier"),  # Airflow 2.6+
    ):
        try:
            mod = __import__(module, fromlist=[name])
            return getattr(mod, name)
        except (ImportError, AttributeError):
            continue
    return _StandaloneNotifier


# ---- the connection and the key ---------------------------------------------------------


def connection_url(conn: Any) -> str:
    """Herald's base URL from an Airflow Connection's host, schema and port.

    ``host`` may be a full URL (``https://herald.internal``); otherwise ``schema`` is the
    scheme (``http`` when empty), as Airflow's HTTP hook reads it.
    """
    host = (getattr(conn, "host", None) or "").strip()
    if not host:
        raise HeraldConfigError("the Airflow Connection for Herald has no host")
    port = getattr(conn, "port", None)
    if "://" in host:
        base = host.rstrip("/")
        scheme_less = base.split("://", 1)[1]
        if port and ":" not in scheme_less.split("/", 1)[0]:
            base = f"{base}:{port}"
        return base
    scheme = (getattr(conn, "schema", None) or "http").strip() or "http"
    if scheme not in ("http", "https"):
        raise HeraldConfigError(f"the Airflow Connection's schema must be http or https, got {scheme!r}")
    return f"{scheme}://{host}" + (f":{port}" if port else "")


def client_from_connection(conn_id: str = "herald", **client_kwargs: Any) -> Client:
    """A :class:`herald.Client` for the Airflow Connection ``conn_id`` (password = token)."""
    conn = get_connection(conn_id)
    token = getattr(conn, "password", None)
    if not token:
        raise HeraldConfigError(f"the Airflow Connection {conn_id!r} has no password (the Herald token)")
    return Client(url=connection_url(conn), token=token, **client_kwargs)


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _task_instance(context: Mapping[str, Any]) -> Any:
    return context.get("ti") or context.get("task_instance")


def _run_parts(context: Mapping[str, Any]) -> Dict[str, Any]:
    ti = _task_instance(context)
    dag_run = context.get("dag_run")
    dag_id = _get(ti, "dag_id") or _get(context.get("dag"), "dag_id") or _get(dag_run, "dag_id")
    task_id = _get(ti, "task_id") or _get(context.get("task"), "task_id")
    run_id = _get(ti, "run_id") or context.get("run_id") or _get(dag_run, "run_id")
    map_index = _get(ti, "map_index")
    return {
        "dag_id": dag_id,
        "task_id": task_id,
        "run_id": run_id,
        "map_index": -1 if map_index is None else map_index,
        "try_number": _get(ti, "try_number"),
    }


def _key(prefix: str, parts: Sequence[Any]) -> str:
    key = ":".join([prefix] + ["" if p is None else str(p) for p in parts])
    if len(key) <= _MAX_KEY and _VISIBLE_ASCII.match(key):
        return key
    return f"{prefix}:sha256:{hashlib.sha256(key.encode('utf-8')).hexdigest()}"


def task_run_key(context: Mapping[str, Any], suffix: Optional[str] = None) -> str:
    """The idempotency key of a task run: ``airflow:<dag_id>:<task_id>:<run_id>:<map_index>``.

    The try number is deliberately not part of it: every retry of the same task run gets the
    same key, so Herald accepts the message once. ``suffix`` tells apart several messages
    sent by one task run. Keys longer than 255 characters or not plain ASCII are hashed.
    """
    p = _run_parts(context)
    if not (p["dag_id"] and p["task_id"] and p["run_id"]):
        raise HeraldConfigError("the Airflow context has no dag_id/task_id/run_id: is this running in a task?")
    parts = [p["dag_id"], p["task_id"], p["run_id"], p["map_index"]]
    if suffix:
        parts.append(suffix)
    return _key("airflow", parts)


# ---- @herald_task -----------------------------------------------------------------------


def _message_from_result(result: Any, defaults: Mapping[str, Any]) -> Dict[str, Any]:
    if isinstance(result, str):
        return {**defaults, "text": result}
    if isinstance(result, Mapping):
        unknown = sorted(str(k) for k in result if k not in MESSAGE_FIELDS)
        if unknown:
            raise TypeError(
                f"a herald_task returned a dict with unknown field(s) {', '.join(unknown)}; "
                f"return the message ({', '.join(sorted(MESSAGE_FIELDS))}), e.g. "
                '{"text": "...", "payload": {...}}'
            )
        message = dict(defaults)
        message.update({k: v for k, v in result.items() if v is not None})
        return message
    raise TypeError(f"a herald_task must return the text (str) or the message (dict), not {type(result).__name__}")


def herald_task(
    python_callable: Optional[Callable[..., Any]] = None,
    *,
    to: Optional[Union[str, Sequence[str]]] = None,
    conn_id: str = "herald",
    event_type: str = "message",
    severity: str = "info",
    title: Optional[str] = None,
    channels: Optional[Mapping[str, Any]] = None,
    **task_kwargs: Any,
) -> Any:
    """Like Airflow's ``@task``, but the function's return value is sent through Herald.

    The function returns the text (``str``), the message (``dict`` with the fields of
    :meth:`herald.Client.send`; they win over the decorator's ``to``/``event_type``/…), or
    ``None`` to send nothing. The task's XCom value is Herald's 202 answer
    (``{"id", "event_type", "deliveries", "idempotent_replayed"}``).

    Other keyword arguments (``retries``, ``retry_delay``, ``task_id``, ``pool`` …) go to
    Airflow's ``@task``. Retries of the same task run reuse the idempotency key, so they
    never duplicate a message; a retry whose function produced a different message is not
    sent again either (Herald rejects the reused key, and the task logs a warning).
    """
    defaults: Dict[str, Any] = {"event_type": event_type, "severity": severity}
    if to is not None:
        defaults["to"] = to
    if title is not None:
        defaults["title"] = title
    if channels is not None:
        defaults["channels"] = channels

    def decorate(fn: Callable[..., Any]) -> Any:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            result = fn(*args, **kwargs)
            if result is None:
                log.info("%s returned None: no message sent", fn.__name__)
                return None
            message = _message_from_result(result, defaults)
            context = get_current_context()
            key = message.pop("idempotency_key", None) or task_run_key(context)
            text = message.pop("text", None)
            client = client_from_connection(conn_id)
            try:
                accepted = client.send(text, idempotency_key=key, **message)
            except IdempotencyConflictError:
                log.warning(
                    "the message of this task run (key %s) was already accepted by Herald with other "
                    "content; a retry does not send it again",
                    key,
                )
                return {"idempotency_key": key, "already_sent": True}
            log.info(
                "Herald accepted %s (key %s%s) for %s",
                accepted.get("id"),
                key,
                ", replayed" if accepted.get("idempotent_replayed") else "",
                ", ".join(d.get("destination", "?") for d in accepted.get("deliveries", [])) or "no destination",
            )
            return accepted

        airflow_task = _airflow_task_decorator()
        if airflow_task is None:
            return run
        kwargs = dict(task_kwargs)
        kwargs.setdefault("multiple_outputs", False)
        return airflow_task(**kwargs)(run)

    if python_callable is not None:
        return decorate(python_callable)
    return decorate


# ---- HeraldNotifier ---------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*\}\}")


def _render_standalone(value: Any, context: Mapping[str, Any]) -> Any:
    """Renders templates without Airflow: Jinja2 when installed, else ``{{ a.b }}`` lookups."""
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        try:
            import jinja2
        except ImportError:
            return _PLACEHOLDER.sub(lambda m: _lookup(context, m.group(1)), value)
        return jinja2.Environment().from_string(value).render(**context)
    if isinstance(value, list):
        return [_render_standalone(v, context) for v in value]
    if isinstance(value, tuple):
        return tuple(_render_standalone(v, context) for v in value)
    if isinstance(value, dict):
        return {k: _render_standalone(v, context) for k, v in value.items()}
    return value


def _lookup(context: Mapping[str, Any], path: str) -> str:
    obj: Any = context
    for part in path.split("."):
        obj = _get(obj, part)
        if obj is None:
            return ""
    return str(obj)


class _StandaloneNotifier:
    """The part of Airflow's ``BaseNotifier`` the notifier needs, for use without Airflow."""

    template_fields: Sequence[str] = ()

    def __call__(self, *args: Any) -> None:
        context: Mapping[str, Any] = args[0] if args and isinstance(args[0], Mapping) else {}
        rendered = copy.copy(self)
        for name in self.template_fields:
            setattr(rendered, name, _render_standalone(getattr(self, name), context))
        rendered.notify(context)  # type: ignore[attr-defined]


def default_text(context: Mapping[str, Any]) -> str:
    """``<dag>.<task> <state> (run <run_id>, try <n>): <exception>`` for a callback context."""
    p = _run_parts(context)
    ti = _task_instance(context)
    exception = context.get("exception")
    state = _get(ti, "state") or ("failed" if exception else "finished")
    state = getattr(state, "value", state)
    where = ".".join(str(x) for x in (p["dag_id"], p["task_id"]) if x) or "Airflow"
    text = f"{where} {state}"
    run = [f"run {p['run_id']}"] if p["run_id"] else []
    if p["try_number"]:
        run.append(f"try {p['try_number']}")
    if run:
        text += f" ({', '.join(run)})"
    return f"{text}: {exception}" if exception else text


class HeraldNotifier(_base_notifier()):  # type: ignore[misc]
    """An Airflow notifier (``on_failure_callback``, ``on_success_callback``, …) that sends through Herald.

    Args:
        to: destination name(s); routed by ``event_type`` when absent.
        text: Jinja template rendered with the task context (``ti``, ``dag``, ``run_id``,
            ``exception`` …); without it, :func:`default_text` describes the task and its state.
        title, payload: templated too.
        severity: default ``error`` when the context carries an exception, else ``info``.
        event_type: default ``airflow.task``.
        conn_id: the Airflow Connection with Herald's URL and token.

    The idempotency key is derived from dag_id/task_id/run_id/map_index/try_number and the
    rendered message, so a callback that fires twice for the same try sends once.
    """

    template_fields = ("text", "title", "to", "payload", "event_type")

    def __init__(
        self,
        *,
        to: Optional[Union[str, Sequence[str]]] = None,
        text: Optional[str] = None,
        title: Optional[str] = None,
        severity: Optional[str] = None,
        event_type: str = "airflow.task",
        payload: Optional[Mapping[str, Any]] = None,
        channels: Optional[Mapping[str, Any]] = None,
        conn_id: str = "herald",
    ):
        super().__init__()
        self.to = to
        self.text = text
        self.title = title
        self.severity = severity
        self.event_type = event_type
        self.payload = dict(payload) if payload is not None else None
        self.channels = channels
        self.conn_id = conn_id

    def notify(self, context: Mapping[str, Any]) -> None:
        """Sends the rendered message (Airflow calls this after rendering the templates)."""
        severity = self.severity or ("error" if context.get("exception") else "info")
        text = (self.text or "").strip() or default_text(context)
        parts = _run_parts(context)
        payload = dict(self.payload or {})
        for name in ("dag_id", "task_id", "run_id", "map_index", "try_number"):
            if parts.get(name) is not None:
                payload.setdefault(name, parts[name])
        digest = hashlib.sha256(
            repr((self.to, text, self.title, self.event_type, severity)).encode("utf-8")
        ).hexdigest()[:16]
        key = _key(
            "airflow-notify",
            [parts["dag_id"], parts["task_id"], parts["run_id"], parts["map_index"], parts["try_number"], digest],
        )
        client_from_connection(self.conn_id).send(
            text,
            to=self.to,
            event_type=self.event_type,
            title=self.title,
            severity=severity,
            payload=payload,
            channels=self.channels,
            idempotency_key=key,
        )
