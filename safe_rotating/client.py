"""``LogServerHandler``: send records to ``safe-rotating-server`` without ever waiting for it.

``emit`` renders the record (message with its arguments, traceback, ``extra`` values reduced to
JSON types) and appends it to an in-memory queue; a sender thread batches, sends, waits for
acknowledgements, reconnects, and keeps what the server has not acknowledged in a spool file
until it has. The wire protocol is described in ``docs/protocol.md``.

Usable by class path from ``logging.config.dictConfig`` and Django's ``LOGGING``::

    "central": {
        "class": "safe_rotating.client.LogServerHandler",
        "address": "127.0.0.1:9020",          # or "[::1]:9020", or "unix:/run/mysite/log.sock"
    }
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shlex
import socket
import ssl
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Final

from safe_rotating._client import spool as _spool
from safe_rotating._client.sender import RECORD_BYTES, ClientStats, Config, Item, Leftover, Sender
from safe_rotating._common import exithooks as _atexit
from safe_rotating._common import validate as _options
from safe_rotating._common.forksafe import PID_CELL, current_pid
from safe_rotating._net import wire as _wire
from safe_rotating.exceptions import RecordsDropped, RecordsNotDelivered, ServerUnavailable
from safe_rotating.handlers import SafeRotatingFileHandler

__all__ = [
    "ClientStats",
    "LogServerHandler",
    "RecordsDropped",
    "RecordsNotDelivered",
    "ServerUnavailable",
]

_monotonic = time.monotonic
_DEFAULT_FORMATTER = logging.Formatter()
_AS_RENDERED = logging.Formatter("%(message)s")  # a line rendered before it went to the fallback
_MIN_SPOOL_BYTES = 64 * 1024
_UNIX_PATH_MAX = 107  # sun_path holds 108 bytes, one of them the terminating NUL

# Handlers in use in this process. The at-fork hook is only the fast path: every use of a
# handler compares the pid, because a fork done in C (uWSGI, embedding hosts) never runs it.
_LIVE: weakref.WeakSet[LogServerHandler] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for handler in list(_LIVE):
        handler._sender_for_this_process()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _close_all_at_exit() -> None:
    """This process is ending (see :mod:`._atexit`: also a ``multiprocessing`` child or a Celery
    pool process, which leave through ``os._exit``): deliver and close every handler that holds
    records of this process. The handlers that only hold a parent's state have nothing to do."""
    pid = current_pid()
    for handler in list(_LIVE):
        sender = handler._sender
        if sender.pid == pid and (sender.thread is not None or sender.direct):
            handler.close()


_atexit.register(_close_all_at_exit)

# How long a uWSGI worker waits after a request for its records to leave for the server's
# socket (they usually do within a millisecond), before it spools them instead.
UWSGI_HAND_OVER: Final = 0.25


def _after_uwsgi_request() -> None:
    """After each request of a uWSGI worker: every record this process logged goes to the
    server's socket or to the spool, not only to memory. uWSGI does not run Python's ``atexit``
    (nor ``uwsgi.atexit``) in a worker it counts as busy when it exits, and a worker stopped
    gracefully right after a request exits from a signal handler: without this, what the last
    request logged could be lost without a word. Costs one hand-over to the sender thread per
    request that logged something (a few hundred microseconds of the worker's time)."""
    pid = current_pid()
    for handler in list(_LIVE):
        sender = handler._sender
        if sender.pid == pid and sender.thread is not None:
            # Never fail the request for it; close() reports what is left.
            with contextlib.suppress(Exception):
                sender.hand_over(UWSGI_HAND_OVER)


def _hook_uwsgi_requests() -> None:
    """In a uWSGI process, run :func:`_after_uwsgi_request` after every request (chained
    before any ``uwsgi.after_req_hook`` the application set). uWSGI reads the hook once its
    apps are loaded: a handler built while the app loads (Django's ``LOGGING``) is in time."""
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is None or getattr(uwsgi, "_safe_rotating_hooked", False):
        return
    previous = getattr(uwsgi, "after_req_hook", None)

    def after_request() -> None:
        _after_uwsgi_request()
        if previous is not None:
            previous()

    with contextlib.suppress(Exception):  # a uwsgi module that takes no attributes
        # uWSGI's own module, not declared anywhere mypy could read: set by name.
        setattr(uwsgi, "after_req_hook", after_request)  # noqa: B010
        setattr(uwsgi, "_safe_rotating_hooked", True)  # noqa: B010


