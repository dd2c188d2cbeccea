"""Exceptions raised by the Herald client.

Every error the client raises is a :class:`HeraldError`. Answers from Herald that are
errors (4xx, and 5xx once the retries are spent) raise a :class:`HeraldAPIError` subclass
chosen by status code; it carries Herald's RFC 9457 problem document as ``problem``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Type


class HeraldError(Exception):
    """Base class of every error raised by this package."""


class HeraldConfigError(HeraldError):
    """The client is missing its URL or token, or they are malformed."""


class HeraldConnectionError(HeraldError):
    """Herald could not be reached (connection refused, reset, timed out), after retries."""


class HeraldAPIError(HeraldError):
    """Herald answered with an error status.

    Attributes:
        status: the HTTP status code.
        problem: the ``application/problem+json`` document (``type``, ``title``,
            ``status``, ``detail``, ``errors``) or, for a non-JSON answer, ``{"detail": <text>}``.
        headers: the response headers (lower-case names).
    """

    def __init__(self, status: int, problem: Mapping[str, Any], headers: Optional[Mapping[str, str]] = None):
        self.status = status
        self.problem: Dict[str, Any] = dict(problem)
        self.headers: Dict[str, str] = dict(headers or {})
        super().__init__(self._describe())

    @property
    def type(self) -> Optional[str]:
        """The problem ``type`` URI, e.g. ``urn:herald:problem:validation``."""
        value = self.problem.get("type")
        return value if isinstance(value, str) else None

    @property
    def title(self) -> Optional[str]:
        value = self.problem.get("title")
        return value if isinstance(value, str) else None

    @property
    def detail(self) -> Optional[str]:
        value = self.problem.get("detail")
        return value if isinstance(value, str) else None

    @property
    def errors(self) -> List[Dict[str, Any]]:
        """Per-field errors: ``[{"field": ..., "message": ...}]`` (empty when none)."""
        value = self.problem.get("errors")
        return [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []

    def _describe(self) -> str:
        text = f"Herald answered {self.status}"
        if self.title:
            text += f" {self.title}"
        if self.detail:
            text += f": {self.detail}"
        fields = [f"{e.get('field')}: {e.get('message')}" for e in self.errors]
        if fields and (not self.detail or len(fields) > 1):
            text += " (" + "; ".join(fields) + ")"
        return text


class BadRequestError(HeraldAPIError):
    """400: the body was not JSON."""


class AuthenticationError(HeraldAPIError):
    """401: no token, or a wrong or revoked one."""


class PermissionDeniedError(HeraldAPIError):
    """403: the token lacks the scope (``send``, ``read`` or ``admin``)."""


class NotFoundError(HeraldAPIError):
    """404: unknown id or name."""


class ConflictError(HeraldAPIError):
    """409: the request conflicts with the current state."""


class PayloadTooLargeError(HeraldAPIError):
    """413: the body is over Herald's cap."""


class ValidationError(HeraldAPIError):
    """422: well-formed JSON that failed validation (``errors`` names the fields)."""


class IdempotencyConflictError(ValidationError):
    """422: this idempotency key was already used with a different body.

    The first request with the key was accepted; this one was not sent again.
    """


class RateLimitedError(HeraldAPIError):
    """429: too many requests (after the client's own retries)."""


class ServerError(HeraldAPIError):
    """5xx: Herald failed or is unavailable (after the client's own retries)."""


_BY_STATUS: Dict[int, Type[HeraldAPIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimitedError,
}


def error_for(status: int, problem: Mapping[str, Any], headers: Optional[Mapping[str, str]] = None) -> HeraldAPIError:
    """Builds the :class:`HeraldAPIError` subclass that fits ``status`` and ``problem``."""
    cls: Type[HeraldAPIError]
    if status >= 500:
        cls = ServerError
    else:
        cls = _BY_STATUS.get(status, HeraldAPIError)
    detail = problem.get("detail")
    if status == 422 and isinstance(detail, str) and "idempotency-key" in detail.lower() and "already used" in detail.lower():
        cls = IdempotencyConflictError
    return cls(status, problem, headers)
