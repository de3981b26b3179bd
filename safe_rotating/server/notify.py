"""systemd's readiness protocol (``Type=notify``), without libsystemd: one datagram a message.

systemd names a socket in ``NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace);
the service sends ``READY=1`` once it serves, ``STOPPING=1`` when it begins to stop, and
``STATUS=...`` lines that ``systemctl status`` shows. Without the variable nothing is sent, and
a notification that cannot be delivered never stops the server: it only matters to systemd.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["notify"]


def notify(
    *fields: str, environ: Mapping[str, str] = os.environ, log: logging.Logger | None = None
) -> bool:
    """Send ``fields`` (``"READY=1"``, ``"STATUS=listening"``) to ``$NOTIFY_SOCKET`` as one
    datagram; whether one was sent. A failure is logged (at warning) and otherwise ignored."""
    where = environ.get("NOTIFY_SOCKET", "")
    if not where:
        return False
    # "@name" is an abstract socket: its address starts with a NUL byte and has no file.
    address = "\0" + where[1:] if where.startswith("@") else where
    message = "\n".join(fields).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message, address)
    except OSError as exc:
        if log is not None:
            log.warning("cannot notify systemd at NOTIFY_SOCKET=%s: %s", where, exc)
        return False
    return True
