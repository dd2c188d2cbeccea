"""The Herald HTTP client (standard library only).

    >>> import herald
    >>> client = herald.Client()            # HERALD_URL, HERALD_TOKEN
    >>> client.send("파이프라인 완료 🎉", to=["rise"], payload={"rows": 1200})
    {'id': 'msg_…', 'event_type': 'message', 'deliveries': [...]}

Every submission carries an idempotency key (a random one unless you give yours), so the
client can safely retry connection errors, 5xx and 429 answers with exponential backoff:
Herald answers a repeat with the original 202 and creates nothing new.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from email.utils import parsedate_to_datetime
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from . import __version__
from .errors import HeraldConfigError, HeraldConnectionError, error_for
from .reports import ExcInfo, build_report, current_exc_info

#: Statuses worth another try: the request did not take effect or may succeed later.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

Json = Dict[str, Any]


def _new_key() -> str:
    return f"hc_{uuid.uuid4().hex}"


def _retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _encode_attachments(attachments: Optional[Sequence[Mapping[str, Any]]]) -> Optional[List[Json]]:
    """Attachments as Herald takes them; ``data`` given as ``bytes`` is base64-encoded here."""
    if attachments is None:
        return None
    out: List[Json] = []
    for a in attachments:
        item = dict(a)
        data = item.get("data")
        if isinstance(data, (bytes, bytearray, memoryview)):
            item["data"] = base64.b64encode(bytes(data)).decode("ascii")
        out.append(item)
    return out


def message_body(
    text: Optional[str] = None,
    *,
    to: Optional[Union[str, Sequence[str]]] = None,
    event_type: str = "message",
    title: Optional[str] = None,
    severity: str = "info",
    payload: Optional[Mapping[str, Any]] = None,
    idempotency_key: Optional[str] = None,
    channels: Optional[Mapping[str, Any]] = None,
    attachments: Optional[Sequence[Mapping[str, Any]]] = None,
) -> Json:
    """The JSON body of one message (``None`` fields left out; ``to`` may be one name)."""
    body: Json = {"event_type": event_type, "severity": severity}
    if text is not None:
        body["text"] = text
    if title is not None:
        body["title"] = title
    if payload is not None:
        body["payload"] = dict(payload)
    if to is not None:
        body["to"] = [to] if isinstance(to, str) else list(to)
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    if channels is not None:
        body["channels"] = dict(channels)
    encoded = _encode_attachments(attachments)
    if encoded is not None:
        body["attachments"] = encoded
    return body


class Response:
    """A decoded answer: status, lower-case headers and the JSON body (or ``None``)."""

    def __init__(self, status: int, headers: Mapping[str, str], body: Any):
        self.status = status
        self.headers = dict(headers)
        self.body = body

    def __repr__(self) -> str:
        return f"Response(status={self.status}, body={self.body!r})"


class Client:
    """A client for one Herald server.

    Args:
        url: Herald's base URL, e.g. ``http://127.0.0.1:8080``; default ``HERALD_URL``.
        token: an API token (``hrld_…``); default ``HERALD_TOKEN``. Sending needs the ``send``
            scope, reading ``read``, destinations and tokens ``admin``.
        timeout: seconds for each HTTP request.
        retries: extra attempts after a connection error, a 5xx, 408, 425 or 429 answer
            (only for requests that are safe to repeat: idempotent submissions and GETs).
        backoff: the first retry's delay in seconds; it doubles per retry (with jitter),
            capped by ``max_backoff``. A ``Retry-After`` header wins when it is longer.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        timeout: float = 10.0,
        retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        user_agent: Optional[str] = None,
    ):
        url = url if url is not None else os.environ.get("HERALD_URL")
        token = token if token is not None else os.environ.get("HERALD_TOKEN")
        if not url:
            raise HeraldConfigError("no Herald URL: pass url=... or set HERALD_URL (e.g. http://127.0.0.1:8080)")
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise HeraldConfigError(f"the Herald URL must be http(s)://host[:port], got {url!r}")
        if not token:
            raise HeraldConfigError("no Herald token: pass token=... or set HERALD_TOKEN")
        if any(c in token for c in "\r\n"):
            raise HeraldConfigError("the Herald token contains a line break")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.user_agent = user_agent or f"herald-client-python/{__version__}"

    def __repr__(self) -> str:
        return f"Client(url={self.url!r})"

    # ---- messages ---------------------------------------------------------------------

    def send(
        self,
        text: Optional[str] = None,
        *,
        to: Optional[Union[str, Sequence[str]]] = None,
        event_type: str = "message",
        title: Optional[str] = None,
        severity: str = "info",
        payload: Optional[Mapping[str, Any]] = None,
        idempotency_key: Optional[str] = None,
        channels: Optional[Mapping[str, Any]] = None,
        attachments: Optional[Sequence[Mapping[str, Any]]] = None,
    ) -> Json:
        """Submits one message; returns the 202 body ``{"id", "event_type", "deliveries"}``.

        Without ``to`` the message is routed by its ``event_type`` to every destination whose
        ``events``/``filter`` match. ``idempotency_key`` (≤ 255 characters; a random one when
        absent) makes repeats harmless: the same key and body return the original answer.
        Attachment ``data`` may be given as ``bytes``.

        Raises:
            ValidationError: e.g. an unknown destination in ``to`` (422).
            IdempotencyConflictError: the key was already used with another body.
            HeraldConnectionError: Herald was unreachable through every retry.
        """
        key = idempotency_key or _new_key()
        body = message_body(
            text,
            to=to,
            event_type=event_type,
            title=title,
            severity=severity,
            payload=payload,
            channels=channels,
            attachments=attachments,
        )
        resp = self.request("POST", "/api/v1/messages", body, headers={"Idempotency-Key": key}, retry=True)
        result = dict(resp.body) if isinstance(resp.body, dict) else {}
        result["idempotent_replayed"] = resp.headers.get("idempotent-replayed") == "true"
        return result

    def send_batch(self, messages: Iterable[Mapping[str, Any]]) -> List[Json]:
        """Submits up to 1000 messages in one request and one commit.

        Each message is a dict with the fields of :meth:`send` (``to`` may be one name,
        attachment ``data`` may be ``bytes``). Messages without ``idempotency_key`` get a
        random one, so the whole batch is retried safely. Returns the per-message results in
        order: the 202 body with ``"status": 202``, or a problem document for a rejected one.
        """
        prepared: List[Json] = []
        for m in messages:
            fields = dict(m)
            fields.setdefault("idempotency_key", _new_key())
            text = fields.pop("text", None)
            prepared.append(message_body(text, **fields))
        resp = self.request("POST", "/api/v1/messages/batch", {"messages": prepared}, retry=True)
        results = resp.body.get("results") if isinstance(resp.body, dict) else None
        return list(results) if isinstance(results, list) else []

    def get_message(self, message_id: str) -> Json:
        """A stored message with its deliveries (``read`` scope)."""
        return self._get(f"/api/v1/messages/{urllib.parse.quote(message_id, safe='')}")

    def get_delivery(self, delivery_id: str) -> Json:
        """One delivery with its ``attempts`` (``read`` scope)."""
        return self._get(f"/api/v1/deliveries/{urllib.parse.quote(delivery_id, safe='')}")

    # ---- errors -------------------------------------------------------------------------

    def report_error(
        self,
        exc: Union[BaseException, ExcInfo, None] = None,
        *,
        message: Optional[str] = None,
        service: Optional[str] = None,
        environment: Optional[str] = None,
        level: str = "error",
        request: Optional[Mapping[str, Any]] = None,
        user: Optional[Mapping[str, Any]] = None,
        tags: Optional[Mapping[str, Any]] = None,
        fingerprint: Optional[Union[str, List[str]]] = None,
        to: Optional[Union[str, List[str]]] = None,
        release: Optional[str] = None,
        extra: Optional[Mapping[str, Any]] = None,
    ) -> Json:
        """Sends an error report to ``POST /api/v1/errors``; returns ``{"group", "new_group", "alerted"}``.

        ``exc`` is an exception (its traceback is sent oldest frame first) or an
        ``exc_info`` triple; without ``exc`` and ``message``, the exception being handled; ``request`` is ``{"method", "url", "path"}``, ``user`` is
        ``{"id", "username", "email"}``; ``to`` names the alert's destinations (otherwise
        it is routed by event type ``error.reported``). Herald groups reports (by ``fingerprint`` or by
        exception type + innermost in-app frame) and alerts a new group, a regression or a
        spike at most once per group per window, as event type ``error.reported``.
        """
        if exc is None and message is None:
            exc = current_exc_info()  # called in an `except` block: report what is handled
        body = build_report(
            exc,
            message=message,
            service=service,
            environment=environment,
            level=level,
            request=request,
            user=user,
            tags=tags,
            fingerprint=fingerprint,
            to=to,
            release=release,
            extra=extra,
        )
        return self.post_report(body)

    def error_groups(
        self,
        *,
        status: Optional[str] = None,
        service: Optional[str] = None,
        limit: Optional[int] = None,
        cursor: Optional[str] = None,
    ) -> Json:
        """One page of error groups (``read`` scope): ``{"items": [...], "next_cursor"}``.

        ``status`` is ``unresolved`` or ``resolved``; pass ``next_cursor`` as ``cursor`` for
        the next page.
        """
        return self._get(
            "/api/v1/error-groups", {"status": status, "service": service, "limit": limit, "cursor": cursor}
        )

    def resolve_error_group(self, group_id: str) -> Json:
        """Marks a group resolved (``admin`` scope); a later report of it is a regression and alerts."""
        return self._group_action(group_id, "resolve")

    def unresolve_error_group(self, group_id: str) -> Json:
        """Marks a resolved group unresolved again (``admin`` scope)."""
        return self._group_action(group_id, "unresolve")

    def _group_action(self, group_id: str, action: str) -> Json:
        path = f"/api/v1/error-groups/{urllib.parse.quote(group_id, safe='')}/{action}"
        resp = self.request("POST", path, retry=True)
        return dict(resp.body) if isinstance(resp.body, dict) else {}

    def post_report(self, report: Mapping[str, Any]) -> Json:
        """Sends a report body built elsewhere (e.g. :func:`herald.reports.build_report`)."""
        headers = {"Idempotency-Key": _new_key()}
        resp = self.request("POST", "/api/v1/errors", dict(report), headers=headers, retry=True)
        return dict(resp.body) if isinstance(resp.body, dict) else {}

    # ---- HTTP ---------------------------------------------------------------------------

    def _get(self, path: str, params: Optional[Mapping[str, Any]] = None) -> Json:
        if params:
            query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
            path = f"{path}?{query}" if query else path
        resp = self.request("GET", path, retry=True)
        return dict(resp.body) if isinstance(resp.body, dict) else {}

    def request(
        self,
        method: str,
        path: str,
        body: Optional[Any] = None,
        *,
        headers: Optional[Mapping[str, str]] = None,
        retry: bool = False,
    ) -> Response:
        """Sends one API request and decodes the JSON answer.

        With ``retry=True`` (only for requests that are safe to repeat) connection errors and
        retryable statuses are retried with backoff. A 2xx answer is returned; an error
        status raises the matching :class:`~herald.errors.HeraldAPIError`.
        """
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        all_headers = {
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/json, application/problem+json",
            "User-Agent": self.user_agent,
        }
        if data is not None:
            all_headers["Content-Type"] = "application/json; charset=utf-8"
        all_headers.update(headers or {})
        attempts = 1 + (self.retries if retry else 0)
        last_error: Optional[BaseException] = None
        for attempt in range(attempts):
            wait: Optional[float] = None
            try:
                status, resp_headers, raw = self._once(method, self.url + path, data, all_headers)
            except (urllib.error.URLError, OSError, socket.timeout, http.client.HTTPException) as e:
                last_error = e
            else:
                decoded = _decode(raw)
                if 200 <= status < 300:
                    return Response(status, resp_headers, decoded)
                problem = decoded if isinstance(decoded, dict) else {"detail": raw.decode("utf-8", "replace")[:2000]}
                err = error_for(status, problem, resp_headers)
                if status not in RETRY_STATUSES or attempt + 1 >= attempts:
                    raise err
                last_error = err
                wait = _retry_after(resp_headers.get("retry-after"))
            if attempt + 1 < attempts:
                delay = min(self.max_backoff, self.backoff * (2**attempt)) * random.uniform(0.8, 1.2)
                if wait is not None:
                    delay = max(delay, min(wait, 60.0))
                time.sleep(delay)
        raise HeraldConnectionError(
            f"could not reach Herald at {self.url} ({method} {path}) after {attempts} attempt(s): {last_error}"
        ) from last_error

    def _once(
        self, method: str, url: str, data: Optional[bytes], headers: Mapping[str, str]
    ) -> Tuple[int, Dict[str, str], bytes]:
        req = urllib.request.Request(url, data=data, method=method, headers=dict(headers))
        try:
            with _OPENER.open(req, timeout=self.timeout) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as e:
            with e:
                raw = e.read()
                return e.code, {k.lower(): v for k, v in (e.headers or {}).items()}, raw


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Herald never redirects API calls; a redirect is answered as the error it is."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None


# Like any urllib program, HTTP(S)_PROXY / NO_PROXY from the environment are honoured.
_OPENER = urllib.request.build_opener(_NoRedirect())


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
