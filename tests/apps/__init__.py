"""Small WSGI apps the gunicorn and uWSGI tests serve; what they share."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from safe_rotating.verify import make_line


def log_numbered(
    log: logging.Logger, environ: dict[str, Any], start_response: Callable[..., Any]
) -> list[bytes]:
    """``GET /log?writer=K&n=M[&sleep=S]``: log M numbered records of writer K through ``log``,
    hold the worker S seconds (so that every worker gets requests), answer the worker's pid."""
    query = parse_qs(environ.get("QUERY_STRING", ""))
    writer, count = int(query["writer"][0]), int(query["n"][0])
    for seq in range(count):
        log.info(make_line(writer, seq))
    time.sleep(float(query.get("sleep", ["0"])[0]))
    body = f"{os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
