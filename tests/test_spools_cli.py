"""``safe-rotating-spools``: help that says where spools live; a send that cannot reach the
server keeps the spool and says so; spools of live processes are never taken."""

from __future__ import annotations

import logging
from pathlib import Path

from safe_rotating.client import LogServerHandler
from tests.logserver import spools
from tests.servers import free_port


def test_help_names_where_spools_live_and_both_commands() -> None:
    shown = spools("--help")
    assert shown.returncode == 0
    for text in ("$XDG_RUNTIME_DIR/safe_rotating", "/tmp/safe_rotating-<uid>", "list", "send"):
        assert text in shown.stdout, text
    assert spools("send", "--addr", "127.0.0.1:1").returncode == 2  # no abbreviations


def test_a_live_spool_is_listed_as_live_and_never_sent_and_an_unreachable_server_keeps_it(
    tmp_path: Path,
) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    spool = tmp_path / "spool"
    handler = LogServerHandler(address, spool_dir=str(spool), flush_timeout=0.2)
    try:
        handler.emit(logging.makeLogRecord({"msg": "kept"}))
        handler.flush()  # the server is away: the record is in this (live) process's spool
        assert list(spool.rglob("*.spool"))
        assert "no leftover spools" in spools("list", "--spool-dir", str(spool)).stdout
        live = spools("list", "--all", "--spool-dir", str(spool)).stdout
        assert "LIVE" in live
        assert address in live
        sent = spools("send", "--address", address, "--spool-dir", str(spool), "--timeout", "1")
        assert sent.returncode == 0, sent.stderr
        assert "no leftover spools" in sent.stdout
        assert list(spool.rglob("*.spool")), "a live process's spool was taken"
    finally:
        handler.close()  # cannot deliver: the spool is left, and is a leftover now
    assert list(spool.rglob("*.spool"))
    failed = spools("send", "--address", address, "--spool-dir", str(spool), "--timeout", "1")
    assert failed.returncode == 1
    assert "NOT delivered" in failed.stdout
    assert "is the server running" in failed.stderr
    assert list(spool.rglob("*.spool")), "kept for a later attempt"
