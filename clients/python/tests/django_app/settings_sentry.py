"""The test project as a Sentry user runs it: Herald is only the SENTRY_DSN (no Herald handler).

It is served by a real WSGI server (Sentry's Django integration reads the request there), so
the database is a file that the server thread shares: DJANGO_DB.
"""

import os

from .settings import *  # noqa: F401,F403

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["DJANGO_DB"]}}
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.BasicAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
}
LOGGING = {"version": 1, "disable_existing_loggers": False}
