"""Numbered records the stress command can check, from whichever process logs them.

Each record carries the pid of the process that logs it, that process's own sequence number and
the request (or task) id; :func:`safe_rotating.verify.verify_requests` checks them. The sequence
is an ``itertools.count`` per process, checked against the pid: a worker forked after this
module was imported (gunicorn ``--preload``, uWSGI's default mode, Celery prefork) starts its own
sequence from 0 instead of continuing the parent's.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading

from safe_rotating._django_site.logsetup import STRESS_LOGGER
from safe_rotating.verify import make_request_line

MESSAGE_LENGTH = 100
MAX_RECORDS = 10_000  # the record index has four digits

log = logging.getLogger(STRESS_LOGGER)
_lock = threading.Lock()
_owner = -1
_sequence = itertools.count()


def log_records(request: int, count: int, length: int = MESSAGE_LENGTH) -> int:
    """Log ``count`` numbered records of ``request``; return the pid that logged them.

    The sequence number is taken and the record logged under one lock, so that in a threaded
    worker the records reach the handler in sequence order.
    """
    if not 0 <= count <= MAX_RECORDS:
        raise ValueError(f"count must be between 0 and {MAX_RECORDS}, got {count}")
    global _owner, _sequence
    pid = os.getpid()
    for index in range(count):
        with _lock:
            if _owner != pid:  # first record of this process: a fresh sequence space
                _owner, _sequence = pid, itertools.count()
            log.info(make_request_line(pid, next(_sequence), request, index, length))
    return pid
