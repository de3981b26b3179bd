"""A WSGI app for the uWSGI client tests: ``GET /log?writer=K&n=M&sleep=S`` logs M numbered
records through ``LogServerHandler``, then holds the worker S seconds.

The handler is built, and one record logged, when the module is imported: in the uWSGI master in
its default mode (the workers are then forked from C), in each worker with ``--lazy-apps``.
Settings come from the environment.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from safe_rotating.client import LogServerHandler
from safe_rotating.verify import make_line

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
    query = parse_qs(environ.get("QUERY_STRING", ""))
    writer, count = int(query["writer"][0]), int(query["n"][0])
    for seq in range(count):
        log.info(make_line(writer, seq))
    time.sleep(float(query.get("sleep", ["0"])[0]))  # so that every worker gets requests
    body = f"{os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
