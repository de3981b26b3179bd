"""Django settings of the demo site. ``LOGGING`` is the part that matters here.

Everything else is the minimum a project needs to serve requests: no database is used.
"""

from __future__ import annotations

import os

from safe_rotating._django_site.celeryconf import celery_config
from safe_rotating._django_site.logsetup import logging_from_env

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", "testserver"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "safe_rotating._django_site.logdemo.apps.LogdemoConfig",
    # System checks for the LOGGING setting (safe_rotating.W001 ... W004).
    "safe_rotating.contrib.django",
]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "safe_rotating._django_site.urls"
WSGI_APPLICATION = "safe_rotating._django_site.wsgi.application"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
TIME_ZONE = "UTC"  # Django sets the process time zone from this: log times are in UTC

# One handler for every logger, its class picked by SAFE_ROTATING_LOG_MODE (file, server,
# stdlib); see logsetup.py. In your own project, this is the only line to change: the class path.
LOGGING = logging_from_env()

# Celery reads the CELERY_* settings (namespace "CELERY" in celery_app.py). The broker is
# kombu's filesystem transport, so the demo needs no broker server; see celeryconf.py.
_celery = celery_config(os.environ.get("SAFE_ROTATING_CELERY_DIR", "celery-data"))
CELERY_BROKER_URL = _celery["broker_url"]
CELERY_BROKER_TRANSPORT = _celery["broker_transport"]
CELERY_BROKER_TRANSPORT_OPTIONS = _celery["broker_transport_options"]
CELERY_RESULT_BACKEND = _celery["result_backend"]
# Celery removes the root logger's handlers at start-up unless told not to: without this line
# the handler from LOGGING would stop receiving records in the worker, silently.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
