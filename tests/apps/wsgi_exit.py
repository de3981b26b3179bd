"""A WSGI app for the uWSGI hand-over test: ``GET /log?writer=K&n=M`` logs M numbered records
through ``LogServerHandler`` (``flush_interval`` 1 s: nothing would leave on its own before
the next request); ``GET /die`` ends the worker with ``os._exit`` at once, as uWSGI ends a
worker without running ``atexit``. Settings come from the environment."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from safe_rotating.client import LogServerHandler
from tests.apps import log_numbered

_handler = LogServerHandler(
    os.environ["SAFE_ROTATING_TEST_ADDRESS"],
    spool_dir=os.environ["SAFE_ROTATING_TEST_SPOOL"],
    flush_interval=1.0,
    batch_size=10_000,
    queue_size=10_000,
)
_handler.setFormatter(logging.Formatter("%(message)s"))
log = logging.getLogger("wsgi_exit")
log.propagate = False
log.addHandler(_handler)
log.setLevel(logging.INFO)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/die":
        os._exit(0)
    return log_numbered(log, environ, start_response)
