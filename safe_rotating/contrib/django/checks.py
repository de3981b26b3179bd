"""The checks themselves; :func:`inspect_logging` needs no Django and takes any dictConfig dict.

Every check is a Django warning with the id ``safe_rotating.<id>``; silence one with
``SILENCED_SYSTEM_CHECKS = ["safe_rotating.W005"]``. Ids keep their meaning across releases.

====  ===========================================  ===============================================
id    what it means                                how to fix it
====  ===========================================  ===============================================
W001  A handler uses the standard library's        ``RotatingFileHandler`` →
      ``RotatingFileHandler`` or                   ``safe_rotating.SafeRotatingFileHandler``;
      ``TimedRotatingFileHandler``: with several   ``TimedRotatingFileHandler`` →
      processes each rotates on its own and        ``safe_rotating.SafeTimedRotatingFileHandler``
      records are lost or land in renamed files.   (same arguments, same file names). Processes on
                                                   several hosts (one file on NFS/SMB):
                                                   ``safe_rotating.LogServerHandler`` and one
                                                   ``safe-rotating-server`` (server mode).
W002  ``mode='w'`` on a rotating handler: ignored  Remove ``mode``; call ``doRollover()`` at
      with ``maxBytes``; without it every          start-up if a fresh file per start is wanted.
      starting process empties the file the
      others write.
W003  Handlers write one file with different       One handler per file, attached to every logger
      rotation settings (class, ``maxBytes``,      that needs it, or one file per handler.
      ``backupCount``, ``when``/``interval``), a
      timed and a size handler included: each
      rotates by its own rule and deletes what
      the other keeps.
W004  The log directory is missing, or this        Create it; run every process that logs as one
      process cannot create and rename files in    user, or give them a shared group with a setgid
      it (the message names user, owner and        directory and ``chmod=0o660``.
      mode).
W005  A size handler has ``maxBytes`` but no       Add ``'backupCount': N`` (old files to keep),
      ``backupCount``: the file is never rotated   or drop ``maxBytes`` if one growing file is
      and grows without limit, as in the standard  what you want.
      library (concurrent-log-handler instead
      empties the file at ``maxBytes``).
W006  A relative ``filename``: each process        An absolute path, e.g. ``str(BASE_DIR / "logs"
      resolves it against its own working          / "app.log")``.
      directory, which differs between gunicorn,
      uWSGI, Celery, cron jobs and ``manage.py``.
W007  The root logger has handlers and the Django  ``CELERY_WORKER_HIJACK_ROOT_LOGGER = False``,
      settings configure Celery without turning    or a ``celery.signals.setup_logging`` receiver
      off ``worker_hijack_root_logger``: a worker  that applies ``LOGGING``. See
      removes those handlers at start-up.          :func:`celery_hijacks_root` for what this check
                                                   can and cannot see.
====  ===========================================  ===============================================
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Finding", "celery_hijacks_root", "check_logging", "inspect_logging"]

SAFE_CLASS = "safe_rotating.SafeRotatingFileHandler"
SAFE_TIMED_CLASS = "safe_rotating.SafeTimedRotatingFileHandler"
SERVER_CLASS = "safe_rotating.LogServerHandler"
STDLIB_SIZE = "logging.handlers.RotatingFileHandler"
STDLIB_TIME = "logging.handlers.TimedRotatingFileHandler"
CLH_SIZE = "concurrent_log_handler.ConcurrentRotatingFileHandler"
CLH_TIME = "concurrent_log_handler.ConcurrentTimedRotatingFileHandler"
#: Other spellings of a class path (a class object names its defining module), and the path
#: that settings are compared under.
ALIASES = {
    "safe_rotating.handlers.SafeRotatingFileHandler": SAFE_CLASS,
    "safe_rotating.handlers.SafeTimedRotatingFileHandler": SAFE_TIMED_CLASS,
}
SIZE_CLASSES = {STDLIB_SIZE, SAFE_CLASS, CLH_SIZE}
TIMED_CLASSES = {STDLIB_TIME, SAFE_TIMED_CLASS, CLH_TIME}
ROTATING = SIZE_CLASSES | TIMED_CLASSES
FILE_CLASSES = ROTATING | {"logging.FileHandler", "logging.handlers.WatchedFileHandler"}
#: Celery's names for ``worker_hijack_root_logger`` in Django settings: with
#: ``namespace="CELERY"`` (Celery 4+) and the old upper-case name (no namespace).
HIJACK_SETTINGS = ("CELERY_WORKER_HIJACK_ROOT_LOGGER", "CELERYD_HIJACK_ROOT_LOGGER")


@dataclass(frozen=True)
class Finding:
    """One problem: the check id (``W001`` ...), what is wrong, what to do, the handler."""

    id: str
    msg: str
    hint: str
    obj: str


def _class_path(config: Mapping[str, Any]) -> str:
    cls = config.get("class", "")
    path = f"{cls.__module__}.{cls.__qualname__}" if isinstance(cls, type) else str(cls)
    return ALIASES.get(path, path)


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


def inspect_logging(
    logging_config: Mapping[str, Any] | None, *, celery_hijack: bool = False
) -> list[Finding]:
    """Every problem :mod:`safe_rotating.contrib.django` knows of in a ``dictConfig`` dict.

    ``celery_hijack``: whether Celery workers will clear the root logger's handlers (W007);
    :func:`check_logging` decides it from the Django settings with :func:`celery_hijacks_root`.
    """
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
        findings.extend(_handler_findings(obj, path, config))
        filename = config.get("filename")
        if path in FILE_CLASSES and isinstance(filename, (str, os.PathLike)):
            full = os.path.abspath(os.fspath(filename))
            by_file.setdefault(full, []).append((name, _rotation(path, config)))
            findings.extend(_file_findings(obj, os.fspath(filename), full))
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
    if celery_hijack:
        findings.extend(_root_findings(logging_config or {}))
    return findings


def _handler_findings(obj: str, path: str, config: Mapping[str, Any]) -> list[Finding]:
    """W001, W002 and W005: what the handler's class and arguments say on their own."""
    findings: list[Finding] = []
    if path in (STDLIB_SIZE, STDLIB_TIME):
        safe = SAFE_CLASS if path == STDLIB_SIZE else SAFE_TIMED_CLASS
        same = "" if path == STDLIB_SIZE else " (when, interval, backupCount, utc, atTime)"
        findings.append(
            Finding(
                "W001",
                f"{obj} uses {path}, which is not process-safe: with several worker "
                "processes (gunicorn, uWSGI, Celery, runserver's autoreloader) each rotates "
                "on its own and records are lost or written to renamed files.",
                f"Set 'class': '{safe}' — same arguments{same}, same file names. If the "
                "processes run on several hosts (one file on NFS or SMB), no file lock can "
                f"coordinate them: use 'class': '{SERVER_CLASS}' with the 'address' of one "
                "safe-rotating-server (server mode) instead.",
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
    max_bytes = config.get("maxBytes", 0)
    if path in SIZE_CLASSES and _positive(max_bytes) and not config.get("backupCount"):
        effect = (
            "concurrent-log-handler then empties the file each time it reaches maxBytes, "
            "and the records it held are lost"
            if path == CLH_SIZE
            else "the file is then never rotated (the standard library's rule, which "
            "safe_rotating keeps) and grows past maxBytes without limit"
        )
        findings.append(
            Finding(
                "W005",
                f"{obj} sets maxBytes={max_bytes!r} but no backupCount: {effect}.",
                "Add 'backupCount': N, the number of rotated files to keep (e.g. 'backupCount': "
                "5); or remove 'maxBytes' if one ever-growing file is what you want.",
                obj,
            )
        )
    return findings


def _file_findings(obj: str, filename: str, full: str) -> list[Finding]:
    """W006 and W004: where the handler's file is, and whether this process may write there."""
    findings: list[Finding] = []
    if not os.path.isabs(filename):
        findings.append(
            Finding(
                "W006",
                f"{obj} has the relative filename {filename!r}, which each process resolves "
                f"against its own working directory (this one: {full!r}): gunicorn, uWSGI, "
                "Celery workers, cron jobs and manage.py are often started from different "
                "directories, and then write different files or fail to start.",
                "Use an absolute path, e.g. 'filename': str(BASE_DIR / 'logs' / 'app.log') "
                "in settings.py.",
                obj,
            )
        )
    why = _unwritable(os.path.dirname(full))
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
    return findings


def _root_findings(logging_config: Mapping[str, Any]) -> list[Finding]:
    """W007: handlers on the root logger, which a Celery worker that hijacks it removes."""
    findings: list[Finding] = []
    loggers = logging_config.get("loggers") or {}
    roots = [("LOGGING['root']", logging_config.get("root"))]
    if isinstance(loggers, Mapping):
        roots.append(("LOGGING['loggers']['']", loggers.get("")))
    for obj, root in roots:
        names = root.get("handlers") if isinstance(root, Mapping) else None
        if not names:
            continue
        findings.append(
            Finding(
                "W007",
                f"{obj} has the handlers {list(names)!r}, but the settings configure Celery "
                "and leave worker_hijack_root_logger at its default (True): a Celery worker "
                "removes the root logger's handlers at start-up, so in the worker and its "
                "tasks these handlers receive nothing, silently.",
                f"Set {HIJACK_SETTINGS[0]} = False in settings.py (the name under "
                "namespace='CELERY'), or connect a receiver to celery.signals.setup_logging "
                "that calls logging.config.dictConfig(settings.LOGGING).",
                obj,
            )
        )
    return findings


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _rotation(path: str, config: Mapping[str, Any]) -> tuple[Any, ...]:
    """What decides when the handler rotates and what it deletes (compared by W003)."""
    settings: tuple[Any, ...] = (path, config.get("maxBytes", 0), config.get("backupCount", 0))
    if path in TIMED_CLASSES:
        settings += (config.get("when", "h"), config.get("interval", 1))
    return settings


def _sorted(entries: Iterable[tuple[str, tuple[Any, ...]]]) -> list[tuple[str, tuple[Any, ...]]]:
    return sorted(entries, key=lambda entry: entry[0])


def _describe(settings: tuple[Any, ...]) -> str:
    path, max_bytes, backup_count, *when = settings
    text = f"{path.rsplit('.', 1)[-1]} maxBytes={max_bytes} backupCount={backup_count}"
    if when:
        text += f" when={when[0]!r} interval={when[1]}"
    return text


def celery_hijacks_root(settings: Any) -> bool:
    """Whether a Celery worker will clear the root logger's handlers, as far as ``settings`` show.

    True when some setting's name starts with ``CELERY`` (Celery configured from the Django
    settings, as its Django guide does with ``namespace="CELERY"``), neither
    ``CELERY_WORKER_HIJACK_ROOT_LOGGER`` nor the old ``CELERYD_HIJACK_ROOT_LOGGER`` is set to a
    false value, and no receiver is connected to ``celery.signals.setup_logging`` (with one,
    Celery leaves logging alone). Celery itself is never imported here.

    What it cannot see, so no W007 although a worker may hijack: a Celery app configured
    elsewhere than in the Django settings (``app.conf``, a ``celeryconfig`` module, another
    namespace), ``--logfile`` or other worker options. What may give a W007 although no worker
    hijacks: a ``setup_logging`` receiver in a module not imported when the checks run (with
    Celery's Django layout, ``proj/__init__.py`` imports the app, so its receivers are seen),
    or ``CELERY_*`` settings in a project that runs no worker (silence W007 there).
    """
    names = [name for name in dir(settings) if name.startswith("CELERY")]
    if not names:
        return False
    for name in HIJACK_SETTINGS:
        if name in names and not getattr(settings, name):
            return False
    signals = sys.modules.get("celery.signals")
    receivers = getattr(getattr(signals, "setup_logging", None), "receivers", None)
    return not receivers


def check_logging(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """The Django system check: :func:`inspect_logging` on ``settings.LOGGING``."""
    from django.conf import settings
    from django.core.checks import Warning as CheckWarning

    config = getattr(settings, "LOGGING", None)
    if not isinstance(config, Mapping):
        return []
    return [
        CheckWarning(f.msg, hint=f.hint, obj=f.obj, id=f"safe_rotating.{f.id}")
        for f in inspect_logging(config, celery_hijack=celery_hijacks_root(settings))
    ]
