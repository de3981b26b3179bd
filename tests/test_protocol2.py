"""Protocol 2: the client renders each line with the handler's formatter; the server writes it.

The frame format and the server's one-pass check are unit-tested here without processes; then a
real server shows that a rendered line lands byte for byte as file mode writes it, that control
characters are still escaped, that both protocols and old spools mix on one server, and that a
new client still works with a server that speaks only protocol 1.
"""

from __future__ import annotations

import logging
import os
import struct
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safe_rotating import SafeRotatingFileHandler
from safe_rotating._client import frames as _frames
from safe_rotating._client import spool as _spool
from safe_rotating._engine.logfile import LogFile, Records
from safe_rotating._net import rendered as _rendered
from safe_rotating._net.syslog import parse
from safe_rotating.client import LogServerHandler
from safe_rotating.verify import make_line
from tests.logserver import NativeClient, eventually, run_server, start_server
from tests.servers import free_port
from tests.test_forward import relay_thread
from tests.wire_peer import WirePeer

CLIENT = uuid.uuid4().hex


def batch(texts: list[bytes], names: list[str] | None = None, seq: int = 1) -> bytes:
    """A protocol-2 frame's payload (without the 4-byte length)."""
    names = names or ["app"] * len(texts)
    levels = [logging.INFO] * len(texts)
    frame = _rendered.encode_batch(CLIENT, seq, texts, levels, names, [1.7e9] * len(texts))
    return frame[4:]


def attach(name: str, *handlers: logging.Handler) -> logging.Logger:
    """A logger of its own for a test: no propagation, every level, ``handlers`` on it."""
    log = logging.getLogger(name)
    log.propagate = False
    log.setLevel(logging.DEBUG)
    for handler in handlers:
        log.addHandler(handler)
    return log


# -- the frame -----------------------------------------------------------------------------------
def test_a_batch_round_trips_with_its_fields() -> None:
    texts = [b"INFO app one", b"WARNING db two", "ERROR app tr\u00e8s".encode()]
    frame = _rendered.encode_batch(
        CLIENT, 7, texts, [20, 30, 400], ["app", "app.db", "app"], [1.5e9, 1.6e9, 1.7e9]
    )
    assert struct.unpack(">I", frame[:4])[0] == len(frame) - 4
    parsed = _rendered.parse_batch(frame[4:])
    assert (parsed.client, parsed.seq, parsed.count) == (CLIENT, 7, 3)
    assert parsed.texts() == texts
    assert parsed.name_of() == ["app", "app.db", "app"]
    assert list(parsed.levels()) == [20, 30, 255]  # a custom level above 255 is clipped
    assert parsed.created() == (1.5e9, 1.6e9, 1.7e9)
    assert parsed.names == ("app", "app.db")  # each name once per batch


def test_a_120_byte_line_costs_at_most_1_3_times_its_bytes_on_the_wire() -> None:
    texts = [make_line(0, seq, 120).encode() for seq in range(256)]
    assert all(len(text) == 119 for text in texts)  # 120 bytes a line with its line feed
    frame = _rendered.encode_batch(
        CLIENT, 1, texts, [20] * 256, ["myapp.views"] * 256, [1.7e9] * 256
    )
    lines = sum(len(text) + 1 for text in texts)  # as written to the file
    assert len(frame) / lines <= 1.3
    assert len(frame) / lines < 1.15  # 120 bytes a line + 16 of fields


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: p[:20], "bad batch"),  # cut short
        (lambda p: p[:-1], "bad batch"),  # lengths do not add up
        (lambda p: p + b"x", "bad batch"),
        (lambda p: bytes([p[0], 1]) + p[2:], "bad batch"),  # unknown flags
        (lambda p: p[:18] + struct.pack(">Q", 0) + p[26:], "bad batch"),  # seq 0
        (lambda p: p[:26] + struct.pack(">I", 2**31) + p[30:], "bad batch"),  # huge count
    ],
)
def test_a_damaged_batch_is_refused_with_a_reason(damage: object, reason: str) -> None:
    payload = batch([b"one", b"two"])
    with pytest.raises(_rendered.BatchError) as refused:
        _rendered.parse_batch(damage(payload))  # type: ignore[operator]
    assert refused.value.reason == reason


