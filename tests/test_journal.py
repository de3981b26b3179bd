"""The server's journal under hostile clients and neighbours (issue 13, cases 7 and 13).

The journal remembers, per client id, the last batch written, so a batch sent again after a lost
acknowledgement — or replayed from a dead process's spool — is not written twice. An id alone
proves nothing: each entry is bound to the peer (uid of a Unix-socket peer, this host for
loopback TCP, else the IP) and to the token, so another uid cannot read or move a client's
entry; only batches with records make entries; the table is bounded. The journal lives beside
the log by default, in a directory a neighbour may write: nothing planted there is opened,
followed or written through.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import pytest

from safe_rotating._net.wire import decode
from safe_rotating.server.state import Journal, journal_key
from safe_rotating.verify import parse_line
from tests.logserver import NativeClient, eventually, run_server, start_server
from tests.neighbour import SharedDir, secret_file
from tests.servers import free_port
from tests.test_client import ROOT

CLIENT = "c" * 32
HUGE = 10**18


def _journal_lines(directory: Path) -> list[str]:
    return (directory / ".app.log.journal").read_text().splitlines()


# -- case 7: ids bound to the peer ----------------------------------------------------------------
def _claim(socket_path: str, client: str) -> tuple[int, dict[str, Any] | None]:
    """As the neighbour: say hello with ``client``'s id and send a batch numbered 10^18."""
    peer = NativeClient(socket_path)
    try:
        welcome = peer.hello(client)
        peer.batch(HUGE, ["HIJACK"])
        return int(welcome["last_seq"]), peer.receive()
    finally:
        peer.close()


def test_another_uid_can_neither_see_nor_move_a_clients_journal_entry(
    tmp_path: Path, shared_dir: SharedDir
) -> None:
    """Old main: the neighbour was welcomed with the client's last_seq, and its batch 10^18 made
    every later batch of the client a "duplicate", acknowledged and never written."""
    sock = shared_dir.join("log.sock")
    args = ("--listen", f"unix:{sock}", "--unix-mode", "0666", "--format", "%(message)s")
    with run_server(tmp_path, *args, listen=False) as server:
        owner = NativeClient(sock)
        assert owner.hello(CLIENT)["last_seq"] == 0
        for seq, text in enumerate(["one", "two", "three"], 1):
            owner.batch(seq, [text])
            owner.acked(seq)
        owner.close()

        last_seq, answer = cast("tuple[int, Any]", shared_dir.run(_claim, sock, CLIENT))
        assert last_seq == 0, "another uid was told how far this client's batches went"
        assert answer == {"v": 1, "type": "ack", "seq": HUGE}  # its own, separate sequence

        again = NativeClient(sock)
        assert again.hello(CLIENT)["last_seq"] == 3  # untouched by the claim
        again.batch(4, ["four"])
        again.acked(4)
        again.close()
        server.assert_lands("four")
        assert server.lines() == ["one", "two", "three", "HIJACK", "four"]
        assert server.metrics()["duplicate_batches_suppressed_total"] == 0
    keys = {line.split()[0] for line in _journal_lines(tmp_path)}
    assert keys == {journal_key(CLIENT, "uid0", None), journal_key(CLIENT, "uid65534", None)}


def test_hellos_and_empty_batches_leave_no_journal_entry(tmp_path: Path) -> None:
    """Old main: every id that said hello and sent an empty batch stayed 30 days (300 lines)."""
    with run_server(tmp_path) as server:
        for n in range(300):
            client = NativeClient(("127.0.0.1", server.port))
            client.hello(f"{n:032x}")
            if n % 2:
                client.batch(1, [])
                client.acked(1)
            client.close()
        assert _journal_lines(tmp_path) == []
        writer = NativeClient(("127.0.0.1", server.port))
        writer.hello(CLIENT)
        writer.batch(1, [])  # nothing to deduplicate: acknowledged, not journaled
        writer.acked(1)
        writer.batch(2, ["a record"])
        writer.acked(2)
        writer.close()
        server.assert_lands("a record")
    assert [line.split()[:2] for line in _journal_lines(tmp_path)] == [[f"{CLIENT}@lo/-", "2"]]


