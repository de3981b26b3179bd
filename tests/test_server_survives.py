"""The frames of the security report, against one running server: it stays alive, serving and
rotating.

Each of these once took the whole server down for every client: a 900 000-deep tuple used as a
dict key (SIGSEGV while hashing), 60 levels of a tuple holding the level below twice (2⁶⁰ steps
to hash: the event loop froze, over TCP and over ``--udp`` alike), a native record dated 1e400
(the writer task died) and one dated 9999 (time rotation stopped for good). Here they all go to
one server with ``--when S``; afterwards a good record must land within 2 s and the next one
after a boundary must start a new file.
"""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from safe_rotating._net.wire import frame

from .logserver import LogServer, NativeClient
from .servers import free_port
from .test_server_numbers import (
    LINE_FORMAT,
    YEAR_9999,
    assert_still_rotating,
    native,
    native_raw,
    stdlib_json_server,
)

pytestmark = pytest.mark.multiprocess


def deep_key_pickle(depth: int) -> bytes:
    """``{(((None,),),...): None}`` nested ``depth`` times: PROTO 2, EMPTY_DICT, NONE, TUPLE1 times
    depth, NONE, SETITEM, STOP — the crash of the report at ``depth=900_000``."""
    return b"\x80\x02}N" + b"\x85" * depth + b"Ns."


def shared_key_pickle(levels: int = 60) -> bytes:
    """A key whose level ``k`` is ``(level k-1, level k-1)`` through memo references: a few
    hundred bytes that take 2**levels steps to hash — the freeze of the report."""
    out = bytearray(b"\x80\x02}")
    out += b"NN\x86q\x000"  # (None, None) into memo 0, popped
    for level in range(1, levels + 1):
        get = b"h" + bytes([level - 1])
        out += get + get + b"\x86q" + bytes([level]) + b"0"  # (prev, prev) into memo level
    out += b"h" + bytes([levels]) + b"Ns."  # {level 60: None}
    return bytes(out)


def send_frame(port: int, payload: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(frame(payload))
        sock.settimeout(5)
        try:
            while sock.recv(65536):  # the server closes a refused connection
                pass
        except (ConnectionResetError, TimeoutError):
            pass


def send_datagram(port: int, payload: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(frame(payload), ("127.0.0.1", port))


def healthz_answers(server: LogServer) -> bool:
    """``/healthz`` answers within 2 s: the event loop is not frozen."""
    url = f"http://127.0.0.1:{server.metrics_port}/healthz"
    with urllib.request.urlopen(url, timeout=2) as page:
        return bool(page.status == 200)


def test_the_hostile_frames_of_the_report_leave_the_server_serving_and_rotating(
    tmp_path: Path,
) -> None:
    assert len(shared_key_pickle()) < 600
    udp = free_port()
    args = ("--when", "S", "--format", LINE_FORMAT, "--udp", f"127.0.0.1:{udp}")
    with stdlib_json_server(tmp_path, *args) as server:
        send_frame(server.port, deep_key_pickle(900_000))
        send_frame(server.port, shared_key_pickle())
        send_datagram(udp, shared_key_pickle())
        send_datagram(udp, deep_key_pickle(60_000))
        client = NativeClient(("127.0.0.1", server.port))
        client.hello("s" * 32)
        native_raw(client, 1, "1e400", "dated 1e400")
        client.acked(1)
        native(client, 2, YEAR_9999, "dated 9999")
        client.acked(2)
        server.wait_refused("pickle_key", count=2)
        server.wait_refused("pickle_too_deep", count=2)
        assert healthz_answers(server)
        assert_still_rotating(server)
        client.close()
        assert server.stop() == 0, server.stderr
    assert "Traceback" not in server.stderr
