"""``LogServerHandler`` across fork, by ``os.fork()`` and by libc's ``fork()`` (as uWSGI forks).

A child never sends what its parent queued, never shares the parent's client id, sequence
space, socket or spool, and never keeps the parent's spool lock alive: after a libc fork the
at-fork hooks do not run, so all of that rests on the pid check in every use of the handler.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from safe_rotating.client import LogServerHandler
from safe_rotating.verify import make_line
from tests.servers import free_port
from tests.test_client import ROOT, writers_of
from tests.test_fork_libc import FORKS
from tests.wire_peer import WirePeer

pytestmark = [
    pytest.mark.multiprocess,
    # Python >= 3.12 warns when os.fork() runs in a multi-threaded process; the children only
    # log through the handler under test and leave with os._exit.
    pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning"),
]

WRITERS = 4
PER_WRITER = 2000
PARENT = WRITERS  # the parent's writer id
BEFORE, QUEUED, AFTER = 2000, 500, 1000  # the parent's records: before, across, after the forks


@pytest.fixture
def peer() -> Iterator[WirePeer]:
    with WirePeer().start() as running:
        yield running


# The forking parent runs in a process of its own, with no thread but the sender's. A fork done
# in C (uWSGI's workers) skips CPython's own after-fork repair, so a child inherits the GIL as
# it was: if another thread of the parent was waiting for it at that instant, the child hangs
# in the interpreter itself, whatever it runs. A real master forks long after its last record,
# when the sender sleeps in poll(); "libc-fork" does the same, with records still queued (the
# sender is kept asleep), while "os-fork" forks in the middle of the traffic.
_FORKING_PARENT = """
import ctypes, json, logging, math, os, sys, time
from safe_rotating.client import LogServerHandler
from safe_rotating.verify import make_line
address, spool, how = sys.argv[1], sys.argv[2], sys.argv[3]
WRITERS, PER_WRITER, PARENT, BEFORE, QUEUED, AFTER = (int(a) for a in sys.argv[4:10])

def libc_fork():
    fork = ctypes.PyDLL(None).fork  # holds the GIL, as C code forking under it does
    fork.argtypes = []
    fork.restype = ctypes.c_int
    return fork()

def child(writer, parent_id):
    code = 1
    try:
        for seq in range(PER_WRITER):
            log.info(make_line(writer, seq))
        handler.flush()
        deadline = time.monotonic() + 20
        while handler.stats().acked < PER_WRITER and time.monotonic() < deadline:
            time.sleep(0.01)
        stats = handler.stats()
        if (stats.queued, stats.acked) != (PER_WRITER, PER_WRITER):
            os.write(2, f"writer {writer}: {stats}\\n".encode())
            code = 2
        else:
            code = 3 if handler.client_id == parent_id else 0
    except BaseException as exc:
        os.write(2, f"writer {writer}: {exc!r}\\n".encode())
    finally:
        os._exit(code)

handler = LogServerHandler(address, spool_dir=spool, ack_timeout=1.0)
log = logging.getLogger("parent")
log.addHandler(handler)
log.setLevel(logging.INFO)
for seq in range(BEFORE):
    log.info(make_line(PARENT, seq))
if how == "libc-fork":
    handler.flush()
    time.sleep(0.3)  # the sender thread now sleeps in poll()
    handler._sender.wake_at = math.inf  # and stays asleep: the next records stay queued
for seq in range(BEFORE, BEFORE + QUEUED):
    log.info(make_line(PARENT, seq))
queued_at_fork = len(handler._sender.queue)
parent_id = handler.client_id
pids = []
for writer in range(WRITERS):
    pid = libc_fork() if how == "libc-fork" else os.fork()
    if pid == 0:
        child(writer, parent_id)
    pids.append(pid)
for seq in range(BEFORE + QUEUED, BEFORE + QUEUED + AFTER):
    log.info(make_line(PARENT, seq))
codes = {}
deadline = time.monotonic() + 30
while len(codes) < len(pids) and time.monotonic() < deadline:
    for pid in pids:
        if pid not in codes:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                codes[pid] = os.waitstatus_to_exitcode(status)
    time.sleep(0.01)
for pid in set(pids) - set(codes):
    os.kill(pid, 9)
    codes[pid] = -9
handler.flush()
deadline = time.monotonic() + 20
while handler.stats().pending and time.monotonic() < deadline:
    time.sleep(0.01)
