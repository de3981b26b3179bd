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

import logging
import os
import shlex
import threading
import time
from typing import Any

from safe_rotating._client import hooks as _hooks
from safe_rotating._client import spool as _spool
from safe_rotating._client.config import ClientStats, Leftover
from safe_rotating._client.frames import Item
from safe_rotating._client.options import build_config
from safe_rotating._client.render import flatten, render
from safe_rotating._client.sender import Sender
from safe_rotating._common import exithooks as _atexit
from safe_rotating._common.episode import Episode
from safe_rotating._common.forksafe import PID_CELL, current_pid
from safe_rotating._common.keywords import checked_keywords
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
_AS_RENDERED = logging.Formatter("%(message)s")  # a line rendered before it went to the fallback

# Registered here, after the file handlers' own (imported above): at exit they run in this order.
_atexit.register(_hooks.close_all_at_exit)


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

    @checked_keywords
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
        config, fallback_path = build_config(
            address,
            token=token,
            tls=tls,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_server_hostname=tls_server_hostname,
            app=app,
            spool_dir=spool_dir,
            spool_max_bytes=spool_max_bytes,
            queue_size=queue_size,
            batch_size=batch_size,
            flush_interval=flush_interval,
            ack_timeout=ack_timeout,
            flush_timeout=flush_timeout,
            on_full=on_full,
            block_timeout=block_timeout,
            fallback_file=fallback_file,
            format_on=format_on,
        )
        super().__init__(level)
        self.address = address
        self.flush_timeout = config.flush_timeout
        self.block_timeout = config.block_timeout
        self.on_full = on_full
        self.format_on = format_on
        self._config = config
        self._fallback_handler = (
            SafeRotatingFileHandler(fallback_path, delay=True) if fallback_path else None
        )
        self._episode_lock = threading.Lock()
        self._drops: Episode | None = None  # a run of dropped records: its reason, its count
        self._sender = self._new_sender()
        _hooks.LIVE.add(self)
        _hooks.hook_uwsgi_requests()

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
                _hooks.LIVE.add(self)
            if self.formatter is not None and self.format_on == "client":
                flat: Item = render(record, self.format)
            else:
                flat = flatten(record, self.formatter)
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
                    self._count_dropped(
                        1, self._config.direct_reason(self._sender.direct_full), record
                    )
                elif self._drops is not None:
                    self._drops_ended(record)
                return
        queue = sender.queue
        full = len(queue) + sender.ledger.mem_records >= sender.queue_size
        if full and not self._make_room(sender):
            self._count_dropped(1, self._config.full_reason(self.block_timeout), record)
            return
        queue.append(flat)
        sender.enqueued += 1
        if len(queue) >= sender.wake_at:
            sender.wake()
        if self._drops is not None:
            self._drops_ended(record)

    def _make_room(self, sender: Sender) -> bool:
        if sender.make_room():
            return True
        if self._config.block and self._drops is None:
            return sender.wait_for_room(self.block_timeout)
        return False

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
            self._drops = Episode(_monotonic(), reason, count)
        self._report(RecordsDropped(self.address, count, 0.0, reason, ended=False), record)

    def _drops_ended(self, record: logging.LogRecord) -> None:
        with self._episode_lock:
            episode, self._drops = self._drops, None
        if episode is not None:
            seconds = _monotonic() - episode.started
            self._report(
                RecordsDropped(self.address, episode.count, seconds, episode.first_error), record
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
            _hooks.LIVE.discard(self)
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
