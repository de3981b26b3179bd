"""No forged lines: the server escapes control characters, one record per line.

The rule (:mod:`safe_rotating._net.escape`): C0 controls but TAB and LF, DEL, C1 controls and
U+2028/U+2029 are written visibly (``\\r``, ``\\x1b``, ``\\u2028``); a line feed inside a record
is followed by a TAB; a record never starts with a TAB. So every line that does not start with
a TAB starts a record, whatever the format, and a record without control characters is written
byte for byte as file mode writes it.
"""

from __future__ import annotations

import logging
import logging.handlers
import socket
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safe_rotating import SafeRotatingFileHandler
from safe_rotating._net.escape import CONTINUATION, encode_record, escape, needs_escape
from safe_rotating._net.syslog import octet_frame

from .logserver import LogServer, NativeClient, eventually, run_server
from .servers import free_port

UNSAFE = {chr(c) for c in (*range(0x20), *range(0x7F, 0xA0)) if c not in (0x09, 0x0A)}
UNSAFE |= {"\u2028", "\u2029"}
# Text as hostile senders write it: controls, line breaks of every kind, C1, UTF-8 lead-byte
# neighbours (U+00A0, en dash), backslashes, tabs and a lone surrogate.
hostile_text = st.text(
    alphabet=st.sampled_from(
        [*UNSAFE, "\t", "\n", "\\", "x", " ", "é", "\u00a0", "\u2013", "日", "✓", "\udcff", "#"]
    ),
    max_size=40,
)


# -- the rule ------------------------------------------------------------------------------------
def test_each_control_character_has_a_visible_escape() -> None:
    assert escape("a\rb") == "a\\rb"
    assert escape("\x1b[31mred\x1b[0m") == "\\x1b[31mred\\x1b[0m"
    assert escape("nul\x00 bell\x07 del\x7f") == "nul\\x00 bell\\x07 del\\x7f"
    assert escape("vt\x0b ff\x0c fs\x1c") == "vt\\x0b ff\\x0c fs\\x1c"
    assert escape("nel\x85 csi\x9b") == "nel\\x85 csi\\x9b"
    assert escape("ls\u2028ps\u2029") == "ls\\u2028ps\\u2029"


def test_line_feeds_are_kept_and_marked_and_a_record_never_starts_with_a_tab() -> None:
    assert CONTINUATION == "\t"
    assert escape("boom\nTraceback:\n  File x") == "boom\n\tTraceback:\n\t  File x"
    assert escape("\tindented") == "\\tindented"
    assert escape("a\tb") == "a\tb"  # a TAB elsewhere is an ordinary character
    assert escape("ends with a newline\n") == "ends with a newline\n\t"


def test_a_backslash_and_other_text_are_left_alone() -> None:
    text = "C:\\path\\x1b 100% naïve café \u2013 日本語 ✓ \u00a0 \u200b\u202e"
    assert not needs_escape(text)
    assert escape(text) == text
    assert encode_record(text) == (text + "\n").encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(hostile_text)
def test_no_text_can_start_a_line_of_its_own(text: str) -> None:
    written = encode_record(text)
    assert written.endswith(b"\n")
    lines = written[:-1].decode("utf-8").split("\n")
    assert not lines[0].startswith("\t")
    assert all(line.startswith(CONTINUATION) for line in lines[1:])
    assert not UNSAFE & set(written.decode("utf-8"))
    # No other line breaker survives either (str.splitlines knows VT, FF, FS, NEL, LS, PS...).
    assert written[:-1].decode("utf-8").splitlines() == lines or lines == [""]


@settings(max_examples=300, deadline=None)
@given(hostile_text)
def test_the_fast_path_agrees_with_the_rule(text: str) -> None:
    assert encode_record(text) == (escape(text) + "\n").encode("utf-8", "backslashreplace")
    assert needs_escape(text) == (escape(text) != text)
    assert encode_record(text, escaped=False) == (text + "\n").encode("utf-8", "backslashreplace")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60).filter(lambda t: not needs_escape(t)))
def test_text_without_control_characters_is_written_unchanged(text: str) -> None:
    assert encode_record(text) == (text + "\n").encode("utf-8", "backslashreplace")


# -- a real server -------------------------------------------------------------------------------
FORGED = "2026-01-01 00:00:00,000 CRITICAL root [web-1/shop:1] FORGED"


def record_starts(server: LogServer) -> list[str]:
    """The lines of the file that start a record (every other line starts with a TAB)."""
    return [line for line in server.text().split("\n")[:-1] if not line.startswith("\t")]