def test_the_journal_is_bounded_and_evicts_only_ids_idle_past_their_retention(
    tmp_path: Path,
) -> None:
    """Full: the oldest ids idle longer than their retention make room, oldest first; with none
    such, a new id is not journaled (counted) — a live entry is never evicted for it."""
    path = tmp_path / "journal"
    journal = Journal(str(path), max_entries=3, keep_seconds=1)
    journal.open()
    journal.record([("a", 1), ("b", 1), ("c", 1)])
    time.sleep(2.05)  # a, b and c are now idle past their retention (stamps are whole seconds)
    journal.record([("c", 2)])  # c is live again
    journal.record([("d", 1)])  # evicts a, the least recently written
    journal.record([("e", 1)])  # evicts b
    assert (journal.last_seq("a"), journal.last_seq("b")) == (0, 0)
    assert not journal.admits("f")  # c, d, e are live: nothing to evict
    journal.record([("f", 1), ("c", 3)])
    assert journal.untracked == 1
    assert len(journal) == 3
    assert [journal.last_seq(k) for k in "cdef"] == [3, 1, 1, 0]
    journal.close()
    again = Journal(str(path), max_entries=3, keep_seconds=1)
    again.open()
    assert [again.last_seq(k) for k in "abcdef"] == [0, 0, 3, 1, 1, 0]
    again.close()


def test_a_full_journal_refuses_new_ids_counted_and_keeps_every_live_one(tmp_path: Path) -> None:
    """100 000 ids written to within their retention fill the journal: a new id is served (its
    records written) but not journaled, counted as ``journal full``; no live entry is evicted."""
    now = int(time.time())
    keys = [journal_key(f"{n:032x}", "lo", None) for n in range(100_000)]
    text = "".join(f"{key} 7 {now - 60}\n" for key in keys)
    (tmp_path / ".app.log.journal").write_text(text)
    with run_server(tmp_path, "--format", "%(message)s") as server:
        newcomer = NativeClient(("127.0.0.1", server.port))
        assert newcomer.hello(CLIENT)["last_seq"] == 0
        newcomer.batch(1, ["from a new id"])
        newcomer.acked(1)
        newcomer.close()
        server.assert_lands("from a new id")
        assert server.refused("journal_full") == 1
        known = NativeClient(("127.0.0.1", server.port))
        assert known.hello(f"{0:032x}")["last_seq"] == 7  # the oldest entry is still there
        known.batch(8, ["from a known id"])
        known.acked(8)
        known.close()
        server.assert_lands("from a known id")
        assert server.refused("journal_full") == 1
    lines = _journal_lines(tmp_path)
    assert len({line.split()[0] for line in lines}) == 100_000
    assert not any(line.startswith(CLIENT) for line in lines)


_DYING = """
import logging, sys
from safe_rotating.client import LogServerHandler
from safe_rotating.verify import make_line
address, spool, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
handler = LogServerHandler(address, spool_dir=spool, batch_size=5, flush_timeout=10)
log = logging.getLogger("dying")
log.propagate = False
log.addHandler(handler)
log.setLevel(logging.INFO)
for seq in range(count):
    log.info(make_line(0, seq))
handler.flush()  # no server: everything is in the spool now
print(handler.client_id, handler.stats().spooled, flush=True)
sys.stdin.read()  # until killed
"""

_NEXT = """
import logging, sys
from safe_rotating.client import LogServerHandler
from safe_rotating.verify import make_line
handler = LogServerHandler(sys.argv[1], spool_dir=sys.argv[2], flush_timeout=10)
log = logging.getLogger("next")
log.propagate = False
log.addHandler(handler)
log.setLevel(logging.INFO)
log.info(make_line(1, 0))
handler.close()
print(handler.stats().replayed, handler.stats().dropped, flush=True)
"""


