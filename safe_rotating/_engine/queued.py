"""Queued mode (``enqueue=True``): ``emit`` formats and queues, one thread per process writes.

``emit`` formats and encodes the record on the caller's thread — so a record never changes after
``emit`` returns — and appends the bytes to a bounded in-process queue: a list append and a few
integer updates, with no lock and no system call (the fork check reads the process id from a
page the kernel clears in every child, :mod:`._pid`), except releasing a lock when the writer
thread is asleep. The writer thread takes everything queued — one slice, no work per record —
and hands it to the engine as one :meth:`~safe_rotating._engine.logfile.LogFile.append_batch` per
wake-up (one ``write`` per file the batch lands in), with the engine's rotation, lock and order
rules.

Latency: the writer sleeps only when the queue is empty and is woken by the ``emit`` that makes
it non-empty, so a record reaches the kernel within the thread wake-up time (tens of
microseconds; a few milliseconds on a loaded machine), or once the batch being written ahead of
it is done. A missed wake-up, which the protocol below excludes, would cost at most
:data:`IDLE_WAIT`.

Taking records off the queue and writing them happen under one lock (:attr:`_State.io`), so
``flush`` and ``close`` simply take that lock and write whatever is still queued on their own
thread: everything queued before they were called is written when they return.

Fork, however it happens: a queue and its thread belong to the process that made them
(:attr:`_State.pid`), compared on every ``emit``. A child starts an empty queue, a new lock and
its own thread, and never touches the parent's objects (a thread of the parent may have held
their locks at the fork). What the parent had queued is the parent's: its own writer writes it,
exactly once; the child discards its inherited copy. ``os.register_at_fork`` only does the same
earlier. Records still queued at interpreter exit are written by the exit hook of :mod:`._atexit`
(``atexit``, and a ``multiprocessing`` finalizer in its child processes, which leave with
``os._exit``).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeVar

from safe_rotating._common import exithooks as _atexit
from safe_rotating._common.episode import Episode
from safe_rotating._common.forksafe import PID_CELL, ForkRegistry, current_pid
from safe_rotating._engine.stats import HandlerStats
from safe_rotating.exceptions import QueueOverflow

if TYPE_CHECKING:
    from safe_rotating._engine.logfile import LogFile

__all__ = ["Queue", "QueueOverflow"]

# Longest sleep of a writer thread with nothing queued: a safety net only (emit wakes it). Long,
# so that an idle writer does not take the GIL ten times a second: a fork done in C at such a
# moment copies the GIL's mutex held.
IDLE_WAIT: Final = 5.0
FLUSH_TIMEOUT: Final = 5.0  # longest wait of flush()/close() for a write under way
_JOIN_TIMEOUT: Final = 1.0  # longest wait at close() for the writer thread to end
_ROOM_SLICE: Final = 0.05  # on_full="block": re-check for room at least this often
_T = TypeVar("_T")
_monotonic = time.monotonic


class _State:
    """One process's queue, lock and writer thread (a forked child makes its own)."""

    __slots__ = (
        "dropped",
        "drops",
        "errors",
        "idle",
        "inflight",
        "io",
        "items",
        "peak",
        "pid",
        "put_bytes",
        "room",
        "room_waiters",
        "stopping",
        "taken_bytes",
        "taken_records",
        "thread",
        "times",
        "wake",
        "written_bytes",
        "written_records",
    )

    def __init__(self) -> None:
        self.pid = current_pid()
        # emit appends to the end of these lists and the writer takes from the front with one
        # slice and one ``del``: each is a single operation under the GIL, so neither needs a
        # lock. ``times`` (the records' ``created``) is kept for a time schedule only, and is
        # appended after ``items``: the writer takes ``len(times)`` records.
        self.items: list[bytes] = []
        self.times: list[float] = []
        # Written by emit only (the handler lock serialises it) ...
        self.put_bytes = 0  # counted before the record is appended: never behind the writer
        self.dropped = 0
        self.drops: Episode | None = None  # the drop episode under way
        # ... and by the writer only (under io), so no counter needs a lock.
        self.taken_bytes = 0
        self.taken_records = 0
        self.inflight = 0  # records taken off the queue and being written
        self.peak = 0  # the queue only grows between two takes: its peak is seen when taking
        self.written_records = 0
        self.written_bytes = 0
        self.errors = 0
        self.idle = False
        self.stopping = False
        # A binary semaphore, held while nothing wakes the writer: emit releases it when the
        # writer is idle (cheaper than an Event, whose set() takes a condition's lock).
        self.wake = threading.Lock()
        self.wake.acquire()
        self.io = threading.Lock()  # taking records and writing them; the engine
        self.room = threading.Condition(threading.Lock())
        self.room_waiters = 0
        self.thread: threading.Thread | None = None