@pytest.mark.multiprocess
def test_forged_lines_are_escaped_over_every_input(tmp_path: Path) -> None:
    syslog = free_port()
    with run_server(tmp_path, "--syslog-tcp", f"127.0.0.1:{syslog}") as server:
        client = NativeClient(("127.0.0.1", server.port))
        client.hello("f" * 32, app="shop\r\n" + FORGED, host="web\x1b[2J")
        record = {
            "created": time.time(),
            "name": "evil\rname",
            "levelno": 20,
            "msg": "native ok\n" + FORGED + "\r\x1b[1A\x1b[2K\x85\u2028",
            "process": 7,
        }
        client.send({"type": "batch", "seq": 1, "records": [record]})
        client.acked(1)
        client.close()
        handler = logging.handlers.SocketHandler("127.0.0.1", server.port)
        try:
            fields = {"name": "p\x85x", "msg": "pickle ok\r\n" + FORGED + "\x1b[31m", "levelno": 40}
            handler.emit(logging.makeLogRecord(fields))
        finally:
            handler.close()
        # RFC 5424 header fields are "printable": these are not, and are taken all the same.
        message = f"<12>1 - h\x1b sys\x1bapp 7 - - syslog ok\n{FORGED}\r\x07".encode()
        with socket.create_connection(("127.0.0.1", syslog), timeout=5) as sock:
            sock.sendall(octet_frame(message))
        eventually(lambda: len(record_starts(server)) >= 3, 2.0, "three records")
        data = server.file.read_bytes()
        text = data.decode("utf-8")
        starts = record_starts(server)
        assert len(starts) == 3, starts
        assert not any(line.startswith(FORGED) for line in starts)
        # Each forged "record" (the hello's app, three messages) is a marked continuation.
        assert text.count("\n\t" + FORGED) == 4
        assert not UNSAFE & set(text)
        assert "[web\\x1b[2J/shop\\r\n\t" + FORGED + ":7] native ok" in text  # the hello's
        assert "evil\\rname" in text
        assert "\\x1b[1A\\x1b[2K\\x85\\u2028" in text
        assert "p\\x85x" in text
        assert "pickle ok\\r\n\t" + FORGED + "\\x1b[31m" in text
        assert "[h\\x1b/sys\\x1bapp:7] syslog ok\n\t" + FORGED + "\\r\\x07" in text
        assert server.stop() == 0


@pytest.mark.multiprocess
def test_a_traceback_keeps_its_lines_marked_as_continuations(tmp_path: Path) -> None:
    with run_server(tmp_path, "--format", "%(levelname)s %(name)s %(message)s") as server:
        log = logging.getLogger("tests.escape.traceback")
        log.propagate = False
        handler = logging.handlers.SocketHandler("127.0.0.1", server.port)
        log.addHandler(handler)
        try:
            try:
                raise KeyError("missing")
            except KeyError:
                log.exception("lookup failed")
            log.warning("next record")
        finally:
            log.removeHandler(handler)
            handler.close()
        server.assert_lands("next record")
        lines = server.lines()
        assert lines[0] == "ERROR tests.escape.traceback lookup failed"
        assert lines[1] == "\tTraceback (most recent call last):"
        assert lines[2].startswith('\t  File "')
        assert "\tKeyError: 'missing'" in lines
        assert lines[-1] == "WARNING tests.escape.traceback next record"
        assert all(line.startswith("\t") for line in lines[1:-1])


@pytest.mark.multiprocess
def test_a_clean_record_is_written_as_file_mode_writes_it(tmp_path: Path) -> None:
    """Beside a record that needed escaping, a record without control characters gets exactly
    the bytes a file-mode handler with the same format writes."""
    line_format = "%(asctime)s %(levelname)s %(name)s:%(lineno)d %(message)s"
    created = int(time.time()) - 5 + 0.25
    clean = "naïve café \u2013 日本語 ✓ C:\\temp\\x1b stays, a\ttab inside, 100%"
    fields = {
        "created": created,
        "name": "tests.clean",
        "levelno": 30,
        "levelname": "WARNING",
        "msg": clean,
    }
    with run_server(tmp_path, "--format", line_format) as server:
        client = NativeClient(("127.0.0.1", server.port))
        client.hello("c" * 32)
        dirty = dict(fields, msg="dirty\x1b")
        client.send({"type": "batch", "seq": 1, "records": [dict(fields, lineno=12), dirty]})
        client.acked(1)
        client.close()
        server.assert_lands("dirty")
        written = server.file.read_bytes()
    local = tmp_path / "file-mode.log"
    handler = SafeRotatingFileHandler(local, encoding="utf-8")
    handler.setFormatter(logging.Formatter(line_format))
    try:
        msecs = (created - int(created)) * 1000
        handler.handle(logging.makeLogRecord(dict(fields, lineno=12, msecs=msecs)))
    finally:
        handler.close()
    expected = local.read_bytes()
    assert written.startswith(expected)
    assert written[len(expected) :].endswith(b" dirty\\x1b\n")


@pytest.mark.multiprocess
def test_escaping_can_be_turned_off(tmp_path: Path) -> None:
    with run_server(
        tmp_path, "--format", "%(message)s", "--no-escape-control-characters"
    ) as server:
        server.send_stock("raw\r\nsecond line\x1b")
        server.assert_lands("second line")
        assert server.file.read_bytes() == b"raw\r\nsecond line\x1b\n"
