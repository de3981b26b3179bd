"""A Celery app whose prefork pool processes log numbered records through ``LogServerHandler``.

``celery -A tests.celery_apps.records_app worker --pool prefork``: the task
``logdemo.log_records(request, count)`` logs ``count`` request records (the shipped Django
site's records, :mod:`safe_rotating._django_site.logdemo.records`) and answers which pid logged
them, as the site's own task does, so the same verification applies.

Unlike the site's ``celery_app``, this one needs no Django and connects no receiver to Celery's
``worker_process_shutdown`` signal (the README's ``logging.shutdown()`` one): a pool process,
which leaves through ``os._exit``, is delivered only by the handler's own exit hook.

Logging is configured when the worker imports this module, in the worker's main process, before
the pool processes are forked from it: each of them inherits the handler and must send under a
client id of its own. The broker is kombu's filesystem transport under
``SAFE_ROTATING_CELERY_DIR``; the log server's address and the spool directory come from
``SAFE_ROTATING_SERVER`` and ``SAFE_ROTATING_SPOOL_DIR`` (:func:`logging_from_env`).
"""

from __future__ import annotations

import logging.config
import os
from typing import Any

from celery import Celery

from safe_rotating._django_site.celeryconf import celery_config
from safe_rotating._django_site.logdemo.records import log_records
from safe_rotating._django_site.logsetup import logging_from_env

TASK = "logdemo.log_records"

# A pool process that reaches --max-tasks-per-child while the server is down waits for it in its
# exit hook for at most flush_timeout, then leaves its records in the spool (and says so). The
# default 5 s is less than a kill, a 1 s pause and a new server's start can take on a loaded
# machine: a generous bound here, so that "the server can be reached" holds.
_config = logging_from_env()
_config["handlers"]["app"]["flush_timeout"] = 30.0
logging.config.dictConfig(_config)

app = Celery("records_app")
app.conf.update(celery_config(os.environ["SAFE_ROTATING_CELERY_DIR"]))


@app.task(name=TASK)  # type: ignore[untyped-decorator]
def log_records_task(request: int, count: int) -> dict[str, Any]:
    """Log ``count`` records of ``request``; the result says which pid logged them."""
    return {"pid": log_records(request, count), "request": request, "records": count}
