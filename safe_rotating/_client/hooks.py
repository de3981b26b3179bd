"""Where the client meets its host process: the handlers in use, closed when the process exits
(:mod:`safe_rotating._common.exithooks`) and given a sender of their own in a forked child;
and uWSGI, whose master must run no thread and whose workers may end without any exit hook.

``safe_rotating.client`` registers the fork and exit hooks when it is imported (the order of
registration is the order the hooks run in, among those of the file handlers).
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Final

from safe_rotating._common.forksafe import ForkRegistry, current_pid

if TYPE_CHECKING:
    from safe_rotating.client import LogServerHandler

__all__ = [
    "LIVE",
    "UWSGI_HAND_OVER",
    "after_uwsgi_request",
    "close_all_at_exit",
    "hook_uwsgi_requests",
    "in_uwsgi_master",
]

# Handlers in use in this process. The at-fork hook is only the fast path: every use of a
# handler compares the pid, because a fork done in C (uWSGI, embedding hosts) never runs it.
LIVE: ForkRegistry[LogServerHandler] = ForkRegistry(
    lambda handler: handler._sender_for_this_process()
)


def close_all_at_exit() -> None:
    """This process is ending (see :mod:`safe_rotating._common.exithooks`: also a
    ``multiprocessing`` child or a Celery pool process, which leave through ``os._exit``):
    deliver and close every handler that holds records of this process. The handlers that only
    hold a parent's state have nothing to do."""
    pid = current_pid()
    for handler in LIVE:
        sender = handler._sender
        if sender.pid == pid and (sender.thread is not None or sender.direct):
            handler.close()


# How long a uWSGI worker waits after a request for its records to leave for the server's
# socket (they usually do within a millisecond), before it spools them instead.
UWSGI_HAND_OVER: Final = 0.25


def after_uwsgi_request() -> None:
    """After each request of a uWSGI worker: every record this process logged goes to the
    server's socket or to the spool, not only to memory. uWSGI does not run Python's ``atexit``
    (nor ``uwsgi.atexit``) in a worker it counts as busy when it exits, and a worker stopped
    gracefully right after a request exits from a signal handler: without this, what the last
    request logged could be lost without a word. Costs one hand-over to the sender thread per
    request that logged something (a few hundred microseconds of the worker's time)."""
    pid = current_pid()
    for handler in LIVE:
        sender = handler._sender
        if sender.pid == pid and sender.thread is not None:
            # Never fail the request for it; close() reports what is left.
            with contextlib.suppress(Exception):
                sender.hand_over(UWSGI_HAND_OVER)


def hook_uwsgi_requests() -> None:
    """In a uWSGI process, run :func:`after_uwsgi_request` after every request (chained
    before any ``uwsgi.after_req_hook`` the application set). uWSGI reads the hook once its
    apps are loaded: a handler built while the app loads (Django's ``LOGGING``) is in time."""
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is None or getattr(uwsgi, "_safe_rotating_hooked", False):
        return
    previous = getattr(uwsgi, "after_req_hook", None)

    def after_request() -> None:
        after_uwsgi_request()
        if previous is not None:
            previous()

    with contextlib.suppress(Exception):  # a uwsgi module that takes no attributes
        # uWSGI's own module, not declared anywhere mypy could read: set by name.
        setattr(uwsgi, "after_req_hook", after_request)  # noqa: B010
        setattr(uwsgi, "_safe_rotating_hooked", True)  # noqa: B010


def in_uwsgi_master() -> bool:
    """Is this the process where uWSGI loads the app before forking its workers from C?

    A thread running there may hold the GIL at the instant of a fork (at start-up, and whenever
    a worker is respawned): the worker then waits for it forever. So no sender thread runs in
    that process; see :meth:`Sender.write_direct`.
    """
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is None:
        return False
    try:
        return bool(uwsgi.worker_id() == 0 and uwsgi.mule_id() == 0)
    except Exception:
        return False
