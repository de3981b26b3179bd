"""The Celery app: ``celery -A safe_rotating._django_site.celery_app worker``.

Configured from the Django settings (``CELERY_*``), the usual Django + Celery layout. Logging is
configured by Django (``LOGGING``) when the worker imports the app; ``worker_hijack_root_logger``
is false so Celery leaves it alone, and the prefork pool processes inherit the handler.

A pool process leaves with ``os._exit``: Python's atexit handlers, ``logging.shutdown()`` among
them, never run there. A handler that holds records for a moment (``LogServerHandler`` sends
them in batches from a thread) must be flushed before that, from Celery's
``worker_process_shutdown`` signal, which the pool process sends just before it exits.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery
from celery.signals import worker_process_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "safe_rotating._django_site.settings")

app = Celery("logdemo")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["safe_rotating._django_site.logdemo"])


@worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def flush_logging(**kwargs: Any) -> None:
    """Flush and close every handler before the pool process exits."""
    logging.shutdown()
