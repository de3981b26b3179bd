"""The server's parts in one process: settings, journal, queue, metrics text, peer checks."""

from __future__ import annotations

import asyncio
import logging
import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from safe_rotating._net.address import is_loopback
from safe_rotating.server.app import Server
from safe_rotating.server.config import ConfigError
from safe_rotating.server.connections import LogConnection
from safe_rotating.server.context import Refused
from safe_rotating.server.metrics import Stats, render
from safe_rotating.server.settings import build, parse_address
from safe_rotating.server.state import Journal
from safe_rotating.server.workqueue import Work, WorkQueue


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9020", "127.0.0.1:9020"),
        ("[::1]:9020", "[::1]:9020"),
        ("localhost:1", "localhost:1"),
        ("unix:/run/x.sock", "unix:/run/x.sock"),
    ],
)
def test_addresses(text: str, expected: str) -> None:
    assert str(parse_address(text)) == expected


@pytest.mark.parametrize("text", ["9020", "host:", "host:70000", "unix:", "a b:1"])
def test_bad_addresses(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_address(text)


def test_udp_cannot_be_unix() -> None:
    with pytest.raises(ConfigError, match="Unix socket is not possible"):
        parse_address("unix:/x", unix=False)


def test_settings_are_checked(tmp_path: Path) -> None:
    log_file = str(tmp_path / "app.log")
    config = build({"file": log_file, "max_bytes": "1KiB", "unix_mode": "640"})
    assert config.max_bytes == 1024
    assert config.unix_mode == 0o640
    assert [str(a) for a in config.listen] == ["127.0.0.1:9020"]
    assert config.journal_path == str(tmp_path / ".app.log.journal")
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "no output file"),
        ({"file": str(tmp_path / "missing" / "a.log")}, "does not exist"),
        ({"file": log_file, "max_bytes": "lots"}, "not a size"),
        ({"file": log_file, "backup_count": -1}, "whole number"),
        ({"file": log_file, "read_timeout": 0}, "more than 0"),
        ({"file": log_file, "format": "%(message)"}, "format"),
        ({"file": log_file, "token": "a", "token_file": "b"}, "either"),
        ({"file": log_file, "tls_key": __file__}, "needs tls_cert"),
        ({"file": log_file, "route": ["nodelimiter"]}, "PREFIX=FILE"),
        ({"file": log_file, "route": ["a=x.log", "a=y.log"]}, "twice"),
        ({"file": log_file, "allow_remote_pickle": "yes"}, "true or false"),
        ({"file": log_file, "bogus": 1}, "unknown"),
        ({"file": log_file, "when": "fortnight"}, "when: when='fortnight' is not one of"),
        ({"file": log_file, "when": "h", "interval": 0}, "interval"),
    ]
    for bad, message in cases:
        with pytest.raises(ConfigError, match=message):
            build(bad)


def test_described_settings_read_back(tmp_path: Path) -> None:
    from safe_rotating.server.settings import load_toml

    log_file = str(tmp_path / "app.log")
    config = build(
        {
            "file": log_file,
            "route": ["a=a.log"],
            "token": "secret",
            "listen": ["unix:/x.sock"],
            "when": "midnight",
            "interval": 2,
            "utc": True,
        }
    )
    assert config.when == "MIDNIGHT"
    schedule = config.schedule()
    assert schedule is not None
    assert (schedule.when, schedule.utc) == ("MIDNIGHT", True)
    text = config.describe()
    assert "secret" not in text
    saved = tmp_path / "saved.toml"
    saved.write_text(text)
    again = build({**load_toml(str(saved)), "token": "secret"})
    assert again == config


def test_route_checks(tmp_path: Path) -> None:
    log_file = str(tmp_path / "logs" / "app.log")
    (tmp_path / "logs" / "deeper").mkdir(parents=True)
    (tmp_path / "logs" / "escape").symlink_to(tmp_path)
    ok = build({"file": log_file, "route": {"a": "a.log", "a.b": "deeper/b.log"}}).routes
    assert ok == (
        ("a.b", str(tmp_path / "logs" / "deeper" / "b.log")),
        ("a", str(tmp_path / "logs" / "a.log")),
    )
    for target in ("../x.log", str(tmp_path / "x.log"), "escape/x.log", ".", "nodir/x.log"):
        with pytest.raises(ConfigError):
            build({"file": log_file, "route": {"a": target}})


