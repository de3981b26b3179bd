"""A hostile neighbour: another member of the log directory's group, as a real process.

CI runs as root, so the neighbour is a child that drops to ``nobody`` (uid 65534) with the shared
group as a supplementary group, the way a second service account in ``adm`` would be. Everything
it does goes through the kernel's permission checks as that user: it can plant links and files in
a setgid 2775 directory and read what the group may read, nothing more.

    def test_x(shared_dir: SharedDir) -> None:
        shared_dir.run(os.symlink, target, link)  # runs as uid 65534, group 4242
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import pytest

NEIGHBOUR_UID = 65534  # nobody
NEIGHBOUR_GID = 65534
SHARED_GID = 4242  # the log group; it needs no entry in /etc/group


@dataclass(frozen=True)
class SharedDir:
    """A log directory ``root:4242`` mode 2775, reachable by the neighbour."""

    path: str
    gid: int = SHARED_GID

    def join(self, *names: str) -> str:
        return os.path.join(self.path, *names)

    def run(self, action: Callable[..., object], *args: Any) -> object:
        """``action(*args)`` in a forked child that has dropped to the neighbour's uid; its
        result (pickled back), or the test fails with the child's exception."""
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the neighbour
            status = 0
            try:
                os.close(read_end)
                os.setgroups([self.gid])
                os.setgid(NEIGHBOUR_GID)
                os.setuid(NEIGHBOUR_UID)
                try:
                    outcome: tuple[bool, object] = (True, action(*args))
                except BaseException as exc:
                    outcome = (False, f"{type(exc).__name__}: {exc}")
                with os.fdopen(write_end, "wb") as out:
                    pickle.dump(outcome, out)
            except BaseException:
                status = 1
            finally:
                os._exit(status)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as result:
            data = result.read()
        _, status = os.waitpid(pid, 0)
        assert status == 0, f"the neighbour process failed (status {status})"
        assert data, "the neighbour process sent no result"
        ok, value = pickle.loads(data)
        assert ok, f"the neighbour's action failed: {value}"
        return value

    def can_read(self, path: str) -> str | None:
        """What the neighbour reads from ``path``, or ``None`` if it may not."""
        return cast("str | None", self.run(_read_or_none, path))


def _read_or_none(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as source:
            return source.read()
    except OSError:
        return None


def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the neighbour tests drop to another uid, which needs root (CI runs as root)")


@pytest.fixture
def shared_dir() -> Iterator[SharedDir]:
    """A fresh group-shared log directory under a world-searchable temporary directory (pytest's
    own ``tmp_path`` is 0700, which the neighbour could not enter)."""
    _needs_root()
    outer = tempfile.mkdtemp(prefix="safe_rotating-neighbour-")
    os.chmod(outer, 0o755)
    path = os.path.join(outer, "logs")
    os.mkdir(path)
    os.chown(path, 0, SHARED_GID)
    os.chmod(path, 0o2775)
    try:
        yield SharedDir(path)
    finally:
        shutil.rmtree(outer, ignore_errors=True)


def secret_file(directory: str, text: str = "TOPSECRET root only\n") -> str:
    """A root-only 0640 file (group root) outside the shared directory, which the neighbour
    may not read."""
    fd, path = tempfile.mkstemp(prefix="secret-", dir=directory)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chown(path, 0, 0)
    os.chmod(path, 0o640)
    return path
