"""gunicorn settings: ``gunicorn -c <this file>`` (``examples/django_site/gunicorn.conf.py``).

``logconfig_dict`` is the same dict as Django's ``LOGGING``: the master process logs to the same
rotating file as the workers (the workers then configure it again through Django's ``LOGGING``;
with ``--preload`` the master does too, before forking). gunicorn's own messages (worker boots,
timeouts) stay on its ``gunicorn.error`` logger, which does not propagate: add
``"gunicorn.error": {"handlers": ["app"], "level": "INFO", "propagate": False}`` to ``loggers``
to send them to the file as well.

gunicorn lays this dict over its defaults one top-level key at a time: without ``root`` and
``loggers`` entries of our own, its defaults would point them at its console handlers, which
this dict does not define, and gunicorn would exit at start-up.
"""

from __future__ import annotations

import os

from safe_rotating._django_site.logsetup import logging_from_env

wsgi_app = "safe_rotating._django_site.wsgi:application"
bind = os.environ.get("SAFE_ROTATING_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("SAFE_ROTATING_WORKERS", "4"))
worker_class = "sync"
loglevel = os.environ.get("SAFE_ROTATING_GUNICORN_LOGLEVEL", "info")
logconfig_dict = logging_from_env()
# preload_app = True  # build the app (and the handler) in the master: works as well
