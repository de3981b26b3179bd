"""Interoperability with a real rsyslog, both ways, through a private ``rsyslogd`` per test.

(a) ``--forward`` to rsyslog's imtcp input: rsyslog writes each message (``%msg%``) to a file,
    which must equal the server's own file written with ``--format %(message)s`` (and
    ``--no-escape-control-characters``: the relay gets each record as it was sent).
(b) rsyslog's omfwd (TCP, ``TCP_Framing="octet-counted"``, ``RSYSLOG_SyslogProtocol23Format``)
    to the server's ``--syslog-tcp``: what rsyslog was given arrives intact in the server's file,
    escaped by the server's rule (a traceback's lines marked as continuations).

Each test starts its own ``rsyslogd -n -f <conf> -i <pid>`` with its work directory and files in
the test's temporary directory: no system daemon, no ``/dev/log``.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from safe_rotating._net.escape import escape
from safe_rotating._net.syslog import format_rfc5424, octet_frame

from .logserver import eventually, run_server
from .servers import free_port, wait_until_serving


def find_rsyslogd() -> str | None:
    found = shutil.which("rsyslogd")
    if found is not None:
        return found
    for path in ("/usr/sbin/rsyslogd", "/sbin/rsyslogd"):  # sbin may be off a user's PATH
        if os.access(path, os.X_OK):
            return path
    return None


RSYSLOGD = find_rsyslogd()
pytestmark = [
    pytest.mark.multiprocess,
    pytest.mark.skipif(
        RSYSLOGD is None, reason="rsyslogd is not installed (Debian: apt-get install rsyslog)"
    ),
]

# Messages as they are, control characters and all; room for long tracebacks; one worker, so
# rsyslog keeps the order of a connection.
GLOBAL = """\
global(workDirectory="{work}" maxMessageSize="64k"
       parser.escapeControlCharactersOnReceive="off")
main_queue(queue.workerThreads="1")
module(load="imtcp")
"""


@contextmanager
def rsyslogd(directory: Path, port: int, rules: str, templates: str = "") -> Iterator[Path]:
    """A private rsyslogd whose imtcp input on ``127.0.0.1:port`` feeds ruleset ``main``.

    The configuration is checked first (``-N1``): rsyslogd starts even with errors in it.
    """
    assert RSYSLOGD is not None
    directory.mkdir()
    (directory / "work").mkdir()
    conf = directory / "rsyslog.conf"
    conf.write_text(
        GLOBAL.format(work=directory / "work")
        + templates
        + f'input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="main")\n'
        + 'ruleset(name="main") {\n'
        + rules
        + "}\n"
    )
    checked = subprocess.run(
        [RSYSLOGD, "-N1", "-f", str(conf)], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, f"rsyslog refuses the configuration: {checked.stderr}"
    err = directory / "rsyslogd.err"
    with open(err, "wb") as out:
        process = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(conf), "-i", str(directory / "rsyslogd.pid")],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        try:
            wait_until_serving(port, process, "rsyslogd", timeout=15)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {err.read_text(errors='replace')}") from None
        yield directory
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def test_server_forwards_to_rsyslog(tmp_path: Path) -> None:
    port = free_port()
    templates = """\
template(name="message" type="string" string="%msg%\\n")
template(name="header" type="string" string="%pri% %pri-text% %hostname% %app-name% %procid%\\n")
"""
    rules = f"""\
  action(type="omfile" file="{tmp_path / "rsyslog" / "messages.log"}" template="message")
  action(type="omfile" file="{tmp_path / "rsyslog" / "headers.log"}" template="header")
"""
    count = 300
    with rsyslogd(tmp_path / "rsyslog", port, rules, templates) as rsyslog:
        args = ["--forward", f"127.0.0.1:{port}", "--forward-facility", "local4"]
        raw = ("--format", "%(message)s", "--no-escape-control-characters")
        with run_server(tmp_path, *args, *raw) as server:
            handler = logging.handlers.SocketHandler("127.0.0.1", server.port)
            log = logging.getLogger("tests.rsyslog.out")
            log.propagate = False
            log.setLevel(logging.DEBUG)
            log.addHandler(handler)
            try:
                for i in range(count):
                    if i == 100:
                        try:
                            raise KeyError("missing")
                        except KeyError:
                            log.exception("record %d: lookup failed", i)
                    elif i == 101:
                        log.warning("record %d: naïve café, Grüße, 日本語, emoji ✓\tand a tab", i)
                    else:
                        log.info("record %d", i)
            finally:
                log.removeHandler(handler)
                handler.close()
            eventually(lambda: f"record {count - 1}\n" in server.text(), 10, "all written")
            written = server.text()
            assert written.count("\n") > count  # the traceback spans lines
            messages = rsyslog / "messages.log"
            eventually(lambda: read(messages) == written, 10, "rsyslog has every record")
            assert (
                server.metrics()[f'forward_records_sent_total{{target="127.0.0.1:{port}"}}']
                == count
            )
            assert server.stop() == 0
        text = read(messages)
        assert "record 100: lookup failed\nTraceback (most recent call last):\n" in text
        assert "KeyError: 'missing'\nrecord 101: naïve café, Grüße, 日本語, emoji ✓\tand" in text
        headers = read(rsyslog / "headers.log").splitlines()
        assert len(headers) == count
        host = socket.gethostname()
        assert headers[0] == f"166 local4.info {host} tests.rsyslog.out {os.getpid()}"
        assert headers[100].startswith("163 local4.err ")
        assert headers[101].startswith("164 local4.warning ")


def test_rsyslog_forwards_to_the_server(tmp_path: Path) -> None:
    ours, theirs = free_port(), free_port()
    rules = f"""\
  action(type="omfwd" target="127.0.0.1" port="{ours}" protocol="tcp"
         TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")
"""
    records: list[dict[str, Any]] = []
    for i in range(300):
        levelno = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)[i % 4]
        message = f"event {i}"
        if i == 50:
            message += ': failed\nTraceback (most recent call last):\n  File "x.py", line 3\n'
            message += "ValueError: bad"
        elif i == 51:
            message += ": naïve café, Grüße, 日本語, emoji ✓\twith a tab"
        records.append(
            {
                "created": 1_800_000_000.0 + i / 1000,
                "name": "billing",
                "levelno": levelno,
                "msg": message,
                "process": 77,
                "host": "web-7",
            }
        )
    line_format = "%(levelname)s %(name)s %(host)s %(process)s|%(message)s"
    args = ["--syslog-tcp", f"127.0.0.1:{ours}", "--format", line_format]
    with run_server(tmp_path, *args) as server, rsyslogd(tmp_path / "rsyslog", theirs, rules):
        with socket.create_connection(("127.0.0.1", theirs), timeout=10) as sock:
            for r in records:
                sock.sendall(octet_frame(format_rfc5424(r)))
        expected = "".join(
            escape(f"{logging.getLevelName(r['levelno'])} billing web-7 77|{r['msg']}") + "\n"
            for r in records
        )
        eventually(lambda: server.text() == expected, 15, "every message in the server's file")
        assert server.stop() == 0
    assert "Traceback (most recent call last):\n\t  File" in expected