stats = handler.stats()
handler.close()
print(json.dumps({"codes": sorted(codes.values()), "parent": parent_id,
                  "queued_at_fork": queued_at_fork, "queued": stats.queued,
                  "acked": stats.acked}))
"""


@pytest.mark.parametrize("how", FORKS.keys())
def test_parent_and_children_records_all_arrive_none_twice(
    peer: WirePeer, tmp_path: Path, how: str
) -> None:
    counts = [WRITERS, PER_WRITER, PARENT, BEFORE, QUEUED, AFTER]
    done = subprocess.run(
        [sys.executable, "-c", _FORKING_PARENT, peer.address, str(tmp_path), how,
         *map(str, counts)],
        capture_output=True, timeout=90, env={**os.environ, "PYTHONPATH": ROOT}, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)
    assert report["codes"] == [0] * WRITERS, done.stderr.decode()
    total = BEFORE + QUEUED + AFTER
    assert (report["queued"], report["acked"]) == (total, total)
    if how == "libc-fork":
        assert report["queued_at_fork"] == QUEUED  # the children inherited a full queue

    found = writers_of(peer.messages())
    assert found[PARENT] == list(range(total)), "parent: lost, doubled or reordered"
    for writer in range(WRITERS):
        assert found[writer] == list(range(PER_WRITER)), f"child {writer}"
    assert peer.duplicates == 0
    assert len(set(peer.clients())) == WRITERS + 1, "every process has a client id of its own"
    assert peer.messages(report["parent"])[:BEFORE] == [
        make_line(PARENT, seq) for seq in range(BEFORE)
    ]


# A parent that spooled (server down), then forked a child that logs once and lives on. The
# test kills the parent: its spool must be replayable at once although the child still runs.
_PARENT_WITH_CHILD = """
import ctypes, logging, os, sys, time
from safe_rotating.client import LogServerHandler
from safe_rotating.verify import make_line
address, spool, count, how = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
handler = LogServerHandler(address, spool_dir=spool, ack_timeout=0.2)
log = logging.getLogger("parent")
log.addHandler(handler)
log.setLevel(logging.INFO)
for seq in range(count):
    log.info(make_line(0, seq))
deadline = time.monotonic() + 20
while handler.stats().spooled < count and time.monotonic() < deadline:
    time.sleep(0.01)
if how == "libc-fork":
    fork = ctypes.PyDLL(None).fork
    fork.argtypes = []
    fork.restype = ctypes.c_int
    pid = fork()
else:
    pid = os.fork()
if pid == 0:
    log.info(make_line(1, 0))  # the child's first use of the handler
    while handler.stats().spooled < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    print("child", handler.client_id, flush=True)
    time.sleep(60)
    os._exit(0)
print("parent", handler.client_id, pid, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("how", FORKS.keys())
def test_a_child_does_not_keep_its_dead_parents_spool_locked(
    tmp_path: Path, logger: logging.Logger, how: str
) -> None:
    port = free_port()
    spool = tmp_path / "spool"
    count = 1500
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT_WITH_CHILD, f"127.0.0.1:{port}", str(spool), str(count),
         how],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": ROOT},
    )  # fmt: skip
    child_pid = 0
    try:
        assert parent.stdout is not None
        lines = {}
        for _ in range(2):
            words = parent.stdout.readline().decode().split()
            assert words, "the parent or its child ended early"
            lines[words[0]] = words[1:]
        parent_id, child_pid = lines["parent"][0], int(lines["parent"][1])
        child_id = lines["child"][0]
        assert child_id != parent_id
        parent.kill()  # SIGKILL the parent; its child lives on
        parent.wait()
        assert os.path.exists(f"/proc/{child_pid}")

        with WirePeer(port).start() as peer:
            handler = LogServerHandler(f"127.0.0.1:{port}", spool_dir=str(spool))
            logger.addHandler(handler)
            logger.info(make_line(2, 0))
            assert peer.wait_for(count + 1, timeout=20), (
                "the dead parent's spool was not replayed: is its lock still held by the child?"
            )
            assert peer.messages(parent_id) == [make_line(0, seq) for seq in range(count)]
            # the living child delivers its own record, under its own id
            assert peer.wait_for(count + 2)
            assert peer.messages(child_id) == [make_line(1, 0)]
    finally:
        parent.kill()
        parent.wait()
        if child_pid:
            os.kill(child_pid, signal.SIGKILL)
