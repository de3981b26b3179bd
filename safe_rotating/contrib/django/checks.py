"""The checks themselves; :func:`inspect_logging` needs no Django and takes any dictConfig dict."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Finding", "check_logging", "inspect_logging"]

SAFE_CLASS = "safe_rotating.SafeRotatingFileHandler"
STDLIB_SIZE = "logging.handlers.RotatingFileHandler"
STDLIB_TIME = "logging.handlers.TimedRotatingFileHandler"
ROTATING = {
    STDLIB_SIZE,
    STDLIB_TIME,
    SAFE_CLASS,
    "safe_rotating.handlers.SafeRotatingFileHandler",
    "concurrent_log_handler.ConcurrentRotatingFileHandler",
}
FILE_CLASSES = ROTATING | {"logging.FileHandler", "logging.handlers.WatchedFileHandler"}


@dataclass(frozen=True)
class Finding:
    """One problem: the check id (``W001`` ...), what is wrong, what to do, the handler."""

    id: str
    msg: str
    hint: str
    obj: str


def _class_path(config: Mapping[str, Any]) -> str:
    cls = config.get("class", "")
    if isinstance(cls, type):
        return f"{cls.__module__}.{cls.__qualname__}"
    return str(cls)


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _unwritable(directory: str) -> str | None:
    """Why this process cannot create and rename files in ``directory``, or ``None``."""
    if not os.path.isdir(directory):
        return f"the log directory {directory!r} does not exist (the handler does not create it)"
    try:
        st = os.stat(directory)
    except OSError as exc:
        return f"the log directory {directory!r} cannot be examined: {exc.strerror}"
    if os.access(directory, os.W_OK | os.X_OK):
        return None
    return (
        f"the log directory {directory!r} is not writable by this process (running as "
        f"{_user(os.geteuid())}:{_group(os.getegid())}; the directory is owned by "
        f"{_user(st.st_uid)}:{_group(st.st_gid)}, mode {stat.filemode(st.st_mode)} "
        f"({oct(stat.S_IMODE(st.st_mode))}))"
    )


def inspect_logging(logging_config: Mapping[str, Any] | None) -> list[Finding]:
    """Every problem :mod:`safe_rotating.contrib.django` knows of in a ``dictConfig`` dict."""
    findings: list[Finding] = []
    handlers = (logging_config or {}).get("handlers") or {}
    if not isinstance(handlers, Mapping):
        return findings
    by_file: dict[str, list[tuple[str, tuple[Any, ...]]]] = {}
    for name, config in handlers.items():
        if not isinstance(config, Mapping):
            continue
        path = _class_path(config)
        obj = f"LOGGING['handlers'][{name!r}]"
        if path in (STDLIB_SIZE, STDLIB_TIME):
            kind = "size" if path == STDLIB_SIZE else "time"
            hint = (
                f"Set 'class': '{SAFE_CLASS}' — same arguments, same file names."
                if kind == "size"
                else f"safe_rotating rotates by size only: use 'class': '{SAFE_CLASS}' with "
                f"'maxBytes' and 'backupCount' instead of 'when'/'interval'."
            )
            findings.append(
                Finding(
                    "W001",
                    f"{obj} uses {path}, which is not process-safe: with several worker "
                    "processes (gunicorn, uWSGI, Celery, runserver's autoreloader) each rotates "
                    "on its own and records are lost or written to renamed files.",
                    hint,
                    obj,
                )
            )
        if path in ROTATING and str(config.get("mode", "a")).startswith("w"):
            findings.append(
                Finding(
                    "W002",
                    f"{obj} has mode='w' on a rotating handler: with maxBytes it is ignored "
                    "(rotation always appends), without maxBytes every process that starts "
                    "empties the file that the others are writing.",
                    "Remove 'mode' (the default 'a' is right), or rotate once at start-up "
                    "with doRollover() if a fresh file per start is what you want.",
                    obj,
                )
            )
        filename = config.get("filename")
        if path in FILE_CLASSES and isinstance(filename, (str, os.PathLike)):
            full = os.path.abspath(os.fspath(filename))
            settings: tuple[Any, ...] = (
                path,
                config.get("maxBytes", 0),
                config.get("backupCount", 0),
            )
            if path == STDLIB_TIME:
                settings += (config.get("when", "h"), config.get("interval", 1))
            by_file.setdefault(full, []).append((name, settings))
            directory = os.path.dirname(full)
            why = _unwritable(directory)
            if why is not None:
                findings.append(
                    Finding(
                        "W004",
                        f"{obj} writes {full!r}, but {why}.",
                        "Every process that logs (web workers, Celery workers, manage.py "
                        "commands) must be able to create and rename files there: run them as "
                        "one user, or give them a shared group with a setgid directory "
                        "(chgrp GROUP DIR && chmod 2775 DIR) and pass chmod=0o660.",
                        obj,
                    )
                )
    for full, entries in by_file.items():
        if len({settings for _, settings in entries}) > 1:
            described = "; ".join(
                f"{name!r}: {_describe(settings)}" for name, settings in _sorted(entries)
            )
            findings.append(
                Finding(
                    "W003",
                    f"handlers write the same file {full!r} with different rotation settings "
                    f"({described}): each rotates by its own rule and removes what the other "
                    "keeps.",
                    "Use one handler for the file and attach it to every logger that needs it, "
                    "or give each handler its own file.",
                    "LOGGING['handlers']",
                )
            )
    return findings


def _sorted(entries: Iterable[tuple[str, tuple[Any, ...]]]) -> list[tuple[str, tuple[Any, ...]]]:
    return sorted(entries, key=lambda entry: entry[0])


def _describe(settings: tuple[Any, ...]) -> str:
    path, max_bytes, backup_count, *when = settings
    text = f"{path.rsplit('.', 1)[-1]} maxBytes={max_bytes} backupCount={backup_count}"
    if when:
        text += f" when={when[0]!r} interval={when[1]}"
    return text


def check_logging(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """The Django system check: :func:`inspect_logging` on ``settings.LOGGING``."""
    from django.conf import settings
    from django.core.checks import Warning as CheckWarning

    config = getattr(settings, "LOGGING", None)
    if not isinstance(config, Mapping):
        return []
    return [
        CheckWarning(f.msg, hint=f.hint, obj=f.obj, id=f"safe_rotating.{f.id}")
        for f in inspect_logging(config)
    ]
