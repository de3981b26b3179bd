"""Mistakes a newcomer makes that used to pass in silence (issue 16).

* ``maxBytes`` without ``backupCount``: rotation stays off, as in the stdlib, and a
  ``SafeRotatingWarning`` says so once per process and file, with what to add.
* A process started with a smaller ``backupCount`` than the one a process that has exited
  recorded: a warning, once per process and file, before any of that history is deleted.
* A keyword typo (``max_bytes=``): a ``TypeError`` that names it and the argument meant, while
  the explicit signatures stay what ``inspect.signature`` and ``dictConfig`` see.
"""

from __future__ import annotations

import inspect
import logging
import logging.config
import os
import subprocess
import sys
import typing
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safe_rotating import SafeRotatingFileHandler, SafeRotatingWarning, SafeTimedRotatingFileHandler
from safe_rotating.client import LogServerHandler

HANDLERS = (SafeRotatingFileHandler, SafeTimedRotatingFileHandler)
ROOT = str(Path(__file__).resolve().parents[1])


def _told(caught: list[warnings.WarningMessage], text: str) -> list[str]:
    return [
        str(w.message)
        for w in caught
        if issubclass(w.category, SafeRotatingWarning) and text in str(w.message)
    ]


def _run_child(code: str) -> None:
    """Run ``code`` in a fresh interpreter that has exited when this returns."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


@pytest.fixture
def caught() -> Iterator[list[warnings.WarningMessage]]:
    """Every warning, each time it is given (Python's own once-per-place filter off), so that
    "once" below is the package's doing."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        yield record


# -- maxBytes without backupCount ------------------------------------------------------------------
def test_max_bytes_without_backup_count_warns_naming_the_file_and_what_to_add(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.log"
    with pytest.warns(SafeRotatingWarning) as warned:
        handler = SafeRotatingFileHandler(path, maxBytes=1024)
    handler.close()
    (message,) = [str(w.message) for w in warned]
    assert repr(str(path)) in message
    assert "maxBytes=1024 without backupCount never rotates" in message
    assert "add backupCount=5" in message
    assert warned[0].filename == __file__  # points at the line that made the handler


def test_max_bytes_without_backup_count_is_told_once_per_file(
    tmp_path: Path, caught: list[warnings.WarningMessage]
) -> None:
    handlers = [SafeRotatingFileHandler(tmp_path / "app.log", maxBytes=1024) for _ in range(3)]
    handlers.append(SafeRotatingFileHandler(tmp_path / "other.log", maxBytes=2048))
    for handler in handlers:
        handler.close()
    told = _told(caught, "without backupCount never rotates")
    assert len(told) == 2
    assert "app.log" in told[0]
    assert "maxBytes=1024" in told[0]
    assert "other.log" in told[1]
    assert "maxBytes=2048" in told[1]


@pytest.mark.parametrize(
    "make",
    [
        lambda p: SafeRotatingFileHandler(p),
        lambda p: SafeRotatingFileHandler(p, maxBytes=0),
        lambda p: SafeRotatingFileHandler(p, maxBytes=1024, backupCount=3),
        lambda p: SafeTimedRotatingFileHandler(p, maxBytes=1024),  # keeps every backup
    ],
    ids=["plain", "maxBytes=0", "both", "timed"],
)
def test_settings_that_rotate_or_were_never_meant_to_are_not_warned_about(
    tmp_path: Path, caught: list[warnings.WarningMessage], make: Any
) -> None:
    make(tmp_path / "app.log").close()
    assert _told(caught, "") == []


# -- a smaller backupCount than an exited process's ------------------------------------------------
_EARLIER_RUN = """
import logging, os, sys
from safe_rotating import SafeRotatingFileHandler
handler = SafeRotatingFileHandler(sys.argv[1], maxBytes=200, backupCount=10)
handler.setFormatter(logging.Formatter("%(message)s"))
log = logging.getLogger("earlier")
log.addHandler(handler)
for n in range(90):  # 100-byte records, two per file: 8 backups and a current file
    log.warning("%099d", n)
handler.close()
print(os.getpid())
"""


def _earlier_run(path: Path) -> int:
    """A process with backupCount=10 wrote 8 backups of ``path`` and exited: its pid."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    done = subprocess.run(
        [sys.executable, "-c", _EARLIER_RUN, str(path)],
        check=True,
        env=env,
        timeout=120,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


def _backups(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.startswith("app.log."))


def test_a_smaller_backup_count_than_an_exited_process_warns_before_any_backup_goes(
    tmp_path: Path, logger: logging.Logger
) -> None:
    path = tmp_path / "app.log"
    pid = _earlier_run(path)
    assert len(_backups(tmp_path)) == 10  # app.log.1 .. app.log.10
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        handler = SafeRotatingFileHandler(path, maxBytes=200, backupCount=3)
        again = SafeRotatingFileHandler(path, maxBytes=200, backupCount=3)  # same process
    again.close()
    (message,) = _told(caught, "has exited")
    assert f"last written with backupCount=10, by pid {pid}, which has exited" in message
    assert f"pid {os.getpid()} uses backupCount=3" in message
    assert "so 7 of its 10 backups, the oldest, are about to be deleted" in message
    assert "use backupCount=10 here" in message
    assert len(_backups(tmp_path)) == 10  # told before anything was deleted

    # The rule itself is unchanged: with the other process gone, ours applies.
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    for n in range(10):
        logger.warning("%099d", n)
    assert _backups(tmp_path) == ["app.log.1", "app.log.2", "app.log.3"]


def test_the_warning_comes_before_a_time_rotated_set_is_trimmed(tmp_path: Path) -> None:
    """Time rotation trims in the background as soon as a process starts: the warning is
    given while all the backups are still there."""
    path = tmp_path / "app.log"
    for day in range(1, 9):
        (tmp_path / f"app.log.2026-01-0{day}").write_text("old\n")
    _run_child(
        "from safe_rotating import SafeTimedRotatingFileHandler\n"
        f"SafeTimedRotatingFileHandler({str(path)!r}, when='midnight', backupCount=10).close()\n"
    )
    on_disk_when_told: list[int] = []

    def show(message: Any, *args: Any, **kwargs: Any) -> None:
        if "has exited" in str(message):
            assert "so 5 of its 8 backups, the oldest, are about to be deleted" in str(message)
            on_disk_when_told.append(len(_backups(tmp_path)))

    with warnings.catch_warnings():  # restores showwarning
        warnings.simplefilter("always")
        warnings.showwarning = show
        SafeTimedRotatingFileHandler(path, when="midnight", backupCount=3).close()
    assert on_disk_when_told == [8]


def test_a_larger_backup_count_of_a_running_process_is_not_this_warning(tmp_path: Path) -> None:
    """While the process that keeps more runs, nothing is deleted (guarantee 10): the
    mismatch warning tells of it, not this one."""
    path = tmp_path / "app.log"
    _earlier_run(path)
    env = {**os.environ, "PYTHONPATH": ROOT}
    keeper = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\nfrom safe_rotating import SafeRotatingFileHandler\n"
            f"h = SafeRotatingFileHandler({str(path)!r}, maxBytes=200, backupCount=10)\n"
            "print('ready', flush=True)\nsys.stdin.read()\nh.close()\n",
        ],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert keeper.stdout is not None
        assert keeper.stdout.readline() == "ready\n"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            SafeRotatingFileHandler(path, maxBytes=200, backupCount=3).close()
    finally:
        assert keeper.stdin is not None
        keeper.stdin.close()
        keeper.wait(60)
    assert _told(caught, "has exited") == []
    assert len(_told(caught, f"also written by pid {keeper.pid}")) == 1


def test_the_same_or_a_larger_backup_count_is_not_warned_about(
    tmp_path: Path, caught: list[warnings.WarningMessage]
) -> None:
    path = tmp_path / "app.log"
    _earlier_run(path)
    SafeRotatingFileHandler(path, maxBytes=200, backupCount=10).close()
    SafeRotatingFileHandler(path, maxBytes=200, backupCount=20).close()
    assert _told(caught, "has exited") == []


# -- keyword typos ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", HANDLERS)
@pytest.mark.parametrize(
    ("typo", "meant"),
    [("max_bytes", "maxBytes"), ("backup_count", "backupCount"), ("maxbytes", "maxBytes")],
)
def test_a_keyword_typo_names_the_argument_meant(
    tmp_path: Path, cls: Any, typo: str, meant: str
) -> None:
    path = tmp_path / "app.log"
    with pytest.raises(TypeError) as raised:
        cls(path, **{typo: 5})
    assert str(raised.value) == (
        f"{cls.__name__}() got an unexpected keyword argument {typo!r}; did you mean {meant!r}?"
    )
    assert not path.exists()  # refused before anything was opened


def test_a_misspelt_keyword_gets_the_closest_spellings(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"'lock_timout'; did you mean 'lock_timeout'"):
        SafeRotatingFileHandler(tmp_path / "app.log", lock_timout=1)  # type: ignore[call-arg]


def test_a_keyword_like_no_other_lists_the_real_ones(tmp_path: Path) -> None:
    with pytest.raises(TypeError) as raised:
        SafeRotatingFileHandler(tmp_path / "app.log", zzz=1)  # type: ignore[call-arg]
    message = str(raised.value)
    assert "unexpected keyword argument 'zzz'; its keyword arguments are " in message
    assert "backupCount" in message
    assert "maxBytes" in message
    assert "self" not in message


def test_the_log_server_handler_answers_typos_too() -> None:
    with pytest.raises(TypeError, match=r"'flush_timout'; did you mean 'flush_timeout'"):
        LogServerHandler(flush_timout=1.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"'spooldir'; did you mean 'spool_dir'\?"):
        LogServerHandler(spooldir=False)  # type: ignore[call-arg]


def test_dict_config_shows_the_suggestion(tmp_path: Path) -> None:
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "file": {
                "class": "safe_rotating.SafeRotatingFileHandler",
                "filename": str(tmp_path / "app.log"),
                "max_bytes": 1024,
            }
        },
    }
    with pytest.raises(ValueError, match="Unable to configure handler") as raised:
        logging.config.dictConfig(config)
    assert "did you mean 'maxBytes'?" in str(raised.value.__cause__)


@pytest.mark.parametrize("cls", [*HANDLERS, LogServerHandler])
def test_the_explicit_signatures_stay_what_tools_see(cls: type[logging.Handler]) -> None:
    """``inspect.signature`` (IDEs, documentation) and type hints still see every argument by
    name, never ``*args, **kwargs``."""
    parameters = inspect.signature(cls).parameters
    kinds = {p.kind for p in parameters.values()}
    assert inspect.Parameter.VAR_KEYWORD not in kinds
    assert inspect.Parameter.VAR_POSITIONAL not in kinds
    assert "self" not in parameters
    assert {"queue_size", "on_full", "block_timeout"} <= set(parameters)
    assert set(typing.get_type_hints(cls.__init__)) >= set(parameters) - {"self"}


def test_the_file_handlers_keep_the_stdlib_argument_order() -> None:
    size = list(inspect.signature(SafeRotatingFileHandler).parameters)
    assert size[:7] == [
        "filename",
        "mode",
        "maxBytes",
        "backupCount",
        "encoding",
        "delay",
        "errors",
    ]
    timed = inspect.signature(SafeTimedRotatingFileHandler).parameters
    assert list(timed)[:9] == [
        "filename",
        "when",
        "interval",
        "backupCount",
        "encoding",
        "delay",
        "utc",
        "atTime",
        "errors",
    ]
    assert timed["maxBytes"].kind is inspect.Parameter.KEYWORD_ONLY