# -- arguments -----------------------------------------------------------------------------------
def parse_address(address: Any) -> tuple[int, Any]:
    """``"HOST:PORT"``, ``"[IPv6]:PORT"`` or ``"unix:/path"`` as ``(family, target)``."""
    if not isinstance(address, str):
        raise TypeError(
            f"address must be a str such as '127.0.0.1:9020' or 'unix:/run/log.sock', "
            f"got {type(address).__name__}: {address!r}"
        )
    if address.startswith("unix:"):
        path = address[5:]
        if not path:
            raise ValueError(f"address={address!r} names no socket path (use 'unix:/path')")
        path = os.path.abspath(path)
        if len(os.fsencode(path)) > _UNIX_PATH_MAX:
            raise ValueError(
                f"address={address!r}: a Unix socket path may be at most {_UNIX_PATH_MAX} bytes"
            )
        return socket.AF_UNIX, path
    if address.startswith("["):
        host, bracket, rest = address[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"address={address!r} must look like '[::1]:9020'")
        port_text = rest[1:]
    else:
        host, colon, port_text = address.rpartition(":")
        if not colon:
            raise ValueError(f"address={address!r} has no port: use 'HOST:PORT' such as ':9020'")
        if ":" in host:
            raise ValueError(
                f"address={address!r}: an IPv6 address goes in brackets, as in '[::1]:9020'"
            )
    if not host:
        raise ValueError(f"address={address!r} has no host: use e.g. '127.0.0.1:{port_text}'")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"address={address!r}: the port must be a number from 1 to 65535")
    return socket.AF_INET, (host, int(port_text))


def _check_int(name: str, value: Any, least: int, most: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r}")
    if value < least or (most is not None and value > most):
        bounds = f">= {least}" if most is None else f"from {least} to {most}"
        raise ValueError(f"{name} must be {bounds}, got {value!r}")
    return value


def _check_seconds(name: str, value: Any, most: float | None = None) -> float:
    seconds = _options.check_timeout(name, value)
    if most is not None and seconds > most:
        raise ValueError(f"{name} must be at most {most:g} seconds, got {value!r}")
    return seconds


def _check_text(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a non-empty str or None, got {type(value).__name__}")
    return value


def _check_file(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes) or not isinstance(value, str | os.PathLike):
        raise TypeError(f"{name} must be a file path or None, got {type(value).__name__}")
    path = os.path.abspath(os.fspath(value))
    if not os.path.isfile(path):
        raise ValueError(f"{name}={os.fspath(value)!r} is not a readable file")
    return path


def _check_spool_dir(value: Any) -> tuple[str | None, bool]:
    """``(root, is_default)``; ``root`` None means no spool (``spool_dir=False``)."""
    if value is False:
        return None, False
    if value is None:
        return _spool.default_spool_root(), True
    if isinstance(value, bytes) or not isinstance(value, str | os.PathLike) or value is True:
        raise TypeError(
            "spool_dir must be a directory path, None (a private directory of this user) or "
            f"False (no spool), got {type(value).__name__}: {value!r}"
        )
    path = os.fspath(value)
    if not path:
        raise ValueError("spool_dir must be a directory path, got ''")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"spool_dir={path!r} exists and is not a directory")
    return os.path.abspath(path), False


def _tls_context(
    tls: Any, ca: Any, cert: Any, key: Any, hostname: Any, family: int, host: str | None
) -> tuple[ssl.SSLContext | None, str | None]:
    if not isinstance(tls, bool):
        raise TypeError(f"tls must be True or False, got {type(tls).__name__}: {tls!r}")
    given = {
        "tls_ca": ca,
        "tls_cert": cert,
        "tls_key": key,
        "tls_server_hostname": hostname,
    }
    if not tls:
        for name, value in given.items():
            if value is not None:
                raise ValueError(f"{name}={value!r} is set but tls=False; set tls=True to use it")
        return None, None
    ca_file = _check_file("tls_ca", ca)
    cert_file = _check_file("tls_cert", cert)
    key_file = _check_file("tls_key", key)
    server_name = _check_text("tls_server_hostname", hostname)
    if key_file is not None and cert_file is None:
        raise ValueError("tls_key is set without tls_cert: give the client certificate too")
    if server_name is None:
        if family == socket.AF_UNIX:
            raise ValueError("tls=True on a Unix socket needs tls_server_hostname (the name in "
                             "the server's certificate)")  # fmt: skip
        server_name = host
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"tls_ca={ca!r} could not be loaded: {exc}") from None
    if cert_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"tls_cert={cert!r} / tls_key={key!r} could not be loaded: {exc}"
            ) from None
    return context, server_name


