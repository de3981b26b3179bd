"""A WSGI app for the gunicorn tests: ``GET /log?writer=K&n=M`` logs M numbered records.

The handler is built when the module is imported: in the gunicorn master with ``--preload``
(every worker inherits it through fork), in each worker otherwise. Its settings come from the
environment so one module serves every test.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from safe_rotating import SafeRotatingFileHandler
from tests.apps import log_numbered

_handler = SafeRotatingFileHandler(
    os.environ["SAFE_ROTATING_TEST_LOG"],
    maxBytes=int(os.environ.get("SAFE_ROTATING_TEST_MAX_BYTES", "16384")),
    backupCount=10_000,
)
_handler.setFormatter(logging.Formatter("%(message)s"))
log = logging.getLogger("wsgi_logger")
log.propagate = False
log.addHandler(_handler)
log.setLevel(logging.INFO)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    return log_numbered(log, environ, start_response)
