"""Settings of the test Django project; HERALD_URL / HERALD_TOKEN come from the environment
(the test sets them to the test server before Django starts)."""

SECRET_KEY = "pytest-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1"]
ROOT_URLCONF = "django_app.urls"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "rest_framework",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

HERALD_SERVICE = "shop"
HERALD_ENVIRONMENT = "test"

# The documented lines (docs/integrations.md, examples/django_settings.py).
REST_FRAMEWORK = {
    "EXCEPTION_HANDLER": "herald.django.exception_handler",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.BasicAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"herald": {"class": "herald.django.HeraldHandler", "level": "ERROR"}},
    "loggers": {"django.request": {"handlers": ["herald"], "level": "ERROR", "propagate": False}},
}