@dataclass
class _Drops:
    """A run of dropped records, reported when it starts and, with a count, when it ends."""

    started: float
    reason: str
    count: int


class LogServerHandler(logging.Handler):
    """Send records to a ``safe-rotating-server`` at ``address``; never block on the network.

    ``address``
        ``"HOST:PORT"`` (default ``"127.0.0.1:9020"``), ``"[IPv6]:PORT"`` or ``"unix:/path"``.
    ``token``
        Shared secret sent in ``hello``, for a server started with ``--token``.
    ``tls``, ``tls_ca``, ``tls_cert``, ``tls_key``, ``tls_server_hostname``
        TLS to the server (verified against ``tls_ca`` or the system's CAs; a client
        certificate if the server asks for one; the name to verify, by default the host).
    ``app``
        Application name sent in ``hello`` (default: the program's name).
    ``spool_dir``
        Where batches wait on disk while the server is away or slow. Default ``None``: a
        directory of this user, ``$XDG_RUNTIME_DIR/safe_rotating`` or
        ``/tmp/safe_rotating-<uid>`` (mode 0700); if another user created that one first, a
        private ``/tmp/safe_rotating-<uid>.<random>`` beside it, with a warning. ``False``: no
        spool. Each server address gets its own subdirectory. A spool left by a process that
        died is delivered by the next client that starts on the same directory.
    ``spool_max_bytes``
        Bound of this process's spool (default 256 MiB).
    ``queue_size``
        Records held in memory, queued or sent and not yet acknowledged (default 10000). When
        full, what memory holds moves to the spool (a local file append on the caller's
        thread); only when the spool is full too does ``on_full`` apply.
    ``on_full``
        ``"block"`` (default): wait up to ``block_timeout`` (default 1 s) for room, then drop;
        ``"drop"``: drop at once. Drops are counted and reported through ``handleError`` once
        when they start and once, with the count, when records are accepted again; after one
        wait ran out, records are dropped without waiting until then.
    ``batch_size``, ``flush_interval``
        A batch is sent when it has ``batch_size`` records (default 256) or ``flush_interval``
        seconds (default 0.01) after its first record was emitted, whichever comes first.
    ``ack_timeout``
        Seconds (default 2) a connection attempt, a ``welcome`` or an ``ack`` may take before
        the server counts as unavailable and batches go to the spool.
    ``flush_timeout``
        Longest wait of ``flush()`` and ``close()`` (default 5 s); what is still unacknowledged
        then goes to the spool.
    ``fallback_file``
        Only with ``spool_dir=False``: while no server can be reached, write records to this
        file (through :class:`safe_rotating.SafeRotatingFileHandler`, formatted with this
        handler's formatter) instead of keeping them in memory.

    ``format_on``
        ``"client"`` (default): a handler with a formatter renders each record here, as a
        file-mode handler does, and the server writes the line as it is (escaping control
        characters: a line without any is byte for byte what file mode writes); a handler
        without a formatter leaves the rendering to the server's ``--format``. ``"server"``:
        the server's ``--format`` renders every record (the behaviour before 0.3; the handler's
        formatter then only formats tracebacks and ``fallback_file`` lines).

    Fork: a child process (``os.fork``, or a fork done in C as uWSGI does) gets its own client
    id, queue, connection, spool and sender thread on its first use of the handler; it never
    sends what its parent had queued. In a uWSGI master (where the app is loaded before the
    workers are forked from C) no thread is started: records are appended to the spool at once
    (within ``spool_max_bytes``, then dropped and reported) and the workers deliver them.
    """

    def __init__(
        self,
        address: str = "127.0.0.1:9020",
        *,
        level: int | str = logging.NOTSET,
        token: str | None = None,
        tls: bool = False,
        tls_ca: str | os.PathLike[str] | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        tls_server_hostname: str | None = None,
        app: str | None = None,
        spool_dir: str | os.PathLike[str] | bool | None = None,
        spool_max_bytes: int = 256 * 1024 * 1024,
        queue_size: int = 10_000,
        batch_size: int = 256,
        flush_interval: float = 0.01,
        ack_timeout: float = 2.0,
        flush_timeout: float = 5.0,
        on_full: str = "block",
        block_timeout: float = 1.0,
        fallback_file: str | os.PathLike[str] | None = None,
        format_on: str = "client",
    ) -> None:
        family, target = parse_address(address)
        host = target[0] if family != socket.AF_UNIX else None
        token = _check_text("token", token)
        app_name = _check_text("app", app) or (
            os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
        )
        context, server_hostname = _tls_context(
            tls, tls_ca, tls_cert, tls_key, tls_server_hostname, family, host
        )
        spool_root, spool_default = _check_spool_dir(spool_dir)
        spool_bytes = _check_int("spool_max_bytes", spool_max_bytes, _MIN_SPOOL_BYTES)
        batch = _check_int("batch_size", batch_size, 1, 10_000)
        queue = _check_int("queue_size", queue_size, 1)
        if queue < batch:
            raise ValueError(
                f"queue_size={queue_size!r} must be at least batch_size={batch_size!r}"
            )
        interval = _check_seconds("flush_interval", flush_interval, most=1.0)
        acks = _check_seconds("ack_timeout", ack_timeout)
        flushing = _check_seconds("flush_timeout", flush_timeout)
        blocking = _check_seconds("block_timeout", block_timeout)
        if on_full not in ("block", "drop"):
            raise ValueError(f"on_full must be 'block' or 'drop', got {on_full!r}")
        if format_on not in ("client", "server"):
            raise ValueError(f"format_on must be 'client' or 'server', got {format_on!r}")
        fallback_path: str | None = None
        if fallback_file is not None:
            fallback_path = _options.check_filename(fallback_file)
            if spool_root is not None:
                raise ValueError(
                    f"fallback_file={os.fspath(fallback_file)!r} is used only without a spool: "
                    "set spool_dir=False too (with a spool, records wait on disk for the server)"
                )

        super().__init__(level)
        self.address = address
        self.flush_timeout = flushing
        self.block_timeout = blocking
        self.on_full = on_full
        self.format_on = format_on
        self._config = Config(
            address=address,
            family=family,
            target=target,
            tls=context,
            server_hostname=server_hostname,
            token=token,
            app=app_name,
            batch_size=batch,
            flush_interval=interval,
            queue_size=queue,
            spool_root=spool_root,
            spool_root_is_default=spool_default,
            spool_max_bytes=spool_bytes,
            ack_timeout=acks,
            flush_timeout=flushing,
            block_timeout=blocking,
            block=on_full == "block",
            fallback=fallback_path is not None,
        )
        self._fallback_handler = (
            SafeRotatingFileHandler(fallback_path, delay=True) if fallback_path else None
        )
        self._episode_lock = threading.Lock()
        self._drops: _Drops | None = None
        self._sender = self._new_sender()
        _LIVE.add(self)
        _hook_uwsgi_requests()

    @property
    def client_id(self) -> str:
        """The id of this process's sequence space (changes in a forked child)."""
        return self._sender_for_this_process().client

    @property
    def spool_directory(self) -> str | None:
        """Where this handler spools (``None`` with ``spool_dir=False``): the directory in use
        once one is, which is beside the default root if another user squatted it."""
        root = self._config.spool_root
        if root is None:
            return None
        return self._sender.spool_dir or os.path.join(root, _spool.address_key(self.address))

    def _new_sender(self) -> Sender:
        fallback = self._write_fallback if self._fallback_handler is not None else None
        return Sender(self._config, self._report_problem, self._count_dropped, fallback)

    def _sender_for_this_process(self) -> Sender:
        """This process's sender; a forked child (however it forked) gets a new one."""
        sender = self._sender
        if sender.pid != current_pid():
            sender.abandon()  # the parent's: records, socket and spool stay the parent's
            self._episode_lock = threading.Lock()  # never the parent's: it may have been held
            self._drops = None
            sender = self._sender = self._new_sender()
        return sender

    # -- the hot path ----------------------------------------------------------------------------
    def emit(self, record: logging.LogRecord) -> None:
        """Render ``record`` and queue it; returns without any network I/O."""
        try:
            sender = self._sender
            if sender.pid != (PID_CELL[0] or current_pid()):
                sender = self._sender_for_this_process()
            if sender.finished:  # used again after close(), like a FileHandler
                sender = self._sender = self._new_sender()
                _LIVE.add(self)
            if self.formatter is not None and self.format_on == "client":
                flat: Item = self._render(record)
            else:
                flat = self._flatten(record)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return
        if sender.thread is None:
            if not sender.direct:
                try:
                    sender.start()
                    _atexit.hook()
                except RuntimeError:  # no thread to be had (interpreter shutdown, a limit)
                    sender.direct = True
            if sender.direct:  # a uWSGI master: no thread, the spool takes the record
                if not sender.write_direct(flat):
                    self._count_dropped(1, self._direct_reason(), record)
                elif self._drops is not None:
                    self._drops_ended(record)
                return
        queue = sender.queue
        if len(queue) + sender.mem_records >= sender.queue_size and not self._make_room(sender):
            self._count_dropped(1, self._full_reason(), record)
            return
        queue.append(flat)
        sender.enqueued += 1
        if len(queue) >= sender.wake_at:
            sender.wake()
        if self._drops is not None:
            self._drops_ended(record)

    def _render(self, record: logging.LogRecord) -> Item:
        """The record as this handler's formatter renders it, with the fields the server may
        route and forward by (protocol 2)."""
        try:
            text = self.format(record)
        except Exception as exc:  # bad arguments, a format field the record lacks, ...
            # Kept, like a record whose fields the server formats: with what went wrong.
            try:
                message = record.getMessage()
            except Exception:
                message = f"{_safe_text(record.msg)} % {_safe_text(record.args)}"
            text = (
                f"{_safe_text(record.levelname)} {_safe_text(record.name)} {message} "
                f"(could not be formatted: {_safe_text(exc)})"
            )
        data = text.encode("utf-8", "backslashreplace")
        if len(data) > RECORD_BYTES:
            cut = len(data) - RECORD_BYTES
            data = data[:RECORD_BYTES] + b" ...[%d bytes cut: record too large]" % cut
        name = record.name
        return (
            data,
            int(record.levelno),
            float(record.created),
            name if type(name) is str else str(name),
        )

    def _flatten(self, record: logging.LogRecord) -> Item:
        """The record's fields, for the server to render with its ``--format`` (protocol 1)."""
        exc_text = record.exc_text
        if record.exc_info and not exc_text:
            formatter = self.formatter or _DEFAULT_FORMATTER
            exc_text = record.exc_text = formatter.formatException(record.exc_info)
        try:
            return _wire.flatten(record, exc_text)
        except Exception:  # an object whose __str__ and __repr__ both fail, ...
            return _flatten_carefully(record, exc_text)

    def _make_room(self, sender: Sender) -> bool:
        if sender.make_room():
            return True
        if self._config.block and self._drops is None:
            return sender.wait_for_room(self.block_timeout)
        return False

    def _direct_reason(self) -> str:
        if self._config.spool_root is None:
            return (
                "this is a uWSGI master, where no sender thread may run (its workers are forked "
                "from C), and spool_dir=False leaves records nowhere to wait for a worker to "
                "deliver them; allow a spool or run uWSGI with --lazy-apps"
            )
        if self._sender.direct_full:
            return (
                f"the spool of this uWSGI master is full (spool_max_bytes="
                f"{self._config.spool_max_bytes}); its workers deliver it once the server takes "
                "records again"
            )
        return "the spool cannot be written in this uWSGI master (see the error reported before)"

    def _full_reason(self) -> str:
        config = self._config
        memory = f"the memory queue (queue_size={config.queue_size}) is full"
        if config.spool_root is None:
            where = f"{memory} and no spool is allowed (spool_dir=False)"
        else:
            where = (
                f"{memory} and so is the spool (spool_max_bytes={config.spool_max_bytes}) "
                "or it cannot be written"
            )
        waited = f" after waiting block_timeout={self.block_timeout:g}s" if config.block else ""
        return f"{where}{waited}; the server is unavailable or slower than the application"

    # -- reporting -------------------------------------------------------------------------------
    def _report(self, problem: BaseException, record: logging.LogRecord | None = None) -> None:
        """Hand ``problem`` to ``handleError`` as the exception being handled."""
        if record is None:
            record = logging.makeLogRecord(
                {"name": __name__, "msg": "log server delivery", "levelno": logging.ERROR}
            )
        try:
            raise problem
        except BaseException:
            self.handleError(record)

    def _report_problem(self, problem: BaseException) -> None:
        """From the sender thread: connection trouble, spool trouble."""
        self._report(problem)

    def _count_dropped(
        self, count: int, reason: str, record: logging.LogRecord | None = None
    ) -> None:
        with self._episode_lock:
            self._sender.stats.dropped += count
            episode = self._drops
            if episode is not None:
                episode.count += count
                return
            self._drops = _Drops(_monotonic(), reason, count)
        self._report(RecordsDropped(self.address, count, 0.0, reason, ended=False), record)

    def _drops_ended(self, record: logging.LogRecord) -> None:
        with self._episode_lock:
            episode, self._drops = self._drops, None
        if episode is not None:
            seconds = _monotonic() - episode.started
            self._report(
                RecordsDropped(self.address, episode.count, seconds, episode.reason), record
            )

    # -- fallback file ---------------------------------------------------------------------------
    def _write_fallback(self, records: list[dict[str, Any]]) -> None:
        handler = self._fallback_handler
        assert handler is not None
        sender = self._sender
        for flat in records:
            # A line this handler rendered is written as it is; fields with its formatter.
            handler.setFormatter(_AS_RENDERED if flat.get("rendered") else self.formatter)
            handler.handle(_wire.to_log_record(flat, host=sender.host, app=self._config.app))

    # -- stdlib API ------------------------------------------------------------------------------
    def flush(self) -> None:
        """Wait (at most ``flush_timeout``) until every record emitted so far is acknowledged
        by the server or written to the spool; what is not by then is spooled now."""
        sender = self._sender_for_this_process()
        sender.flush(self.flush_timeout)

    def close(self) -> None:
        """Deliver every record of this process to the server — what is queued, in memory and
        in this process's spool — waiting at most ``flush_timeout`` (retrying a server that is
        away meanwhile), then stop the sender thread. Also done when the process exits.

        What the server has not acknowledged by then stays in the spool and is reported once
        (:class:`RecordsNotDelivered`: how many, where, and what will deliver them). Without a
        spool, such records go to ``fallback_file`` if there is one, else they are lost and
        reported."""
        sender = self._sender_for_this_process()
        try:
            left = sender.close(self.flush_timeout)
            if left.spooled:
                self._report(self._not_delivered(left))
            lost = left.lost
            if lost:
                with self._episode_lock:
                    sender.stats.dropped += lost
                self._report(
                    RecordsDropped(
                        self.address,
                        lost,
                        self.flush_timeout,
                        "the handler was closed before the server acknowledged them and no "
                        "spool is allowed (spool_dir=False)",
                    )
                )
            if self._fallback_handler is not None:
                self._fallback_handler.close()
        finally:
            _LIVE.discard(self)
            logging.Handler.close(self)

    def _not_delivered(self, left: Leftover) -> RecordsNotDelivered:
        config = self._config
        command = f"safe-rotating-spools send --address {shlex.quote(self.address)}"
        if not config.spool_root_is_default and config.spool_root is not None:
            command += f" --spool-dir {shlex.quote(config.spool_root)}"
        return RecordsNotDelivered(
            self.address,
            left.spooled,
            self.flush_timeout,
            left.reason or "the server did not acknowledge them",
            left.spool_dir or self.spool_directory or "?",
            left.client,
            command,
        )

    def stats(self) -> ClientStats:
        """Counters of this process (see :class:`ClientStats`)."""
        return self._sender_for_this_process().snapshot()

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        return f"<{type(self).__name__} {self.address} ({level})>"


