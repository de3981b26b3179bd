"""The ``LOGGING`` dict of the site, chosen by environment variables (standard library only).

``SAFE_ROTATING_LOG_MODE`` picks the handler class, the only line that differs:

========  ==================================================  ==================================
mode      class                                               writes
========  ==================================================  ==================================
file      ``safe_rotating.SafeRotatingFileHandler``           ``SAFE_ROTATING_LOG_FILE`` itself
server    ``safe_rotating.client.LogServerHandler``           to ``SAFE_ROTATING_SERVER`` (its
                                                              spool: ``SAFE_ROTATING_SPOOL_DIR``)
stdlib    ``logging.handlers.RotatingFileHandler``            ``SAFE_ROTATING_LOG_FILE`` (not
                                                              process-safe: for comparison)
========  ==================================================  ==================================

The same dict serves Django (``settings.LOGGING``), gunicorn (``logconfig_dict`` in
``gunicorn_conf.py``) and the tests, which load it with ``logging.config.dictConfig``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

__all__ = [
    "HANDLER_CLASSES",
    "LINE_PREFIX",
    "LOG_FORMAT",
    "MODES",
    "SERVER_FORMAT",
    "STRESS_LOGGER",
    "logging_config",
    "logging_from_env",
    "longest_prefix",
]

HANDLER_CLASSES = {
    "file": "safe_rotating.SafeRotatingFileHandler",
    "server": "safe_rotating.client.LogServerHandler",
    "stdlib": "logging.handlers.RotatingFileHandler",
}
MODES = tuple(HANDLER_CLASSES)

#: Every line of the log: time, level, pid, logger, message (``str.format`` style).
LOG_FORMAT = "{asctime} {levelname} [{process}] {name}: {message}"
#: The same line for ``safe-rotating-server --format`` (``%``-style), which formats the records
#: of ``server`` mode: the server's files then look like those the ``file`` mode writes.
SERVER_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
#: What :data:`LOG_FORMAT` puts before the message, as a regular expression for the verifier.
LINE_PREFIX = rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \[\d+\] [\w.]+: "
#: The logger the stress view and task log their numbered records to.
STRESS_LOGGER = "logdemo.stress"

DEFAULT_FILE = "logs/app.log"
DEFAULT_MAX_BYTES = 1024 * 1024
DEFAULT_BACKUP_COUNT = 10
DEFAULT_SERVER = "127.0.0.1:9020"


def longest_prefix(logger: str = STRESS_LOGGER, level: str = "INFO") -> int:
    """The longest prefix :data:`LOG_FORMAT` can give a record of ``logger`` (for size limits)."""
    record = logging.LogRecord(logger, logging.getLevelName(level), "", 0, "", None, None)
    record.process = 9_999_999  # 7 digits: Linux pids stay below 2**22
    return len(logging.Formatter(LOG_FORMAT, style="{").format(record))


def _handler(
    mode: str,
    filename: str,
    max_bytes: int,
    backup_count: int,
    server: str,
    spool_dir: str | None = None,
) -> dict[str, Any]:
    if mode not in HANDLER_CLASSES:
        raise ValueError(f"SAFE_ROTATING_LOG_MODE must be one of {', '.join(MODES)}, got {mode!r}")
    handler: dict[str, Any] = {"class": HANDLER_CLASSES[mode], "formatter": "line"}
    if mode == "server":
        handler["address"] = server
        if spool_dir:
            handler["spool_dir"] = spool_dir
    else:
        handler.update(filename=filename, maxBytes=max_bytes, backupCount=backup_count)
    return handler


def logging_config(
    mode: str = "file",
    filename: str = DEFAULT_FILE,
    max_bytes: int = DEFAULT_MAX_BYTES,
    backup_count: int = DEFAULT_BACKUP_COUNT,
    server: str = DEFAULT_SERVER,
    spool_dir: str | None = None,
) -> dict[str, Any]:
    """A complete ``dictConfig`` dict: every logger, Django's included, goes to one handler.

    ``disable_existing_loggers`` is false so that loggers created before the dict is applied
    (by gunicorn, Celery, imported modules) keep working. ``root`` and ``loggers`` are both
    present, as gunicorn's ``logconfig_dict`` needs. ``spool_dir`` (server mode only) is the
    handler's spool directory; without it the handler uses its default, one per user.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"format": LOG_FORMAT, "style": "{"}},
        "handlers": {"app": _handler(mode, filename, max_bytes, backup_count, server, spool_dir)},
        "root": {"handlers": ["app"], "level": "WARNING"},
        "loggers": {
            # django.request logs 5xx responses with a traceback and the request (WARNING for
            # 4xx); it propagates to root, so it lands in the same file.
            "django": {"level": "INFO"},
            "logdemo": {"level": "DEBUG"},
        },
    }


def logging_from_env(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """:func:`logging_config` with the values of the ``SAFE_ROTATING_*`` variables."""
    env = os.environ if env is None else env
    filename = env.get("SAFE_ROTATING_LOG_FILE", DEFAULT_FILE)
    if env.get("SAFE_ROTATING_LOG_MODE", "file") != "server":
        os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
    return logging_config(
        mode=env.get("SAFE_ROTATING_LOG_MODE", "file"),
        filename=filename,
        max_bytes=int(env.get("SAFE_ROTATING_MAX_BYTES", DEFAULT_MAX_BYTES)),
        backup_count=int(env.get("SAFE_ROTATING_BACKUP_COUNT", DEFAULT_BACKUP_COUNT)),
        server=env.get("SAFE_ROTATING_SERVER", DEFAULT_SERVER),
        spool_dir=env.get("SAFE_ROTATING_SPOOL_DIR") or None,
    )
