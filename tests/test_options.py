"""Bad constructor arguments fail at construction, with a message that names the value."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from safe_rotating import SafeRotatingFileHandler


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"maxBytes": -1}, ValueError, r"maxBytes must be >= 0, got -1"),
        ({"maxBytes": "10MB"}, TypeError, r"maxBytes must be an int, got str: '10MB'"),
        ({"maxBytes": True}, TypeError, r"maxBytes must be an int, got bool"),
        ({"backupCount": -3}, ValueError, r"backupCount must be >= 0, got -3"),
        ({"backupCount": 2.5}, TypeError, r"backupCount must be an int, got float: 2.5"),
        ({"mode": "r"}, ValueError, r"mode must be 'a' or 'w'.*got 'r'"),
        ({"mode": "ab"}, ValueError, r"got 'ab'"),
        ({"encoding": "no-such-codec"}, ValueError, r"encoding='no-such-codec' is not a codec"),
        ({"errors": "shrug"}, ValueError, r"errors='shrug' is not a registered error handler"),
        ({"lock_timeout": 0}, ValueError, r"lock_timeout must be a positive, finite.*got 0"),
        ({"lock_timeout": float("inf")}, ValueError, r"got inf"),
        ({"lock_timeout": "5"}, TypeError, r"lock_timeout must be a number of seconds, got str"),
        ({"chmod": 0o17777}, ValueError, r"chmod must be a permission mode.*got 8191"),
        ({"chmod": "644"}, TypeError, r"chmod must be an int such as 0o640"),
        ({"owner": "root"}, TypeError, r"owner must be a \(user, group\) pair, got 'root'"),
        ({"owner": ("no-such-user-xyz", "root")}, ValueError, r"no such user 'no-such-user-xyz'"),
        ({"lock_file_directory": 5}, TypeError, r"lock_file_directory must be a str"),
    ],
)
def test_invalid_arguments(
    tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        SafeRotatingFileHandler(tmp_path / "app.log", delay=True, **kwargs)


@pytest.mark.parametrize("filename", [None, 42, b"app.log"])
def test_filename_type_is_checked(filename: Any) -> None:
    with pytest.raises(TypeError, match=r"filename must be a str or os\.PathLike"):
        SafeRotatingFileHandler(filename)


def test_filename_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="names a directory"):
        SafeRotatingFileHandler(tmp_path)


def test_mode_w_becomes_append_when_rotating_as_in_the_stdlib(tmp_path: Path) -> None:
    handler = SafeRotatingFileHandler(tmp_path / "app.log", "w", maxBytes=100, backupCount=1)
    try:
        assert handler.mode == "a"
    finally:
        handler.close()


def test_valid_arguments_are_kept(tmp_path: Path) -> None:
    handler = SafeRotatingFileHandler(
        str(tmp_path / "app.log"),
        maxBytes=1024,
        backupCount=3,
        encoding="utf-8",
        errors="replace",
        lock_timeout=2,
        lock_file_directory=tmp_path / "locks",
        chmod=0o640,
        delay=True,
    )
    try:
        assert handler.baseFilename == os.path.join(tmp_path, "app.log")
        assert (handler.maxBytes, handler.backupCount, handler.lock_timeout) == (1024, 3, 2.0)
        assert handler.lock_path == os.path.join(tmp_path, "locks", ".app.log.lock")
        assert not (tmp_path / "app.log").exists(), "delay=True opens nothing"
    finally:
        handler.close()
