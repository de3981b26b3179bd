"""The Celery app: ``celery -A safe_rotating._django_site.celery_app worker``.

Configured from the Django settings (``CELERY_*``), the usual Django + Celery layout. Logging is
configured by Django (``LOGGING``) when the worker imports the app; ``worker_hijack_root_logger``
is false so Celery leaves it alone, and the prefork pool processes inherit the handler.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "safe_rotating._django_site.settings")

app = Celery("logdemo")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["safe_rotating._django_site.logdemo"])
