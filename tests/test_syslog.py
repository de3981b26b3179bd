"""Syslog parsing (RFC 5424, RFC 3164 as real senders write it), TCP framing and output."""

from __future__ import annotations

import logging
import logging.handlers
import socket
import subprocess
import time
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safe_rotating._net.syslog import (
    SyslogFramer,
    format_rfc5424,
    octet_frame,
    parse,
    parse_rfc3339,
    severity_of,
)
from safe_rotating._net.wire import ProtocolError

NOW = datetime(2026, 11, 27, 12, 0, 0).timestamp()


# -- RFC 5424 ----------------------------------------------------------------------------------
def test_rfc5424_full() -> None:
    data = (
        b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog 4242 ID47 "
        b'[exampleSDID@32473 iut="3" eventSource="Appl\\"ication"] \xef\xbb\xbfAn application event'
    )
    msg = parse(data)
    assert (msg.facility, msg.severity, msg.rfc) == (20, 5, 5424)
    assert msg.timestamp == datetime(2003, 10, 11, 22, 14, 15, 3000, timezone.utc).timestamp()
    assert msg.hostname == "mymachine.example.com"
    assert msg.app == "evntslog"
    assert msg.procid == "4242"
    assert msg.msgid == "ID47"
    assert msg.structured_data == '[exampleSDID@32473 iut="3" eventSource="Appl\\"ication"]'
    assert msg.message == "An application event"


def test_rfc5424_nil_fields_and_no_message() -> None:
    msg = parse(b"<34>1 - - - - - -")
    assert (msg.hostname, msg.app, msg.procid, msg.msgid, msg.structured_data) == (None,) * 5
    assert msg.timestamp is None
    assert msg.message == ""
    record = msg.to_record(NOW, "10.0.0.9")
    assert record["host"] == "10.0.0.9"
    assert record["app"] == "-"
    assert record["name"] == "syslog"
    assert record["created"] == NOW
    assert record["levelname"] == "CRITICAL"


def test_rfc5424_with_offset_and_multiline_message() -> None:
    msg = parse(b"<11>1 2026-01-02T03:04:05.123456789+01:00 web-3 mysite 77 - - line one\nline two")
    assert msg.timestamp == datetime(2026, 1, 2, 2, 4, 5, 123456, timezone.utc).timestamp()
    assert msg.message == "line one\nline two"
    record = msg.to_record(NOW, "peer")
    assert (record["name"], record["host"], record["process"]) == ("mysite", "web-3", 77)
    assert record["levelname"] == "ERROR"


def test_severity_to_level_and_back() -> None:
    names = [parse(b"<%d>x" % severity).to_record(NOW, "h")["levelname"] for severity in range(8)]
    assert names == ["CRITICAL"] * 3 + ["ERROR", "WARNING", "INFO", "INFO", "DEBUG"]
    assert [severity_of(level) for level in (50, 40, 30, 20, 10)] == [2, 3, 4, 6, 7]


# -- RFC 3164 and what real senders write --------------------------------------------------
def test_python_sysloghandler_shapes() -> None:
    # SysLogHandler: "<PRI>" + ident + message, no timestamp, no host.
    msg = parse(b"<14>myapp: user logged in\x00")
    assert (msg.app, msg.message, msg.hostname, msg.timestamp) == (
        "myapp",
        "user logged in",
        None,
        None,
    )
    plain = parse(b"<12>disk almost full on /var\x00")
    assert plain.app is None
    assert plain.message == "disk almost full on /var"
    assert plain.severity == 4


def test_bsd_with_timestamp_host_and_pid() -> None:
    msg = parse(b"<13>Nov 27 06:54:00 web-3 cron[1234]: job done", now=NOW)
    assert msg.hostname == "web-3"
    assert (msg.app, msg.procid, msg.message) == ("cron", "1234", "job done")
    assert msg.timestamp == datetime(2026, 11, 27, 6, 54, 0).timestamp()
    record = msg.to_record(NOW, "peer")
    assert (record["name"], record["process"]) == ("cron", 1234)


