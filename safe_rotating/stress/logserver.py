"""Starting ``safe-rotating-server`` as a subprocess and waiting until it is ready.

The stress command's server mode, the Django stress's server mode and the tests' server helper
all start it here: each says what "ready" means for it (a port that accepts connections, a
``/healthz`` that answers, a line in its output) and where its output goes.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "ServerStartError",
    "accepts_connections",
    "free_port",
    "server_command",
    "start_log_server",
]


class ServerStartError(RuntimeError):
    """The server exited during start-up, or was not ready in time (it was then killed).

    ``process`` is the server's process, already ended, for a caller that records its status.
    """

    def __init__(self, message: str, process: subprocess.Popen[bytes]) -> None:
        super().__init__(message)
        self.process = process


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def server_command(*args: str) -> list[str]:
    """``python -m safe_rotating.server ARGS`` with this interpreter."""
    return [sys.executable, "-m", "safe_rotating.server", *args]


def accepts_connections(port: int) -> bool:
    """Does 127.0.0.1:``port`` accept a TCP connection now?"""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def start_log_server(
    command: Sequence[str],
    ready: Callable[[], bool],
    *,
    timeout: float,
    output: Callable[[], str] | None = None,
    poll: float = 0.05,
    **popen: Any,
) -> subprocess.Popen[bytes]:
    """Start ``command`` (see :func:`server_command`) and return its process once ``ready()``.

    ``popen`` goes to :class:`subprocess.Popen` (``stdout``, ``stderr``, ``env``, ``cwd``...).
    If the server exits first, or is not ready within ``timeout`` seconds, raises
    :class:`ServerStartError`, its message ending with ``output()`` (what the server printed)
    when given; a server still running then is killed, so that none is left behind.
    """
    process = subprocess.Popen(list(command), **popen)
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return process
        if process.poll() is not None:
            status = process.returncode
            message = f"safe-rotating-server exited during start-up with status {status}"
            break
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            message = f"safe-rotating-server did not answer within {timeout:g}s"
            break
        time.sleep(poll)
    raise ServerStartError(message + (f": {output()}" if output is not None else ""), process)
