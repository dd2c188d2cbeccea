"""Herald's Python client: send messages and error reports to a Herald gateway.

    import herald
    herald.Client().send("Nightly load finished", to=["rise"], payload={"rows": 1200})

Integrations (each imports its framework lazily, so ``import herald`` needs neither):

- :mod:`herald.airflow` — ``@herald_task`` and ``HeraldNotifier`` for Apache Airflow 2.6+ / 3.x;
- :mod:`herald.django` — ``HeraldHandler`` (logging) and a DRF ``exception_handler``.
"""

__version__ = "0.1.0"

from .client import Client, message_body  # noqa: E402
from .errors import (  # noqa: E402
    AuthenticationError,
    BadRequestError,
    ConflictError,
    HeraldAPIError,
    HeraldConfigError,
    HeraldConnectionError,
    HeraldError,
    IdempotencyConflictError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    ValidationError,
)
from .reports import build_report  # noqa: E402

__all__ = [
    "__version__",
    "Client",
    "message_body",
    "build_report",
    "HeraldError",
    "HeraldConfigError",
    "HeraldConnectionError",
    "HeraldAPIError",
    "BadRequestError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "ConflictError",
    "PayloadTooLargeError",
    "ValidationError",
    "IdempotencyConflictError",
    "RateLimitedError",
    "ServerError",
]