def test_journal_keeps_the_newest_and_skips_torn_lines(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    path.write_bytes(b"aaa 3 1900000000\naaa 5 1900000000\nbbb 2 1900000000\nccc 9 19")
    journal = Journal(str(path))
    journal.open()
    assert (journal.last_seq("aaa"), journal.last_seq("bbb"), journal.last_seq("ccc")) == (5, 2, 0)
    assert len(path.read_text().splitlines()) == 2  # compacted at start-up
    journal.record([("ccc", 1), ("aaa", 6)])
    journal.close()
    again = Journal(str(path))
    again.open()
    assert (again.last_seq("aaa"), again.last_seq("ccc")) == (6, 1)
    again.close()


def test_journal_is_compacted_when_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safe_rotating.server import state

    monkeypatch.setattr(state, "_COMPACT_AT", 4096)
    path = tmp_path / "journal"
    journal = Journal(str(path))
    journal.open()
    inode = path.stat().st_ino
    for seq in range(1, 400):
        journal.record([("a" * 32, seq), ("b" * 32, seq)])
    assert path.stat().st_size < 8192  # rewritten, not grown to 400 x 2 lines
    assert path.stat().st_ino != inode  # by a rename of a new file
    journal.close()
    again = Journal(str(path))
    again.open()
    assert again.last_seq("a" * 32) == again.last_seq("b" * 32) == 399
    again.close()


def test_journal_forgets_clients_not_seen_for_long(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    path.write_text("old 4 1000\n")
    journal = Journal(str(path))
    journal.open()
    assert journal.last_seq("old") == 0
    journal.close()


def test_queue_is_bounded_by_records_and_bytes() -> None:
    async def scenario() -> list[str]:
        queue = WorkQueue(max_records=3, max_bytes=100)
        events: list[str] = []
        await queue.put(Work([{}, {}], size=10))
        assert queue.records == 2

        async def producer(name: str, work: Work) -> None:
            await queue.put(work)
            events.append(f"put {name}")

        blocked = asyncio.ensure_future(producer("2 records", Work([{}, {}], size=10)))
        await asyncio.sleep(0.01)
        assert not blocked.done()  # 2 + 2 > 3: waits
        taken = await queue.take(10)
        events.append(f"took {len(taken)}")
        await blocked
        big = asyncio.ensure_future(producer("big", Work([{}], size=1000)))
        await asyncio.sleep(0.01)
        assert not big.done()  # over the byte budget while something is queued
        await queue.take(10)
        await big  # alone, an oversized item still fits
        assert queue.put_nowait(Work([{}], 1)) is False
        await queue.take(10)
        assert queue.put_nowait(Work([{}], 1)) is True
        assert len(await queue.take(10)) == 1
        await queue.close()
        assert await queue.take(10) == []
        return events

    events = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert events == ["took 1", "put 2 records", "put big"]


def test_metrics_text() -> None:
    stats = Stats(received=5, written=4, dropped=Counter({"queue full": 1}))
    stats.refused['say "hi"\n'] = 2
    text = render(stats, queue_depth=7, connections=3)
    assert "# TYPE safe_rotating_server_records_received_total counter\n" in text
    assert "safe_rotating_server_records_received_total 5\n" in text
    assert 'safe_rotating_server_records_dropped_total{reason="queue_full"} 1\n' in text
    assert 'safe_rotating_server_refused_frames_total{reason="say_hi"} 2\n' in text
    assert (
        "# TYPE safe_rotating_server_queue_depth gauge\nsafe_rotating_server_queue_depth 7" in text
    )
    assert "safe_rotating_server_connections_open 3\n" in text


@pytest.mark.parametrize(
    ("peer", "local"),
    [
        (("127.0.0.1", 5), True),
        (("127.8.9.1", 5), True),
        (("::1", 5, 0, 0), True),
        (("::ffff:127.0.0.1", 5, 0, 0), True),
        (("10.1.2.3", 5), False),
        (("2001:db8::1", 5, 0, 0), False),
        ("", True),
        ("/run/x.sock", True),
    ],
)
def test_loopback(peer: Any, local: bool) -> None:
    assert is_loopback(peer) is local


class FakeWriter:
    def __init__(self, peer: Any) -> None:
        self.peer = peer

    def get_extra_info(self, key: str) -> Any:
        return self.peer if key == "peername" else None


def test_pickles_from_remote_peers_are_refused(tmp_path: Path) -> None:
    config = build({"file": str(tmp_path / "app.log")})
    server = Server(config)
    remote = LogConnection(server, None, FakeWriter(("203.0.113.5", 4000)))  # type: ignore[arg-type]
    with pytest.raises(Refused) as caught:
        remote._choose_dialect(0x7D)
    assert caught.value.reason == "remote pickle"
    assert remote._choose_dialect(0x7B) == "native"
    local = LogConnection(server, None, FakeWriter(("127.0.0.1", 4000)))  # type: ignore[arg-type]
    assert local._choose_dialect(0x80) == "pickle"
    allowed = Server(build({"file": str(tmp_path / "app.log"), "allow_remote_pickle": True}))
    opened = LogConnection(allowed, None, FakeWriter(("203.0.113.5", 4000)))  # type: ignore[arg-type]
    assert opened._choose_dialect(0x80) == "pickle"
    # The same rule for datagrams.
    payload = pickle.dumps({"msg": "x"}, 1)
    datagram = len(payload).to_bytes(4, "big") + payload
    server._pickle_datagram(datagram, ("203.0.113.5", 4000))
    assert server.stats.refused["remote pickle"] == 1
    assert server.stats.received == 0


def test_refusal_floods_are_logged_in_a_few_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = Server(build({"file": str(tmp_path / "app.log")}), logging.getLogger("tests.note"))
    with caplog.at_level(logging.WARNING, logger="tests.note"):
        for n in range(100):
            server.note("read timeout", f"refused connection {n}")
        server.note("frame too large", "another reason is logged on its own")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [f"refused connection {n}" for n in range(5)] + [
        "another reason is logged on its own"
    ]
    server._noted["read timeout"][0] -= 60  # the window has passed
    with caplog.at_level(logging.WARNING, logger="tests.note"):
        server.note("read timeout", "refused connection 100")
    assert "95 more refusal(s) for 'read timeout' were not logged" in caplog.text
    assert caplog.records[-1].getMessage() == "refused connection 100"


def test_read_deadline_without_a_task_per_frame() -> None:
    class Bare(LogConnection):
        def __init__(self) -> None:
            pass

    async def scenario() -> None:
        connection = Bare()
        loop = asyncio.get_running_loop()
        ready = asyncio.StreamReader()
        ready.feed_data(b"abcdef")
        assert await connection.before(loop.time() - 1, ready.readexactly(3)) == b"abc"
        silent = asyncio.StreamReader()
        with pytest.raises(asyncio.TimeoutError):
            await connection.before(loop.time() + 0.05, silent.readexactly(3))
        task = asyncio.current_task()
        assert task is not None
        assert getattr(task, "cancelling", lambda: 0)() == 0  # still cancellable as usual
        waiter = asyncio.ensure_future(connection.before(loop.time() + 60, silent.readexactly(1)))
        await asyncio.sleep(0)
        waiter.cancel()  # a shutdown is a cancellation, not a timeout
        with pytest.raises(asyncio.CancelledError):
            await waiter

    asyncio.run(scenario())


def test_datagrams_that_find_the_queue_full_are_dropped_and_counted(tmp_path: Path) -> None:
    server = Server(build({"file": str(tmp_path / "app.log"), "queue_size": 1}))
    payload = pickle.dumps({"msg": "x", "name": "n"}, 1)
    datagram = len(payload).to_bytes(4, "big") + payload
    for _ in range(3):
        server._pickle_datagram(datagram, ("127.0.0.1", 4000))
    assert server.stats.received == 3
    assert server.queue.records == 1
    assert server.stats.dropped["queue full"] == 2
    server._syslog_datagram(b"<13>one more", ("127.0.0.1", 4000))
    assert server.stats.dropped["queue full"] == 3


def test_a_round_takes_at_most_one_batch_of_each_client() -> None:
    """The journal is written once a round: one batch per client a round keeps what a crash
    between the write and the journal can repeat to one batch per client."""

    async def scenario() -> list[list[tuple[str | None, int]]]:
        queue = WorkQueue(max_records=100)
        for client, seq in [("a", 1), ("b", 1), (None, 0), ("a", 2), ("b", 2), ("a", 3)]:
            await queue.put(Work([{}], size=1, client=client, seq=seq))
        rounds = []
        while queue.records:
            rounds.append([(work.client, work.seq) for work in await queue.take(100)])
        return rounds

    rounds = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert rounds == [[("a", 1), ("b", 1), (None, 0)], [("a", 2), ("b", 2)], [("a", 3)]]


def _records(count: int, source: object | None, size: int | None = None, **fields: Any) -> Work:
    """``count`` records from ``source``, of ``size`` bytes (one a record unless given)."""
    return Work(
        [{} for _ in range(count)], size=count if size is None else size, source=source, **fields
    )


def test_sources_are_served_in_turns() -> None:
    """A round takes one item of each source before a second of any: a light source's batch
    is in the first round, not behind everything a flooder queued before it."""

    async def scenario() -> list[list[str]]:
        queue = WorkQueue(max_records=1000)
        flooder, light, other = object(), object(), object()
        names = {flooder: "f", light: "l", other: "o"}
        for _ in range(5):
            await queue.put(_records(10, flooder))
        await queue.put(_records(1, light))
        await queue.put(_records(2, other))
        await queue.put(_records(1, light))
        rounds = []
        while queue.records:
            works = await queue.take(25)
            rounds.append([f"{names[w.source]}{w.count}" for w in works])
        assert queue.bytes == 0
        return rounds

    rounds = asyncio.run(asyncio.wait_for(scenario(), 10))
    # One queue in order of arrival would have taken f10 f10, then f10 f10, then f10 l1 o2 l1.
    assert rounds == [["f10", "l1", "o2", "f10", "l1"], ["f10", "f10"], ["f10"]]


def test_a_round_takes_one_batch_of_a_client_whatever_its_connection() -> None:
    """A client that reconnected may have batches queued by both connections: still one a
    round, and each connection's in the order they came."""

    async def scenario() -> list[list[tuple[str | None, int]]]:
        queue = WorkQueue(max_records=100)
        old, new, stock = object(), object(), object()
        for seq in (4, 5):
            await queue.put(_records(1, old, client="a", seq=seq))
        for seq in (4, 5, 6):
            await queue.put(_records(1, new, client="a", seq=seq))
        await queue.put(_records(1, stock))
        await queue.put(_records(1, stock))
        rounds = []
        while queue.records:
            rounds.append([(w.client, w.seq) for w in await queue.take(100)])
        return rounds

    rounds = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert rounds == [
        [("a", 4), (None, 0), (None, 0)],
        [("a", 5)],
        [("a", 4)],  # the writer finds it written before (the journal's sequence numbers)
        [("a", 5)],
        [("a", 6)],
    ]


def test_a_source_over_its_share_waits_while_a_light_source_gets_in() -> None:
    async def scenario() -> None:
        queue = WorkQueue(max_records=100, max_bytes=10_000)
        flooder, light = object(), object()
        for _ in range(10):
            await queue.put(_records(10, flooder))
        assert queue.records == 100
        blocked = asyncio.ensure_future(queue.put(_records(10, flooder)))
        await asyncio.sleep(0.01)
        assert not blocked.done()  # the queue is full
        # A source with nothing queued gets in at once, past the bound (one item each).
        await asyncio.wait_for(queue.put(_records(1, light)), 1)
        assert queue.held_by(light) == (1, 1)
        assert queue.records == 101
        await queue.take(30)  # f10 l1 f10: the light source's batch in the first round
        assert queue.held_by(flooder) == (80, 80)
        assert queue.over_share(flooder) is False  # alone again: its share is the whole queue
        await asyncio.sleep(0)
        assert blocked.done()  # 80 + 10 <= 100
        # Two sources hold work: the flooder's share is half the queue, and it holds more.
        await queue.put(_records(1, light))
        await queue.put(_records(1, light))
        assert queue.over_share(flooder) is True
        again = asyncio.ensure_future(queue.put(_records(10, flooder)))
        share = asyncio.ensure_future(queue.wait_share(flooder))
        for held in (80, 70):
            await queue.take(12)  # f10 l1
            await asyncio.sleep(0.01)
            assert queue.held_by(flooder)[0] == held
            assert queue.records + 10 <= 100  # room in the queue, but not for the flooder
            assert not again.done()
            assert not share.done()
            await asyncio.wait_for(queue.put(_records(1, light)), 1)  # the light source's goes in
        await queue.take(12)  # f10 l1: the flooder still holds 60, over its 50
        assert queue.held_by(light)[0] == 1
        assert not again.done()
        await queue.take(12)  # f10 l1: the light source has nothing queued, the flooder is alone
        await asyncio.wait_for(again, 1)
        await asyncio.wait_for(share, 1)
        assert queue.held_by(flooder) == (60, 60)

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_first_items_past_the_bound_stop_at_twice_the_bound() -> None:
    """Each source may put its first item past the bound, but the queue never holds more than
    twice its records and bytes: thousands of connections cannot each add one."""

    async def scenario() -> None:
        queue = WorkQueue(max_records=10, max_bytes=1000)
        assert queue.put_nowait(_records(10, None, size=10))  # datagrams: one source, None
        sources = [object() for _ in range(20)]
        admitted = [queue.put_nowait(_records(1, source, size=10)) for source in sources]
        assert admitted == [True] * 10 + [False] * 10
        assert queue.records == 20
        late = asyncio.ensure_future(queue.put(_records(1, sources[10], size=10)))
        await asyncio.sleep(0.01)
        assert not late.done()
        assert queue.put_nowait(_records(1, None, size=10)) is False  # holds its 10 already
        assert queue.bytes == 110
        assert queue.put_nowait(_records(0, object(), size=1891)) is False  # 2001 bytes
        assert queue.put_nowait(_records(0, object(), size=1890)) is True
        assert queue.put_nowait(_records(0, object(), size=1)) is False
        taken = await queue.take(100)
        assert len(taken) == 12
        assert (queue.records, queue.bytes) == (0, 0)
        await asyncio.wait_for(late, 1)

    asyncio.run(asyncio.wait_for(scenario(), 10))