def _frames(segment_dir: Path, client: str) -> list[bytes]:
    """The frames of ``client``'s spool, in order (4-byte length + batch message each)."""
    frames: list[bytes] = []
    for path in sorted(segment_dir.glob(f"{client}.*.spool")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            size = int.from_bytes(data[offset : offset + 4], "big")
            frames.append(data[offset : offset + 4 + size])
            offset += 4 + size
    return frames


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_a_killed_clients_spool_replayed_by_another_process_no_duplicate_none_lost(
    tmp_path: Path, transport: str
) -> None:
    """A client killed with its spool full; before it died the server had written (and
    journaled) its first four batches without its acknowledging them. The next process on the
    same host (same uid) replays the spool under the dead client's id: the journal entry is the
    same one, so the four are skipped — each record exactly once."""
    out, spool = tmp_path / "out", tmp_path / "spool"
    out.mkdir()
    if transport == "tcp":
        port = free_port()
        address, listen = f"127.0.0.1:{port}", ("--listen", f"127.0.0.1:{port}")
        target: tuple[str, int] | str = ("127.0.0.1", port)
    else:
        sock = str(tmp_path / "log.sock")
        address, listen, target = f"unix:{sock}", ("--listen", f"unix:{sock}"), sock
    env = {**os.environ, "PYTHONPATH": ROOT}
    count = 50
    dying = subprocess.Popen(
        [sys.executable, "-c", _DYING, address, str(spool), str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert dying.stdout is not None
    client, spooled = dying.stdout.readline().decode().split()
    assert int(spooled) == count
    dying.send_signal(signal.SIGKILL)
    dying.wait()
    (segment_dir,) = {path.parent for path in spool.rglob(f"{client}.*.spool")}
    frames = _frames(segment_dir, client)
    assert len(frames) >= 10

    args = ("--format", "%(message)s", *listen)
    server = start_server(out, *args, listen=False)
    try:
        # What the dead client had sent before it died: written and journaled, never acked.
        early = NativeClient(target)
        assert early.hello(client)["last_seq"] == 0
        for number, frame in enumerate(frames[:4], 1):
            assert decode(frame[4:])["seq"] == number
            early.sock.sendall(frame)
            early.acked(number)
        early.close()

        done = subprocess.run(
            [sys.executable, "-c", _NEXT, address, str(spool)],
            capture_output=True,
            env=env,
            timeout=60,
            check=True,
        )
        replayed, dropped = map(int, done.stdout.split())
        assert (replayed, dropped) == (count - sum(_records(f) for f in frames[:4]), 0)
        assert not list(spool.rglob("*.spool")), "the dead spool was left undelivered"
        eventually(lambda: len(server.lines()) >= count + 1, 5, "every record written")
        metrics = server.metrics()
        assert metrics["duplicate_batches_suppressed_total"] == 0
    finally:
        assert server.stop() == 0, server.stderr
    found = [parse_line(line.encode()) for line in server.lines()]
    assert sorted(f for f in found if f is not None) == [(0, n) for n in range(count)] + [(1, 0)]


def _records(frame: bytes) -> int:
    return len(decode(frame[4:])["records"])


# -- case 13: nothing planted beside the journal is followed --------------------------------------
def _plant_link(target: str, link: str) -> None:
    os.symlink(target, link)


def test_a_planted_journal_temporary_is_neither_followed_nor_made_the_journal(
    tmp_path: Path, shared_dir: SharedDir
) -> None:
    """Old main opened ``.app.log.journal.tmp`` with O_TRUNC through the neighbour's link —
    root overwrote the target with journal lines — then renamed the link into the journal."""
    victim = secret_file(str(tmp_path), "TOPSECRET root only\n")
    planted = shared_dir.join(".app.log.journal.tmp")
    shared_dir.run(_plant_link, victim, planted)
    directory = Path(shared_dir.path)
    with run_server(directory, "--format", "%(message)s") as server:
        writer = NativeClient(("127.0.0.1", server.port))
        writer.hello(CLIENT)
        writer.batch(1, ["a record"])
        writer.acked(1)
        writer.close()
        server.assert_lands("a record")
        assert server.stop() == 0, server.stderr
    assert Path(victim).read_text() == "TOPSECRET root only\n"
    assert os.readlink(planted) == victim  # left alone, not renamed into place
    journal = shared_dir.join(".app.log.journal")
    st = os.lstat(journal)
    assert not os.path.islink(journal)
    assert st.st_uid == 0
    assert st.st_mode & 0o777 == 0o600
    assert shared_dir.can_read(journal) is None
    assert [line.split()[:2] for line in _journal_lines(directory)] == [[f"{CLIENT}@lo/-", "1"]]
    leftovers = [n for n in os.listdir(directory) if re.fullmatch(r"\.app\.log\.journal\..+", n)]
    assert leftovers == [".app.log.journal.tmp"]  # the planted link only: no temporary left


def test_a_fifo_or_link_planted_as_the_journal_is_replaced_not_opened(
    tmp_path: Path, shared_dir: SharedDir
) -> None:
    """Old main opened the journal by name and read it: a planted FIFO hung the server's
    start-up forever, a planted link was read through."""
    secret = secret_file(str(tmp_path), "x 99 1900000000\n")  # would parse as an entry
    journal = shared_dir.join(".app.log.journal")
    directory = Path(shared_dir.path)
    for plant in (lambda: os.mkfifo(journal), lambda: os.symlink(secret, journal)):
        shared_dir.run(plant)
        started = time.monotonic()
        with run_server(directory, "--format", "%(message)s") as server:
            assert time.monotonic() - started < 10
            assert "refusing to use the journal" in server.stderr
            writer = NativeClient(("127.0.0.1", server.port))
            assert writer.hello("x")["last_seq"] == 0  # nothing read through the link
            writer.batch(1, ["after the plant"])
            writer.acked(1)
            writer.close()
            assert server.stop() == 0, server.stderr
        assert not os.path.islink(journal)
        assert os.path.isfile(journal)
        assert Path(secret).read_text() == "x 99 1900000000\n"
        os.unlink(journal)