def test_bsd_without_host() -> None:
    msg = parse(b"<13>Nov  3 06:54:00 cron[1234]: job done", now=NOW)
    assert msg.hostname is None
    assert (msg.app, msg.procid, msg.message) == ("cron", "1234", "job done")


def test_bsd_december_read_in_january() -> None:
    january = datetime(2027, 1, 1, 0, 0, 5).timestamp()
    msg = parse(b"<13>Dec 31 23:59:59 host app: late", now=january)
    assert msg.timestamp == datetime(2026, 12, 31, 23, 59, 59).timestamp()


def test_loggen_iso_timestamp_shape() -> None:
    msg = parse(b"<38>2011-07-26T12:34:56+02:00 localhost prg00000[1234]: seq: 0000000000, text")
    assert msg.hostname == "localhost"
    assert (msg.app, msg.procid) == ("prg00000", "1234")
    assert msg.message == "seq: 0000000000, text"
    assert msg.timestamp == datetime(2011, 7, 26, 10, 34, 56, tzinfo=timezone.utc).timestamp()


def test_no_pri_and_garbage_still_make_a_record() -> None:
    msg = parse(b"just text")
    assert (msg.facility, msg.severity, msg.message) == (1, 5, "just text")
    odd = parse(b"<999>\xff\xfe broken")
    assert "broken" in odd.message


def test_octet_count_inside_a_datagram_is_removed() -> None:
    assert parse(octet_frame(b"<11>1 - h app 7 - - text")).message == "text"
    assert parse(b"12 <13>apples").message == "12 <13>apples"  # the count does not match


def test_numbers_are_not_mistaken_for_rfc5424() -> None:
    msg = parse(b"<14>5 records processed in 3 s by worker")
    assert msg.rfc == 3164
    assert msg.message == "5 records processed in 3 s by worker"


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("2026-01-02T03:04:05Z", True),
        ("2026-01-02T03:04:05.5-0700", True),
        ("2026-13-02T03:04:05Z", False),
        ("yesterday", False),
    ],
)
def test_rfc3339(text: str, ok: bool) -> None:
    assert (parse_rfc3339(text) is not None) == ok


# -- TCP framing -------------------------------------------------------------------------------
def split(chunks: list[bytes], max_message: int = 1024) -> list[bytes]:
    framer = SyslogFramer(max_message)
    out: list[bytes] = []
    for chunk in chunks:
        framer.feed(chunk)
        out.extend(framer.messages())
    rest = framer.rest()
    if rest is not None:
        out.append(rest)
    return out


def test_octet_counting_including_zero_padded() -> None:
    stream = octet_frame(b"<13>1 - - - - - one") + b"0000000005 <13>x" + octet_frame(b"<13>y\nz")
    assert split([stream]) == [b"<13>1 - - - - - one", b"<13>x", b"<13>y\nz"]
    # One byte at a time must give the same messages.
    assert split([stream[i : i + 1] for i in range(len(stream))]) == split([stream])


def test_lf_terminated() -> None:
    assert split([b"<13>one\n<13>two\n", b"<13>thr", b"ee\n"]) == [
        b"<13>one",
        b"<13>two",
        b"<13>three",
    ]


def test_nul_terminated_keeps_embedded_line_feeds() -> None:
    traceback = b"<11>app: failed\nTraceback (most recent call last):\n  File x\x00"
    assert split([traceback[:30], traceback[30:] + b"<14>app: next\x00"]) == [
        traceback[:-1],
        b"<14>app: next",
    ]


