"""Helpers for the tests that start a real WSGI server (gunicorn, uWSGI) as a subprocess."""

from __future__ import annotations

import socket
import subprocess
import time


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until_serving(
    port: int, server: subprocess.Popen[bytes], name: str, timeout: float = 60
) -> None:
    """Return once ``port`` accepts connections; fail if ``server`` exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = server.poll()
        assert code is None, f"{name} exited during start-up with status {code}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{name} did not start listening within {timeout:g} s")
