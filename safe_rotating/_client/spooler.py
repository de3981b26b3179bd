"""This process's own spool, as the ledger uses it: opened on first use, and resting for
:data:`SPOOL_RETRY` seconds after a write failed (reported once per run of failures), records
staying in memory meanwhile. Called under the ledger's lock."""

from __future__ import annotations

import math
import time
from typing import Final

from safe_rotating._client import spool as _spool
from safe_rotating._client.config import ClientStats, Config, describe
from safe_rotating._client.frames import Batch, Item, batch_frame
from safe_rotating._client.ownspool import OwnSpool
from safe_rotating._net import rendered as _rendered

__all__ = ["SPOOL_RETRY", "Spooler"]

SPOOL_RETRY: Final = 5.0  # after a spool write failed, seconds before trying the disk again
_monotonic = time.monotonic


class Spooler:
    """The spool directory and :class:`OwnSpool` of one sender."""

    def __init__(
        self,
        config: Config,
        identity: _spool.Identity,
        stats: ClientStats,
        problems: list[BaseException],
    ) -> None:
        self.config = config
        self.identity = identity  # kept with the spool: who logged its records
        self.stats = stats
        self.problems = problems  # the ledger's: told once its lock is released
        self.spool_dir: str | None = None
        self.spool: OwnSpool | None = None
        self.retry_at = 0.0 if config.spool_root is not None else math.inf
        self._failing = False

    def usable(self) -> bool:
        return _monotonic() >= self.retry_at

    def directory(self) -> str:
        """This address's spool directory, made (and checked) on first use. Raises OSError."""
        if self.spool_dir is None:
            config = self.config
            assert config.spool_root is not None
            self.spool_dir = _spool.prepare_directory(
                config.spool_root, _spool.address_key(config.address), config.spool_root_is_default
            )
        return self.spool_dir

    def store(self, batches: list[Batch], client: str) -> int:
        """Append ``batches`` (in order, all in memory) to the spool of ``client`` with as few
        writes as possible; returns how many were stored — a prefix, the rest did not fit or
        failed."""
        if not batches or not self.usable():
            return 0
        spool = self.spool
        try:
            if spool is None:
                spool = self.spool = OwnSpool(
                    self.directory(), client, self.config.spool_max_bytes, self.identity
                )
            count = spool.fits([batch.length for batch in batches])
            if not count:
                return 0
            frames: list[bytes] = []
            for batch in batches[:count]:
                assert batch.frame is not None
                frames.append(batch.frame)
            placed = spool.append(frames)
        except OSError as exc:
            self.retry_at = _monotonic() + SPOOL_RETRY
            if self.spool is None:
                self.spool_dir = None  # create the directory again next time
            if not self._failing:
                self._failing = True
                note = (
                    "records stay in memory (queue_size) meanwhile; this is reported once, "
                    f"the spool is tried again every {SPOOL_RETRY:g}s"
                )
                told = OSError(exc.errno, f"cannot write the spool: {describe(exc)}; {note}")
                told.__cause__ = exc
                self.problems.append(told)
            return 0
        self._failing = False
        for batch, (segment, offset) in zip(batches, placed, strict=False):
            batch.segment, batch.offset = segment, offset
            batch.frame = None
            self.stats.spooled += batch.count
        return count

    def append_unlocked(self, flat: Item, data: bytes, client: str, seq: int, ids: set[str]) -> str:
        """Append record ``flat`` (``data``: its encoding, if flat) as batch ``seq`` of
        ``client`` to the spool, leaving it unlocked; returns the outcome (see
        :func:`_spool.append_unlocked`; ``ids``: the client ids used so far). Raises OSError."""
        config = self.config
        segment_bytes = max(64 * 1024, min(32 * 1024 * 1024, config.spool_max_bytes // 4))
        directory = self.directory()
        if isinstance(flat, dict):
            frame = batch_frame(client, seq, [data])
        else:
            text, levelno, created, name = flat
            frame = _rendered.encode_batch(client, seq, [text], [levelno], [name], [created])
        return _spool.append_unlocked(
            directory, client, frame, segment_bytes, config.spool_max_bytes, ids, self.identity
        )

    def direct_failed(self, exc: OSError) -> None:
        """An append without a sender thread failed: rest, and tell (each time)."""
        self.retry_at = _monotonic() + SPOOL_RETRY
        self.spool_dir = None
        self.problems.append(OSError(exc.errno, f"cannot write the spool: {describe(exc)}"))

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    def abandon(self) -> None:
        """In a forked child: close the parent's descriptors only, taking no lock."""
        spool, self.spool = self.spool, None
        if spool is not None:
            spool.abandon()
