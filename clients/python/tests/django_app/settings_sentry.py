"""The test project as a Sentry user runs it: Herald is only the SENTRY_DSN (no Herald handler)."""

from .settings import *  # noqa: F401,F403

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.BasicAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
}
LOGGING = {"version": 1, "disable_existing_loggers": False}
