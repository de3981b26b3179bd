"""A WSGI app for the uWSGI spool-bound test: at import — in the uWSGI master, in its default
mode — it logs ``SAFE_ROTATING_TEST_COUNT`` records through ``LogServerHandler`` to an address
where no server listens, with ``spool_max_bytes=SAFE_ROTATING_TEST_SPOOL_MAX``, then writes the
handler's counters (JSON) to ``SAFE_ROTATING_TEST_STATS``. ``GET /`` answers the worker's pid.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any

from safe_rotating.client import LogServerHandler
from safe_rotating.verify import make_line

_handler = LogServerHandler(
    os.environ["SAFE_ROTATING_TEST_ADDRESS"],
    spool_dir=os.environ["SAFE_ROTATING_TEST_SPOOL"],
    spool_max_bytes=int(os.environ["SAFE_ROTATING_TEST_SPOOL_MAX"]),
)
log = logging.getLogger("wsgi_master_spool")
log.propagate = False
log.addHandler(_handler)
log.setLevel(logging.INFO)
for _seq in range(int(os.environ["SAFE_ROTATING_TEST_COUNT"])):
    log.info(make_line(0, _seq, 1400))
_stats = os.environ["SAFE_ROTATING_TEST_STATS"]
with open(f"{_stats}.tmp", "w") as _out:
    json.dump(asdict(_handler.stats()), _out)
os.replace(f"{_stats}.tmp", _stats)  # whole when the test sees it


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = f"{os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
