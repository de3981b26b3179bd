"""A WSGI app for the uWSGI client tests: ``GET /log?writer=K&n=M&sleep=S`` logs M numbered
records through ``LogServerHandler``, then holds the worker S seconds.

The handler is built, and one record logged, when the module is imported: in the uWSGI master in
its default mode (the workers are then forked from C), in each worker with ``--lazy-apps``.
Settings come from the environment.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from safe_rotating.client import LogServerHandler
from safe_rotating.verify import make_line
from tests.apps import log_numbered

AT_IMPORT = 999  # writer id of the record logged at import

_handler = LogServerHandler(
    os.environ["SAFE_ROTATING_TEST_ADDRESS"],
    spool_dir=os.environ["SAFE_ROTATING_TEST_SPOOL"],
    ack_timeout=1.0,
)
log = logging.getLogger("wsgi_client")
log.propagate = False
log.addHandler(_handler)
log.setLevel(logging.INFO)
log.info(make_line(AT_IMPORT, 0))


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    return log_numbered(log, environ, start_response)
