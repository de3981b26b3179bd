"""The client's spool against another user and against a uWSGI master (issue 13, cases 10, 14).

The default spool root ``/tmp/safe_rotating-<uid>`` (``$XDG_RUNTIME_DIR/safe_rotating`` when
there is one) has a predictable name: another user can create it first. The spool must then go
to a private directory beside it — never into the squatter's — with one warning, and no record
may be lost for it. A uWSGI master appends straight to its spool: that spool too is bounded by
``spool_max_bytes``.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from safe_rotating import SafeRotatingWarning
from safe_rotating.client import LogServerHandler
from safe_rotating.verify import make_line
from tests.logserver import eventually, run_server
from tests.neighbour import SharedDir
from tests.servers import free_port, running_uwsgi, uwsgi_command
from tests.test_client import ROOT

_NEXT_PROCESS = """
import logging, sys
from safe_rotating.client import LogServerHandler
from safe_rotating.verify import make_line
handler = LogServerHandler(sys.argv[1], flush_timeout=10)  # the default spool root
log = logging.getLogger("next")
log.propagate = False
log.addHandler(handler)
log.setLevel(logging.INFO)
log.info(make_line(1, 0))
handler.close()
stats = handler.stats()
print(stats.replayed, stats.dropped, flush=True)
"""


def _log(handler: logging.Handler, writer: int, count: int) -> None:
    for seq in range(count):
        record = {"name": "tests.spool", "msg": make_line(writer, seq), "levelno": 20}
        handler.handle(logging.makeLogRecord(record))


def test_a_squatted_default_spool_root_falls_back_beside_it_and_nothing_is_dropped(
    tmp_path: Path, shared_dir: SharedDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Old main refused the squatter's directory — rightly — but then had no spool at all: the
    five records logged while the server was away were dropped at close."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", shared_dir.path)  # ours (root), like /tmp's parent
    squatted = shared_dir.join("safe_rotating")
    shared_dir.run(os.mkdir, squatted, 0o777)  # another user creates the default root first
    port = free_port()
    address = f"127.0.0.1:{port}"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = LogServerHandler(address, flush_timeout=2)  # the server is not up yet
        _log(first, 0, 5)
        first.close()
    stats = first.stats()
    assert (stats.queued, stats.spooled, stats.dropped) == (5, 5, 0)
    told = [str(w.message) for w in caught if issubclass(w.category, SafeRotatingWarning)]
    fallbacks = [p for p in os.listdir(shared_dir.path) if p.startswith("safe_rotating.")]
    assert len(fallbacks) == 1, fallbacks
    fallback = shared_dir.join(fallbacks[0])
    assert len(told) == 1, told
    assert fallback in told[0]
    st = os.lstat(fallback)
    assert stat.S_ISDIR(st.st_mode)
    assert (st.st_uid, st.st_mode & 0o777) == (os.geteuid(), 0o700)
    assert str(first.spool_directory).startswith(fallback + os.sep)
    assert os.listdir(squatted) == []  # nothing of ours in the squatter's directory
    assert list(Path(fallback).rglob("*.spool"))

    # The next process on this default root finds the fallback again and delivers the spool.
    env = {**os.environ, "PYTHONPATH": ROOT}
    with run_server(tmp_path, "--format", "%(message)s", port=port) as server:
        done = subprocess.run(
            [sys.executable, "-c", _NEXT_PROCESS, address],
            capture_output=True,
            env=env,
            timeout=60,
            check=True,
        )
        assert done.stdout.split() == [b"5", b"0"], done.stderr.decode()
        assert done.stderr.decode().count("SafeRotatingWarning") == 1
        assert fallback in done.stderr.decode()
        eventually(lambda: len(server.lines()) >= 6, 5, "six records written")
        assert sorted(server.lines()) == sorted(
            [make_line(0, n) for n in range(5)] + [make_line(1, 0)]
        )
    assert not list(Path(fallback).rglob("*.spool"))


def test_a_link_planted_in_the_spool_directory_is_not_followed(tmp_path: Path) -> None:
    """Old main opened spool segments by name, following a link: the frames were appended to
    whatever file the link pointed at."""
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    address = f"127.0.0.1:{free_port()}"  # no server: records go to the spool
    handler = LogServerHandler(address, spool_dir=str(tmp_path / "spool"), flush_timeout=0.5)
    problems: list[str] = []
    handler.handleError = lambda record: problems.append(str(sys.exc_info()[1]))  # type: ignore[method-assign]
    spool = Path(str(handler.spool_directory))
    spool.mkdir(parents=True, mode=0o700)
    (spool / f"{handler.client_id}.000001.spool").symlink_to(victim)
    try:
        _log(handler, 0, 3)
        handler.flush()
    finally:
        handler.close()
    assert victim.read_text() == "untouched\n"
    assert any("refusing to use a spool file" in problem for problem in problems), problems


def test_a_uwsgi_masters_spool_stays_within_spool_max_bytes(tmp_path: Path) -> None:
    """In a uWSGI master records go straight to the spool (no thread may run there). Old main
    ignored spool_max_bytes on that path: 4.2 MB on disk with a 64 KiB limit."""
    limit, count = 64 * 1024, 3000  # 3000 records of 1400 bytes: 4.2 MB
    port = free_port()
    spool = tmp_path / "spool"
    stats_path = tmp_path / "stats.json"
    env = {
        **os.environ,
        "SAFE_ROTATING_TEST_ADDRESS": f"127.0.0.1:{free_port()}",  # no server there
        "SAFE_ROTATING_TEST_SPOOL": str(spool),
        "SAFE_ROTATING_TEST_SPOOL_MAX": str(limit),
        "SAFE_ROTATING_TEST_COUNT": str(count),
        "SAFE_ROTATING_TEST_STATS": str(stats_path),
    }
    command = uwsgi_command(port, 1, "tests.apps.wsgi_master_spool:app", lazy=False)
    with running_uwsgi(command, env, tmp_path, port):
        eventually(stats_path.exists, 30, "the master's counters")  # it listens before the import
        stats = json.loads(stats_path.read_text())
        on_disk = sum(path.stat().st_size for path in spool.rglob("*.spool"))
    assert on_disk <= limit
    assert stats["spooled"] + stats["dropped"] == count
    assert stats["dropped"] >= count - limit // 1400
    output = (tmp_path / "uwsgi.out").read_text(errors="replace")
    assert "RecordsDropped" in output
    assert f"spool_max_bytes={limit}" in output