def test_a_name_index_outside_the_table_is_refused() -> None:
    payload = bytearray(batch([b"one"]))
    at = 32 + 2 + 3 + 4 + 1  # head, the one name "app", one length, one level
    payload[at : at + 2] = struct.pack(">H", 5)
    with pytest.raises(_rendered.BatchError, match="naming a logger"):
        _rendered.parse_batch(bytes(payload))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_a_batch_or_a_batch_error(data: bytes) -> None:
    payload = bytes([_rendered.MAGIC]) + data
    try:
        parsed = _rendered.parse_batch(payload)
    except _rendered.BatchError:
        return
    _rendered.file_bytes(parsed)  # whatever parsed can be written


# -- what the server writes ----------------------------------------------------------------------
def test_plain_lines_are_written_as_they_came() -> None:
    texts = [b"2026-12-02 INFO app one", "caf\u00e9 \u00e0 la carte".encode(), b"x\ty"]
    data, lines = _rendered.file_bytes(_rendered.parse_batch(batch(texts)))
    assert lines is None
    assert data == b"".join(text + b"\n" for text in texts)


@pytest.mark.parametrize(
    ("text", "written"),
    [
        (b"ok\nFAKE CRITICAL line", b"ok\n\tFAKE CRITICAL line\n"),  # a line feed continues
        (b"red \x1b[31m", b"red \\x1b[31m\n"),
        (b"cr\rhere", b"cr\\rhere\n"),
        (b"\tstarts with a tab", b"\\tstarts with a tab\n"),
        ("nel\u0085 ls\u2028".encode(), b"nel\\x85 ls\\u2028\n"),
        (b"bad \xff utf-8", b"bad \\xff utf-8\n"),
        ("en \u2013 dash".encode(), "en \u2013 dash\n".encode()),  # 0xE2 lead, harmless
    ],
)
def test_lines_that_need_it_are_escaped_by_the_servers_rule(text: bytes, written: bytes) -> None:
    data, lines = _rendered.file_bytes(_rendered.parse_batch(batch([b"before", text, b"after"])))
    assert data == b""
    assert lines == [b"before\n", written, b"after\n"]


def test_without_escaping_each_record_still_ends_its_line() -> None:
    texts = [b"a\x1bb", b"two\nlines"]
    data, lines = _rendered.file_bytes(_rendered.parse_batch(batch(texts)), escape=False)
    assert (data or b"".join(lines or [])) == b"a\x1bb\ntwo\nlines\n"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=40), min_size=1, max_size=8))
def test_every_record_is_one_line_plus_continuations(messages: list[str]) -> None:
    texts = [m.encode("utf-8", "surrogatepass") for m in messages]
    data, lines = _rendered.file_bytes(_rendered.parse_batch(batch(texts)))
    written = data if lines is None else b"".join(lines)
    starts = [line for line in written.split(b"\n")[:-1] if not line.startswith(b"\t")]
    assert len(starts) == len(texts)  # no record forged another, none was merged
    assert written.endswith(b"\n")
    for byte in range(0x20):
        if byte not in (0x09, 0x0A):
            assert bytes([byte]) not in written


# -- a real server -------------------------------------------------------------------------------
FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"


def _log_both(tmp_path: Path, handler: logging.Handler, name: str) -> None:
    """The same records through ``handler`` and a file-mode handler with the same formatter."""
    formatter = logging.Formatter(FORMAT)
    handler.setFormatter(formatter)
    file_mode = SafeRotatingFileHandler(str(tmp_path / "file-mode.log"))
    file_mode.setFormatter(formatter)
    log = attach(name, handler, file_mode)
    try:
        log.info("plain %s", "line")
        log.warning("caf\u00e9 with a \t tab and a %d", 42)
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("with a traceback")
        log.error("an escape \x1b[2J here")
    finally:
        log.removeHandler(handler)
        log.removeHandler(file_mode)
        handler.close()
        file_mode.close()


def test_the_handlers_formatter_renders_and_a_plain_line_matches_file_mode(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path, "--format", "SERVER-FORMAT %(message)s")
    try:
        handler = LogServerHandler(f"127.0.0.1:{server.port}", spool_dir=str(tmp_path / "spool"))
        _log_both(tmp_path, handler, "p2.formatter")
    finally:
        assert server.stop() == 0
    served = (tmp_path / "app.log").read_bytes().splitlines(keepends=True)
    direct = (tmp_path / "file-mode.log").read_bytes().splitlines(keepends=True)
    assert b"SERVER-FORMAT" not in b"".join(served)  # the server's --format did not render
    assert served[:2] == direct[:2]  # plain lines: byte for byte
    # The traceback's lines continue the record with a TAB, the escape sequence is escaped.
    traceback = served[2 : 2 + len(direct) - 4 + 1]
    assert all(line.startswith(b"\t") for line in traceback[1:])
    assert [line.lstrip(b"\t") for line in traceback] == direct[2 : 2 + len(traceback)]
    assert served[-1] == direct[-1].replace(b"\x1b", b"\\x1b")


