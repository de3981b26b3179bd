"""The final mode and owner of a file safe_rotating creates: ``chmod=0`` means mode 0."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from safe_rotating._common import osfiles
from safe_rotating._engine.janitor.compression import Compressor
from safe_rotating._engine.janitor.context import JobContext
from safe_rotating._engine.janitor.listing import Listing
from safe_rotating._engine.lock import SidecarLock


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_finish_with_mode_0_gives_mode_0(tmp_path: Path) -> None:
    path = tmp_path / "made"
    fd = osfiles.create_new(str(path), os.O_WRONLY)
    try:
        assert _mode(path) == 0o600
        osfiles.finish(fd, 0, None)
    finally:
        os.close(fd)
    assert _mode(path) == 0


def test_finish_with_no_mode_keeps_the_creation_mode(tmp_path: Path) -> None:
    path = tmp_path / "made"
    fd = osfiles.create_new(str(path), os.O_WRONLY)
    try:
        osfiles.finish(fd, None, None)
    finally:
        os.close(fd)
    assert _mode(path) == 0o600


def test_open_or_create_with_mode_0_creates_a_mode_0_file(tmp_path: Path) -> None:
    path = tmp_path / "made"
    fd, created = osfiles.open_or_create(str(path), os.O_WRONLY, mode=0)
    os.close(fd)
    assert created
    assert _mode(path) == 0


def test_a_compressed_copy_with_chmod_0_gets_mode_0(tmp_path: Path) -> None:
    """Not the mode of the backup it replaces: 0 is a mode, not "no ``chmod``"."""
    log = str(tmp_path / "app.log")
    backup = tmp_path / "app.log.1"
    backup.write_bytes(b"x")
    backup.chmod(0o640)
    context = JobContext(log, SidecarLock(str(tmp_path / ".app.log.lock")), None)
    compressor = Compressor(
        context,
        None,
        Listing(context, None, None),
        None,
        chmod=0,
        owner=None,
        clock=lambda: 0.0,
        closing=lambda: False,
    )
    copy = tmp_path / "copy"
    fd = osfiles.create_new(str(copy), os.O_WRONLY)
    try:
        compressor._finish(fd, os.lstat(backup))
    finally:
        os.close(fd)
    assert _mode(copy) == 0
