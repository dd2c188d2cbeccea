"""Herald in a Django / DRF project: the lines to add to settings.py.

Two ways, pick one (or both: reports sent by HeraldHandler and by Sentry group separately).

A. herald-client (pip install ./clients/python from a Herald checkout): a logging handler
   and DRF's exception handler.
   Reports go to POST /api/v1/errors from a background thread with a bounded queue: a slow or
   down Herald never slows or breaks a request (full queue → dropped and counted).

B. No new package: the Sentry SDK you may already use, pointed at Herald (Herald speaks
   Sentry's envelope protocol). Herald groups, rate-limits and alerts exactly the same way.

Either way Herald sends the alert (event type `error.reported`: "<ExceptionType> in
<service>" with environment, path, method, user, count and the top frames) to every
destination whose `events` match it, e.g. a Slack destination:

    curl -X PUT http://herald.internal:8080/api/v1/destinations/oncall-slack \
      -H "Authorization: Bearer $HERALD_ADMIN_TOKEN" \
      -d '{"kind": "slack", "url": "${env:HERALD_SECRET_SLACK_ONCALL_WEBHOOK}", "events": ["error.reported"]}'
"""

import os

# ---- A. herald-client -------------------------------------------------------------------

HERALD_URL = os.environ.get("HERALD_URL", "http://herald.internal:8080")
HERALD_TOKEN = os.environ["HERALD_TOKEN"]  # a token with the `send` scope
HERALD_SERVICE = "shop-api"  # groups are per service; the alert's header names it
HERALD_ENVIRONMENT = os.environ.get("DJANGO_ENV", "production")
# HERALD_TO = ["oncall-slack"]          # optional: explicit destinations instead of routing

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {
        "console": {"class": "logging.StreamHandler"},
        "herald": {"class": "herald.django.HeraldHandler", "level": "ERROR"},
    },
    "loggers": {
        # Unhandled exceptions in views (Django logs them here with the request attached).
        "django.request": {"handlers": ["console", "herald"], "level": "ERROR", "propagate": False},
        # Your own logger.exception(...) / logger.error(...) calls.
        "shop": {"handlers": ["console", "herald"], "level": "INFO"},
    },
}

REST_FRAMEWORK = {
    # DRF's default handling, plus a report of every 5xx and unhandled exception.
    "EXCEPTION_HANDLER": "herald.django.exception_handler",
}

# ---- B. Sentry SDK → Herald (instead of A) ----------------------------------------------
#
#   SENTRY_DSN=http://hrld_…@herald.internal:8080/1     (the token is a `send` token;
#                                                        the project id must be a number)
#
# import sentry_sdk
# from sentry_sdk.integrations.django import DjangoIntegration
#
# sentry_sdk.init(
#     dsn=os.environ["SENTRY_DSN"],
#     integrations=[DjangoIntegration()],
#     send_default_pii=True,          # the alert shows which user hit the error
#     environment=HERALD_ENVIRONMENT,
# )
# sentry_sdk.set_tag("service", "shop-api")   # else the service is the DSN's project id
