"""Django and Django REST framework error reporting to Herald.

``settings.py``::

    HERALD_URL = "http://herald.internal:8080"
    HERALD_TOKEN = env("HERALD_TOKEN")          # a token with the `send` scope
    HERALD_SERVICE = "orders-api"
    HERALD_ENVIRONMENT = "production"           # optional
    HERALD_TO = ["oncall-slack"]                # optional; else routed by event type error.reported

    LOGGING = {
        "version": 1,
        "handlers": {"herald": {"class": "herald.django.HeraldHandler", "level": "ERROR"}},
        "loggers": {"django.request": {"handlers": ["herald"], "level": "ERROR", "propagate": True}},
    }
    REST_FRAMEWORK = {"EXCEPTION_HANDLER": "herald.django.exception_handler"}

:class:`HeraldHandler` turns each log record into an error report (request path, method,
user, exception type, value and traceback frames) and sends it from a background thread
through a bounded queue: it never blocks the request and never raises into it. When the
queue is full, reports are dropped and counted (``handler.sender.dropped``).

:func:`exception_handler` wraps DRF's default handler and reports server errors (5xx) and
unhandled exceptions; the same exception is then not reported again by the handler when
Django logs the resulting 500.

Settings are read from ``django.conf.settings`` and fall back to the environment variables
of the same names, so the handler also works outside Django (e.g. in a Celery worker).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

from .background import BackgroundSender
from .client import Client
from .reports import build_report

__all__ = ["HeraldHandler", "exception_handler", "report_exception", "request_info", "user_info", "flush"]

# Marks an exception already reported, so Django's "Internal Server Error" log record of the
# same exception (after DRF re-raises it) does not become a second report.
_REPORTED_ATTR = "_herald_reported"

_LEVELS = {
    logging.CRITICAL: "fatal",
    logging.ERROR: "error",
    logging.WARNING: "warning",
    logging.INFO: "info",
    logging.DEBUG: "debug",
}


def _setting(name: str, default: Optional[str] = None) -> Optional[str]:
    try:
        from django.conf import settings

        if settings.configured:
            value = getattr(settings, name, None)
            if value not in (None, ""):
                return str(value)
    except Exception:  # Django missing or settings broken: the environment decides
        pass
    return os.environ.get(name, default)


def _to_setting() -> Optional[List[str]]:
    """``HERALD_TO``: destination names for the alerts (a list, or a comma-separated string)."""
    value: Any = None
    try:
        from django.conf import settings

        if settings.configured:
            value = getattr(settings, "HERALD_TO", None)
    except Exception:
        value = None
    if value in (None, "", [], ()):
        value = os.environ.get("HERALD_TO")
    if not value:
        return None
    if isinstance(value, str):
        names = [v.strip() for v in value.split(",") if v.strip()]
    else:
        names = [str(v) for v in value]
    return names or None


def _level_name(levelno: int) -> str:
    for threshold in sorted(_LEVELS, reverse=True):
        if levelno >= threshold:
            return _LEVELS[threshold]
    return "debug"


def request_info(request: Any) -> Optional[Dict[str, Any]]:
    """``{"method", "url", "path"}`` of a Django ``HttpRequest`` or DRF ``Request``; never raises."""
    if request is None:
        return None
    info: Dict[str, Any] = {}
    for key, getter in (
        ("method", lambda: request.method),
        ("path", lambda: request.path),
        ("url", lambda: request.build_absolute_uri()),
    ):
        try:
            value = getter()
        except Exception:  # DisallowedHost and friends: leave the field out
            continue
        if value:
            info[key] = str(value)
    return info or None


def user_info(request: Any) -> Optional[Dict[str, Any]]:
    """``{"id", "username", "email"}`` of the request's authenticated user; ``None`` otherwise.

    Reads only what is already there or cheap (``request.user``); never raises.
    """
    if request is None:
        return None
    try:
        user = getattr(request, "user", None)
        if user is None or not getattr(user, "is_authenticated", False):
            return None
        info: Dict[str, Any] = {}
        pk = getattr(user, "pk", None)
        if pk is not None:
            info["id"] = str(pk)
        get_username = getattr(user, "get_username", None)
        username = get_username() if callable(get_username) else getattr(user, "username", None)
        if username:
            info["username"] = str(username)
        email = getattr(user, "email", None)
        if email:
            info["email"] = str(email)
        return info or None
    except Exception:
        return None


def _client_factory(
    url: Optional[str] = None, token: Optional[str] = None, timeout: float = 5.0, retries: int = 2
) -> Callable[[], Client]:
    def make() -> Client:
        return Client(
            url=url or _setting("HERALD_URL"),
            token=token or _setting("HERALD_TOKEN"),
            timeout=timeout,
            retries=retries,
        )

    return make


class HeraldHandler(logging.Handler):
    """A ``logging.Handler`` that reports records to Herald's ``POST /api/v1/errors``.

    Args:
        level: the lowest level reported (default ``ERROR``).
        url, token, service, environment: override the ``HERALD_URL``, ``HERALD_TOKEN``,
            ``HERALD_SERVICE`` and ``HERALD_ENVIRONMENT`` settings.
        to: destination name(s) for the alerts (default: the ``HERALD_TO`` setting); without
            them Herald routes alerts by event type ``error.reported``.
        queue_size: reports waiting at most; beyond it they are dropped and counted.
        timeout: seconds per HTTP request to Herald (in the background thread).
        flush_timeout: how long :meth:`close` (at shutdown) waits for queued reports.

    The record's ``request`` attribute (Django's ``django.request`` logger sets it) supplies
    path, method and user; ``exc_info`` the exception and traceback. Without an exception
    the report is grouped by logger and message template. All work in ``emit`` is cheap and
    guarded: it never blocks on the network and never raises.
    """

    def __init__(
        self,
        level: int = logging.ERROR,
        *,
        url: Optional[str] = None,
        token: Optional[str] = None,
        service: Optional[str] = None,
        environment: Optional[str] = None,
        to: Optional[Union[str, List[str]]] = None,
        queue_size: int = 1000,
        timeout: float = 5.0,
        flush_timeout: float = 5.0,
    ):
        super().__init__(level)
        self.service = service
        self.environment = environment
        self.to = to
        self.flush_timeout = flush_timeout
        self.sender = BackgroundSender(
            _client_factory(url, token, timeout), queue_size=queue_size, name="herald-logging"
        )
        self._local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        # A report about a failure to report would recurse; so would our own log lines.
        if getattr(self._local, "busy", False) or record.name == "herald" or record.name.startswith("herald."):
            return
        self._local.busy = True
        try:
            exc = record.exc_info[1] if record.exc_info else None
            request = _django_request(getattr(record, "request", None))
            if _is_marked(exc) or _is_marked(request):
                return
            report = self.build(record)
            if self.sender.submit(report):
                _mark(exc)
        except Exception:
            self.sender.dropped += 1
        finally:
            self._local.busy = False

    def build(self, record: logging.LogRecord) -> Dict[str, Any]:
        """The report for one record (runs in the logging thread; cheap, no I/O)."""
        request = getattr(record, "request", None)
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        exc = record.exc_info[1] if record.exc_info else None
        has_exc = exc is not None
        tags: Dict[str, str] = {"logger": record.name}
        status = getattr(record, "status_code", None)
        if status is not None:
            tags["status_code"] = str(status)
        return build_report(
            exc,
            message=message,
            service=self.service or _setting("HERALD_SERVICE") or "django",
            environment=self.environment or _setting("HERALD_ENVIRONMENT"),
            level=_level_name(record.levelno),
            request=request_info(request),
            user=user_info(request),
            tags=tags,
            fingerprint=None if has_exc else [record.name, str(record.msg)],
            to=self.to if self.to is not None else _to_setting(),
        )

    def flush(self) -> None:
        """Waits (up to ``flush_timeout``) until queued reports are sent."""
        self.sender.flush(self.flush_timeout)

    def close(self) -> None:
        """Flushes and stops the worker; called by ``logging.shutdown()`` at exit."""
        try:
            self.sender.close(self.flush_timeout)
        finally:
            super().close()


def _django_request(request: Any) -> Any:
    """The Django ``HttpRequest`` behind a DRF ``Request`` (or the request itself)."""
    return getattr(request, "_request", request)


def _is_marked(obj: Any) -> bool:
    return obj is not None and getattr(obj, _REPORTED_ATTR, False) is True


def _mark(obj: Any) -> None:
    if obj is None:
        return
    try:
        setattr(obj, _REPORTED_ATTR, True)
    except Exception:  # objects with __slots__ or read-only attributes
        pass


_default_sender: Optional[BackgroundSender] = None
_default_lock = threading.Lock()


def _sender() -> BackgroundSender:
    global _default_sender
    if _default_sender is None:
        with _default_lock:
            if _default_sender is None:
                _default_sender = BackgroundSender(_client_factory(), name="herald-drf")
    return _default_sender


def report_exception(
    exc: BaseException,
    request: Any = None,
    *,
    tags: Optional[Mapping[str, Any]] = None,
    sender: Optional[BackgroundSender] = None,
) -> bool:
    """Queues a report of ``exc`` (with the request's path, method and user) for Herald.

    Never blocks or raises; returns whether it was queued. Uses the ``HERALD_*`` settings.
    """
    if _is_marked(exc):
        return False
    try:
        target = sender or _sender()
        report = build_report(
            exc,
            service=_setting("HERALD_SERVICE") or "django",
            environment=_setting("HERALD_ENVIRONMENT"),
            request=request_info(request),
            user=user_info(request),
            tags=tags,
            to=_to_setting(),
        )
        queued = target.submit(report)
        if queued:
            # Django logs the 500 that follows (with this exception, or without one for a
            # 5xx answer); the handler skips what is marked here.
            _mark(exc)
            _mark(_django_request(request))
        return queued
    except Exception:
        return False


def exception_handler(exc: Exception, context: Mapping[str, Any]) -> Any:
    """DRF ``EXCEPTION_HANDLER``: DRF's default answer, plus a report of server errors.

    Client errors DRF turns into 4xx answers (validation, authentication, 404 …) are not
    reported; unhandled exceptions (DRF answers ``None`` and Django returns a 500) and
    answers with a 5xx status are. Set ``REST_FRAMEWORK = {"EXCEPTION_HANDLER":
    "herald.django.exception_handler"}``.
    """
    from rest_framework.views import exception_handler as drf_default

    response = drf_default(exc, context)
    status = getattr(response, "status_code", None)
    if response is None or (isinstance(status, int) and status >= 500):
        request = context.get("request") if isinstance(context, Mapping) else None
        view = context.get("view") if isinstance(context, Mapping) else None
        tags = {"view": f"{type(view).__module__}.{type(view).__qualname__}"} if view is not None else None
        if status is not None:
            tags = dict(tags or {}, status_code=str(status))
        report_exception(exc, request, tags=tags)
    return response


def flush(timeout: float = 5.0) -> bool:
    """Waits until the DRF handler's queued reports are sent (e.g. at the end of a test)."""
    return _sender().flush(timeout)
