"""One exit hook for every handler that holds records in memory (queued file mode, server mode).

A process can end in ways that skip ``atexit``: a ``multiprocessing`` child (any start method)
leaves through ``os._exit`` right after the multiprocessing finalizers, and a Celery (billiard)
pool process leaves through ``os._exit`` right after sending ``worker_process_shutdown``. So the
drains registered here run from whichever of these comes first in this process:

* ``atexit`` (a normal interpreter exit: ``sys.exit``, returning from main, gunicorn workers);
* a ``multiprocessing.util.Finalize`` with an exit priority, which the child's
  ``_exit_function`` runs before ``os._exit``; registered per process (a forked child starts
  with the parent's finalizers cleared), once ``multiprocessing`` is imported;
* Celery's ``worker_process_shutdown`` signal, once Celery is imported.

Each drain runs once per process, however many of them fire. :func:`hook` is cheap after the
first call in a process: callers call it whenever a process starts holding records.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import sys
from collections.abc import Callable
from typing import Any

from safe_rotating._common.forksafe import current_pid

__all__ = ["hook", "register"]

_drains: list[Callable[[], None]] = []
_hooked: dict[str, int] = {}  # mechanism -> pid it was set up in
_ran_in = 0  # pid where the drains last ran


def register(drain: Callable[[], None]) -> None:
    """Run ``drain`` (which must never block for long) when this process ends normally."""
    if drain not in _drains:
        _drains.append(drain)


def run() -> None:
    """Run every drain, once per process; one failing never stops the others."""
    global _ran_in
    pid = current_pid()
    if _ran_in == pid:
        return
    _ran_in = pid
    for drain in list(_drains):
        try:
            drain()
        except Exception as exc:  # at exit, nothing may stop the others from being delivered
            if logging.raiseExceptions:
                sys.stderr.write(f"safe_rotating: at exit, {drain.__qualname__} failed: {exc!r}\n")


def _on_celery_shutdown(*args: Any, **kwargs: Any) -> None:
    run()


def hook() -> None:
    """Make sure :func:`run` happens in this process however it ends (see the module
    docstring); the mechanisms whose module is not imported yet are set up by a later call."""
    pid = current_pid()
    if _hooked.get("mp") != pid:
        util = sys.modules.get("multiprocessing.util")
        if util is not None:
            _hooked["mp"] = pid
            util.Finalize(None, run, exitpriority=100)
    if _hooked.get("celery") != pid:
        signals = sys.modules.get("celery.signals")
        if signals is not None:
            _hooked["celery"] = pid
            # An unknown Celery version: atexit and the finalizers still apply.
            with contextlib.suppress(Exception):
                signals.worker_process_shutdown.connect(
                    _on_celery_shutdown, weak=False, dispatch_uid="safe_rotating.exit"
                )


atexit.register(run)
