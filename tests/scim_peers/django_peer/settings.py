"""Settings for the django-scim2-server peer. Everything comes from the environment the launcher sets:

JML_SCIM_PEER_DB     path of the sqlite file (a temp file per run)
JML_SCIM_PEER_TOKEN  the bearer token the peer accepts
"""

from __future__ import annotations

import os

SECRET_KEY = os.urandom(32).hex()
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_scim2_server",
]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "django_peer.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("JML_SCIM_PEER_DB", ":memory:"),
    },
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# django-scim2-server has no bearer-token scheme of its own: its access check is a setting holding a
# callable (HttpRequest) -> bool (default: a logged-in superuser). Ours compares the bearer token.
SCIM2_SERVER_AUTH_CHECK = "django_peer.auth.bearer_token"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
