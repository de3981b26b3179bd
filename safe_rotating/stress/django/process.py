"""What the Django stress modules share about the processes they start: time limits, their
output, a plain HTTP GET, and stopping them."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
from pathlib import Path

__all__ = ["START_TIMEOUT", "STOP_TIMEOUT", "http_get", "stop_process", "tail"]

START_TIMEOUT = 90.0
STOP_TIMEOUT = 60.0


def http_get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    conn.request("GET", path, headers={"Connection": "close"})
    response = conn.getresponse()
    return response.status, response.read()


def tail(output: Path, chars: int = 1500) -> str:
    """The end of a server's output file, for an error message."""
    try:
        return output.read_text(errors="replace")[-chars:].strip() or "(no output)"
    except OSError:
        return "(no output)"


def stop_process(server: subprocess.Popen[bytes], sig: signal.Signals) -> int | None:
    """Stop ``server`` with ``sig``: its exit status, or ``None`` when its process group had to
    be killed after :data:`STOP_TIMEOUT` seconds."""
    if server.poll() is None:
        server.send_signal(sig)
    try:
        return server.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        return None