def _wake(state: _State) -> None:
    """Wake the writer thread (called when it is, or is about to be, idle)."""
    state.idle = False
    try:  # noqa: SIM105 - on emit's path; contextlib.suppress costs more
        state.wake.release()
    except RuntimeError:  # already released: the writer is awake, or about to wake
        pass


class Queue:
    """The queue and writer thread of one handler (see the module docstring).

    ``write(records, when)`` writes a batch through the engine, reports what went wrong and
    returns how many records were written (it is the handler's, and never raises);
    ``report(problem)`` hands a problem to ``handleError``. ``capacity`` bounds the queued
    *bytes*.
    """

    def __init__(
        self,
        file: LogFile,
        path: str,
        write: Callable[[list[bytes], float | None], int],
        report: Callable[[BaseException], None],
        capacity: int,
        block: bool,
        block_timeout: float,
    ) -> None:
        self.file = file
        self.path = path
        self._write = write
        self._report = report
        self.capacity = capacity
        self.block = block
        self.block_timeout = block_timeout
        self._timed = file.scheduled
        self._state: _State | None = None
        # The pid of the state emit may use: 0 once it stops; a fork changes the pid (one
        # comparison on emit's path covers both).
        self._live = 0
        self._start_lock = threading.Lock()

    # -- the hot path ----------------------------------------------------------------------------
    def put(self, data: bytes, created: float) -> None:
        """Queue one encoded record (called by ``emit``, under the handler lock)."""
        state = self._state
        if state is None or self._live != (PID_CELL[0] or current_pid()):
            state = self._new_state()
        size = len(data)
        queued = state.put_bytes - state.taken_bytes
        if queued + size > self.capacity and queued and not self._room(state, size):
            self._drop(state)
            return
        state.put_bytes += size
        state.items.append(data)
        if self._timed:
            state.times.append(created)
        if state.idle:
            _wake(state)
        if state.drops is not None:
            self._drops_ended(state, state.drops)

    def _room(self, state: _State, size: int) -> bool:
        """Is there room for ``size`` bytes? With ``on_full="block"``, wait for it (bounded)."""
        if not self.block or state.drops is not None:  # during a drop episode nobody waits again
            return False
        deadline = _monotonic() + self.block_timeout
        _wake(state)
        with state.room:
            state.room_waiters += 1
            try:
                while True:
                    queued = state.put_bytes - state.taken_bytes
                    if not queued or queued + size <= self.capacity:
                        return True
                    left = deadline - _monotonic()
                    if left <= 0 or state.thread is None or not state.thread.is_alive():
                        return False
                    state.room.wait(min(left, _ROOM_SLICE))
            finally:
                state.room_waiters -= 1

    def _drop(self, state: _State) -> None:
        state.dropped += 1
        if state.drops is not None:
            state.drops.count += 1
            return
        state.drops = Episode(_monotonic())
        self._report(QueueOverflow(self.path, 1, 0.0, self._full_reason(), ended=False))

    def _drops_ended(self, state: _State, drops: Episode) -> None:
        state.drops = None
        seconds = _monotonic() - drops.started
        self._report(QueueOverflow(self.path, drops.count, seconds, self._full_reason()))

    def _full_reason(self) -> str:
        waited = f" after waiting {self.block_timeout:g}s" if self.block else ""
        return (
            f"the queue (queue_size={self.capacity} bytes) is full{waited}; the disk is slower "
            "than the application, or the writer is held up"
        )

    # -- the writer --------------------------------------------------------------------------------
    def _new_state(self) -> _State:
        """This process's state: a new one after a fork (the inherited one is left untouched)
        or after ``close``. Runs on emit's path, with the handler lock held."""
        if self._state is not None and self._state.pid != current_pid():
            self._adopt()
        with self._start_lock:
            state = self._state
            if state is not None and not state.stopping:
                return state
            state = _State()
            thread = threading.Thread(
                target=self._run, args=(state,), name="safe_rotating-writer", daemon=True
            )
            state.thread = thread
            self._state = state
            self._live = state.pid
            _LIVE.add(self)
            _atexit.hook()
            try:
                thread.start()
            except RuntimeError:  # no thread to be had (interpreter shutdown, a thread limit)
                state.thread = None
                state.idle = True  # so every put "wakes" the writer: it writes inline
                state.wake = _Inline(self, state)  # type: ignore[assignment]
            return state

    def _run(self, state: _State) -> None:
        # With a time schedule a record counts once its time is queued too (appended last).
        items = state.times if self._timed else state.items
        wake = state.wake
        while True:
            if not items:
                if state.stopping:
                    return
                state.idle = True
                if not items:  # emit appends, then looks at idle: one of us sees the other
                    wake.acquire(True, IDLE_WAIT)
                state.idle = False
                continue
            try:
                with state.io:
                    self._drain(state)
            except Exception as exc:  # never let the writer die: report, and go on
                self._report(exc)
                time.sleep(_ROOM_SLICE)  # a failure that repeats must not spin

    def _drain(self, state: _State) -> None:
        """Write everything queued now, in order (under ``state.io``)."""
        items = state.items
        timed = self._timed
        count = len(state.times) if timed else len(items)
        if not count:
            return
        batch = items[:count]
        del items[:count]
        size = sum(map(len, batch))
        queued = state.put_bytes - state.taken_bytes
        if queued > state.peak:
            state.peak = queued
        state.inflight = count
        try:
            if not timed:
                written = self._write(batch, None)
            else:
                times = state.times
                stamps = times[:count]
                del times[:count]
                written = self._write_timed(batch, stamps)
            state.written_records += written
            state.written_bytes += size if written == count else 0
            state.errors += count - written
        except Exception:
            state.errors += count  # reported by the caller
            raise
        finally:
            state.inflight = 0
            state.taken_records += count
            state.taken_bytes += size
            if state.room_waiters:
                with state.room:
                    state.room.notify_all()

    def _write_timed(self, batch: list[bytes], stamps: list[float]) -> int:
        """Each part of the batch in the file of its period (:meth:`LogFile.periods`)."""
        return sum(
            self._write(list(part), first) for part, first in self.file.periods(batch, stamps)
        )

    # -- control -------------------------------------------------------------------------------
    def _own_state(self) -> _State | None:
        state = self._state
        if state is None:
            return None
        if state.pid != current_pid():
            self._adopt()
            return None
        return state

    def _adopt(self) -> None:
        """In a child: drop the parent's queue (the parent writes it) without touching it."""
        state = self._state
        if state is not None and state.pid != current_pid():
            self._state = None
            self._live = 0
            self._start_lock = threading.Lock()
            self.file.forget_parent()

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Write everything queued so far (waiting at most ``timeout`` for a write under way).

        True if it is written."""
        state = self._own_state()
        if state is None:
            return True
        if not state.io.acquire(timeout=timeout):
            return False
        try:
            self._drain(state)
        finally:
            state.io.release()
        return True

    def run_locked(self, action: Callable[[], _T]) -> _T:
        """Run ``action`` on the engine with the writer kept out (rotation, close, checks)."""
        state = self._own_state()
        if state is None:
            return action()
        with state.io:
            return action()

    def close(self) -> None:
        """Write what is queued, then stop the writer thread; a later emit starts a new one."""
        state = self._own_state()
        if state is None:
            return
        self.flush()
        self._live = 0
        state.stopping = True
        _wake(state)
        thread = state.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_TIMEOUT)
        self.flush()  # anything that slipped in meanwhile
        _LIVE.discard(self)

    def stats(self, engine: HandlerStats, format_errors: int) -> HandlerStats:
        """``engine``'s counters with this process's queue counters (a child that has not
        logged yet: zero)."""
        state = self._state
        if state is None or state.pid != current_pid():
            return dataclasses.replace(engine, errors=format_errors)
        return dataclasses.replace(
            engine,
            records=state.written_records,
            bytes=state.written_bytes,
            queue_depth=len(state.items) + state.inflight,
            queue_bytes=state.put_bytes - state.taken_bytes,
            queue_peak_bytes=state.peak,
            dropped=state.dropped,
            errors=state.errors + format_errors,
        )


class _Inline:
    """In place of the wake-up event when no writer thread could be started: every record is
    written by the ``emit`` that queued it, as without ``enqueue``."""

    def __init__(self, queue: Queue, state: _State) -> None:
        self._queue = queue
        self._state = state

    def release(self) -> None:
        state = self._state
        state.idle = True  # _wake cleared it: every record is written by its own emit
        with state.io:
            self._queue._drain(state)


# Queues with a writer in this process, drained at exit; re-made in a child by the at-fork hook
# (the fast path: emit compares the pid anyway, for forks done in C).
_LIVE: ForkRegistry[Queue] = ForkRegistry(lambda queue: queue._adopt())


def _drain_all() -> None:
    for queue in _LIVE:
        try:
            queue.flush()
        except Exception:  # at exit, nothing may stop the others from being written
            if logging.raiseExceptions:
                sys.stderr.write(
                    f"safe_rotating: could not write the queued records of {queue.path!r}\n"
                )


_atexit.register(_drain_all)