def test_format_on_server_keeps_the_servers_format(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--format", "SERVER %(levelname)s %(message)s")
    try:
        handler = LogServerHandler(
            f"127.0.0.1:{server.port}", spool_dir=str(tmp_path / "spool"), format_on="server"
        )
        handler.setFormatter(logging.Formatter("CLIENT %(message)s"))
        log = attach("p2.server-side", handler)
        log.warning("hello")
        handler.close()
        log.removeHandler(handler)
    finally:
        assert server.stop() == 0
    assert (tmp_path / "app.log").read_text() == "SERVER WARNING hello\n"


def test_routes_and_size_rotation_take_rendered_batches_apart(tmp_path: Path) -> None:
    server = start_server(
        tmp_path, "--route", "p2.db=db.log", "--max-bytes", "4096", "--backup-count", "50"
    )
    try:
        handler = LogServerHandler(f"127.0.0.1:{server.port}", spool_dir=str(tmp_path / "spool"))
        handler.setFormatter(logging.Formatter("%(message)s"))
        app, db = attach("p2.app", handler), attach("p2.db.query", handler)
        for seq in range(400):
            (db if seq % 4 == 0 else app).info(make_line(seq % 4 == 0, seq, 100))
        handler.close()
        for log in (app, db):
            log.removeHandler(handler)
    finally:
        assert server.stop() == 0
    app_files = list(tmp_path.glob("app.log*"))
    assert len(app_files) > 5  # 300 lines of 100 bytes rotated at 4 KiB
    assert all(path.stat().st_size <= 4096 for path in [*app_files, *tmp_path.glob("db.log*")])
    app_lines = [line for path in app_files for line in path.read_text().splitlines()]
    db_lines = [line for path in tmp_path.glob("db.log*") for line in path.read_text().splitlines()]
    assert sorted(app_lines) == sorted(make_line(0, s, 100) for s in range(400) if s % 4)
    assert sorted(db_lines) == sorted(make_line(1, s, 100) for s in range(0, 400, 4))


def _v1_spool(directory: Path, client: str, lines: list[str]) -> None:
    """A spool as a 0.2 client left it: v1 batch frames, a lock file, no process holding it."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    frames = [
        _frames.batch_frame(client, seq + 1, [_frames.encode_record({"msg": line})])
        for seq, line in enumerate(lines)
    ]
    segment = directory / f"{client}.000001.spool"
    segment.write_bytes(b"".join(frames))
    os.chmod(segment, 0o600)
    lock = directory / f"{client}.lock"
    lock.write_bytes(b"")
    os.chmod(lock, 0o600)


def test_protocols_mix_on_one_server_and_a_v1_spool_replays(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--format", "%(message)s")
    address = f"127.0.0.1:{server.port}"
    spool = tmp_path / "spool"
    old = uuid.uuid4().hex
    _v1_spool(spool / _spool.address_key(address), old, [make_line(2, s) for s in range(50)])
    try:
        rendered = LogServerHandler(address, spool_dir=str(spool))
        rendered.setFormatter(logging.Formatter("%(message)s"))
        fields = LogServerHandler(address, spool_dir=str(spool))  # no formatter: protocol 1
        for writer, handler in enumerate((rendered, fields)):
            log = attach(f"p2.mix{writer}", handler)
            for seq in range(500):
                log.info(make_line(writer, seq))
        for handler in (rendered, fields):
            handler.close()
        eventually(lambda: not list(spool.rglob("*.spool")), 15, "the old spool delivered")
    finally:
        assert server.stop() == 0
    lines = (tmp_path / "app.log").read_text().splitlines()
    for writer, count in ((0, 500), (1, 500), (2, 50)):
        mine = [line for line in lines if line.startswith(f"{writer:04d} ")]
        assert mine == [make_line(writer, s) for s in range(count)], f"writer {writer}"


def test_a_v2_client_speaks_v1_to_a_server_that_offers_only_v1(tmp_path: Path) -> None:
    with WirePeer(protocol=1).start() as peer:
        handler = LogServerHandler(peer.address, spool_dir=str(tmp_path / "spool"))
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        log = attach("p2.old-server", handler)
        for seq in range(300):
            log.warning(make_line(0, seq))
        handler.close()
        log.removeHandler(handler)
        assert peer.messages() == [f"WARNING {make_line(0, seq)}" for seq in range(300)]
        assert set(peer.frame_kinds) == {1}
    with WirePeer().start() as peer:
        handler = LogServerHandler(peer.address, spool_dir=str(tmp_path / "spool"))
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.warning("new")
        handler.close()
        log.removeHandler(handler)
        assert peer.messages() == ["new"]
        assert set(peer.frame_kinds) == {2}


def test_the_spool_holds_rendered_batches_compactly(tmp_path: Path) -> None:
    handler = LogServerHandler("127.0.0.1:1", spool_dir=str(tmp_path), flush_timeout=0.2)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = attach("p2.spool-size", handler)
    lines = [make_line(0, seq, 120) for seq in range(5000)]
    for line in lines:
        log.info(line)
    handler.flush()
    on_disk = sum(path.stat().st_size for path in tmp_path.rglob("*.spool"))
    handler.close()
    log.removeHandler(handler)
    assert on_disk / sum(len(line) + 1 for line in lines) <= 1.3


@pytest.mark.parametrize("max_bytes", [300, 1000, 4096])
def test_the_engine_cuts_joined_records_between_lines_at_max_bytes(
    tmp_path: Path, max_bytes: int
) -> None:
    """A protocol-2 batch is one piece of bytes for the engine; where it does not fit the
    current file it is cut between lines, so no file passes max_bytes and no line is split."""
    lines = [make_line(0, seq, 100).encode() + b"\n" for seq in range(200)]
    log_file = LogFile(str(tmp_path / "app.log"), max_bytes=max_bytes, backup_count=1000)
    try:
        for start in range(0, 200, 50):  # rounds: two joined batches and a plain line
            part = lines[start : start + 50]
            log_file.append_batch(
                [Records(b"".join(part[:24])), part[24], Records(b"".join(part[25:]))]
            )
    finally:
        log_file.close()
    backups = sorted(tmp_path.glob("app.log.*"), key=lambda p: -int(p.suffix[1:]))
    files = [*backups, tmp_path / "app.log"]  # oldest first
    assert all(path.stat().st_size <= max_bytes for path in files)
    assert b"".join(path.read_bytes() for path in files) == b"".join(lines)


def test_forward_sends_the_rendered_line_as_msg(tmp_path: Path) -> None:
    """--forward with rendered lines: MSG is the line as the client's formatter made it; the
    header's app, procid and severity come from the fields sent beside it."""
    relay_port = free_port()
    server = start_server(tmp_path, "--forward", f"127.0.0.1:{relay_port}")
    try:
        with relay_thread(relay_port) as relay:
            handler = LogServerHandler(
                f"127.0.0.1:{server.port}", spool_dir=str(tmp_path / "spool")
            )
            handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
            log = attach("p2.forwarded", handler)
            log.error("to the relay")
            handler.close()
            log.removeHandler(handler)
            eventually(lambda: relay.texts() == ["ERROR to the relay"], 10, "the forwarded line")
            message = parse(relay.messages[0])
            assert (message.app, message.procid, message.severity) == (
                "p2.forwarded",
                str(os.getpid()),
                3,
            )
    finally:
        assert server.stop() == 0
    assert (tmp_path / "app.log").read_text() == "ERROR to the relay\n"


def test_a_rendered_batch_sent_again_is_acknowledged_not_written_and_counted(
    tmp_path: Path,
) -> None:
    """The journal suppresses a protocol-2 batch sent again, as a v1 one, and /metrics counts
    its records among the duplicates suppressed."""
    client = uuid.uuid4().hex
    texts = [make_line(0, seq).encode() for seq in range(3)]
    frame = _rendered.encode_batch(client, 1, texts, [20] * 3, ["app"] * 3, [1.7e9] * 3)
    with run_server(tmp_path) as server:
        native = NativeClient(("127.0.0.1", server.port))
        welcome = native.hello(client, protocols=[1, 2])
        assert welcome["protocol"] == 2
        for _ in range(2):
            native.sock.sendall(frame)
            native.acked(1)
        eventually(
            lambda: server.metrics()["duplicate_batches_suppressed_total"] == 1, 5, "the resend"
        )
        native.close()
        assert server.lines() == [text.decode() for text in texts]
        assert server.metrics()["duplicate_records_suppressed_total"] == 3