def _safe_text(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        try:
            return repr(value)
        except Exception as exc:
            return f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"


def _flatten_carefully(record: logging.LogRecord, exc_text: str | None) -> dict[str, Any]:
    """What :func:`_wire.flatten` would give, for a record whose objects fight back."""
    created = record.created if isinstance(record.created, int | float) else time.time()
    if not math.isfinite(created):
        created = time.time()
    flat: dict[str, Any] = {
        "created": created,
        "name": _safe_text(record.name),
        "levelno": record.levelno if isinstance(record.levelno, int) else logging.ERROR,
        "levelname": _safe_text(record.levelname),
        "msg": f"{_safe_text(record.msg)} % {_safe_text(record.args)} (could not be formatted)",
        "pathname": _safe_text(record.pathname),
        "filename": _safe_text(record.filename),
        "module": _safe_text(record.module),
        "funcName": _safe_text(record.funcName),
        "lineno": record.lineno if isinstance(record.lineno, int) else 0,
        "process": record.process if isinstance(record.process, int) else None,
        "processName": _safe_text(record.processName),
        "thread": record.thread if isinstance(record.thread, int) else None,
        "threadName": _safe_text(record.threadName),
        "exc_text": exc_text if isinstance(exc_text, str) else None,
        "stack_info": record.stack_info if isinstance(record.stack_info, str) else None,
    }
    try:
        standard = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
        extra = {
            _safe_text(key): _safe_text(value)
            for key, value in list(record.__dict__.items())
            if key not in standard
        }
    except Exception as exc:
        extra = {"unreadable": _safe_text(exc)}
    if extra:
        flat["extra"] = extra
    return flat