def test_unterminated_tail_at_close_is_kept() -> None:
    assert split([b"<13>one\n<13>last words"]) == [b"<13>one", b"<13>last words"]


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (b"99999 <13>x", "message too large"),
        (b"12x4 <13>", "bad octet count"),
        (b"123456789012345", "bad octet count"),
        (b"<13>" + b"a" * 2000, "message too large"),
    ],
)
def test_framing_refusals(stream: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        split([stream])
    assert caught.value.reason == reason


def test_python_sysloghandler_over_tcp_is_framed_by_nul() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    handler = logging.handlers.SysLogHandler(("127.0.0.1", port), socktype=socket.SOCK_STREAM)
    connection, _ = server.accept()
    try:
        handler.setFormatter(logging.Formatter("myapp: %(message)s"))
        for text in ("first", "second\nwith a second line"):
            handler.emit(logging.makeLogRecord({"msg": text, "levelno": 30, "levelname": "W"}))
        connection.settimeout(2)
        data = b""
        while data.count(b"\x00") < 2:
            data += connection.recv(4096)
    finally:
        handler.close()
        connection.close()
        server.close()
    messages = [parse(m) for m in split([data])]
    assert [m.message for m in messages] == ["first", "second\nwith a second line"]
    assert {m.app for m in messages} == {"myapp"}
    assert {m.severity for m in messages} == {4}


def logger_lines(*options: str) -> bytes:
    """What util-linux ``logger`` sends over TCP with ``options``."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    command = ["logger", "--tcp", "-n", "127.0.0.1", "-P", str(port), *options]
    sender = subprocess.Popen([*command, "-t", "tagged", "-p", "local0.err", "hello world"])
    try:
        server.settimeout(5)
        connection, _ = server.accept()
        connection.settimeout(5)
        data = b""
        while chunk := connection.recv(4096):
            data += chunk
        connection.close()
    finally:
        server.close()
        sender.wait(5)
    return data


@pytest.mark.parametrize("options", [(), ("--rfc3164",), ("--octet-count",)])
def test_util_linux_logger(options: tuple[str, ...]) -> None:
    data = logger_lines(*options)
    [raw] = split([data])
    msg = parse(raw, now=time.time())
    assert msg.message == "hello world"
    assert msg.app == "tagged"
    assert (msg.facility, msg.severity) == (16, 3)
    assert msg.timestamp is not None
    assert abs(msg.timestamp - time.time()) < 120


# -- output ------------------------------------------------------------------------------------
def test_format_rfc5424_round_trip() -> None:
    record = {
        "created": datetime(2026, 1, 2, 3, 4, 5, 250000, timezone.utc).timestamp(),
        "name": "my app.db",
        "levelno": logging.ERROR,
        "msg": "failed: ü",
        "exc_text": "Traceback (most recent call last):\nValueError",
        "process": 4242,
        "host": "web-3",
    }
    data = format_rfc5424(record)
    assert data.startswith(b"<11>1 2026-01-02T03:04:05.250000Z web-3 my_app.db 4242 - - ")
    msg = parse(data)
    assert (msg.hostname, msg.app, msg.procid) == ("web-3", "my_app.db", "4242")
    assert msg.message == "failed: ü\nTraceback (most recent call last):\nValueError"
    assert msg.timestamp == record["created"]
    framed = octet_frame(data)
    assert split([framed]) == [data]
    local7 = format_rfc5424({"levelno": 10, "msg": "x"}, facility=23, hostname="h", app="a")
    assert local7.startswith(b"<191>1 - h a - - - x")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_parse_to_a_record(data: bytes) -> None:
    record = parse(data, now=NOW).to_record(NOW, "peer")
    assert isinstance(record["msg"], str)
    assert record["host"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=60), max_size=10))
def test_framing_any_stream_yields_messages_or_a_protocol_error(chunks: list[bytes]) -> None:
    framer = SyslogFramer(100)
    try:
        for chunk in chunks:
            framer.feed(chunk)
            for message in framer.messages():
                assert len(message) <= 100
    except ProtocolError:
        return
    assert framer.pending <= 100 + 12
