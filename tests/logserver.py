"""Helpers for the tests that run ``python -m safe_rotating.server`` as a real subprocess."""

from __future__ import annotations

import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from safe_rotating._net.wire import FrameReader, decode, encode, frame
from safe_rotating.stress.logserver import server_command, start_log_server

from .servers import free_port

__all__ = [
    "LogServer",
    "NativeClient",
    "cpu_seconds",
    "eventually",
    "rss_bytes",
    "run_server",
    "server_command",
    "spools",
    "start_server",
]

ROOT = str(Path(__file__).resolve().parent.parent)


def eventually(check: Callable[[], Any], timeout: float = 2.0, what: str = "condition") -> Any:
    """``check()``'s first truthy result within ``timeout`` seconds, else an assertion error."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s (last: {result!r})")
        time.sleep(0.02)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stock_frame(msg: str) -> bytes:
    """One record as the standard library's ``SocketHandler`` frames it (pickle protocol 1)."""
    record = {"name": "stock", "msg": msg, "levelno": 20, "levelname": "INFO"}
    return frame(pickle.dumps(record, 1))


def connect(server: LogServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def closed_by_server(sock: socket.socket, timeout: float = 5.0) -> bool:
    """Did the server close ``sock`` within ``timeout`` (rather than keep it open)?"""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    except TimeoutError:
        return False
    return True


class LogServer:
    """A running server: its process, where it writes, and its metrics."""

    def __init__(
        self, process: subprocess.Popen[bytes], directory: Path, port: int, metrics: int, err: Path
    ) -> None:
        self.process = process
        self.directory = directory
        self.port = port
        self.metrics_port = metrics
        self.err_path = err
        self.file = directory / "app.log"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def text(self, name: str = "app.log") -> str:
        path = self.directory / name
        return path.read_text(errors="replace") if path.exists() else ""

    def lines(self, name: str = "app.log") -> list[str]:
        return self.text(name).splitlines()

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics, keyed by name and labels without the common prefix."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode()
        samples: dict[str, float] = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name.removeprefix("safe_rotating_server_")] = float(value)
        return samples

    def refused(self, reason: str) -> float:
        """``refused_frames_total`` for ``reason``, its label value (snake_case)."""
        return self.metrics().get(f'refused_frames_total{{reason="{reason}"}}', 0.0)

    def wait_refused(self, reason: str, count: int = 1, timeout: float = 5.0) -> None:
        eventually(lambda: self.refused(reason) >= count, timeout, f"{count} refusal(s) {reason!r}")

    def send_stock(self, message: str, name: str = "tests.good") -> None:
        """One record through the standard library's SocketHandler."""
        import logging
        import logging.handlers

        handler = logging.handlers.SocketHandler("127.0.0.1", self.port)
        try:
            record = logging.makeLogRecord(
                {"name": name, "msg": message, "levelno": 20, "levelname": "INFO"}
            )
            handler.emit(record)
        finally:
            handler.close()

    def assert_lands(self, message: str, timeout: float = 2.0, name: str = "app.log") -> None:
        eventually(lambda: message in self.text(name), timeout, f"{message!r} in {name}")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def start_server(
    directory: Path,
    *args: str,
    listen: bool = True,
    env: dict[str, str] | None = None,
    err_dir: Path | None = None,
    port: int | None = None,
) -> LogServer:
    port = port or free_port()
    metrics = free_port()
    err = (err_dir or directory) / f"server-{port}-{metrics}.err"
    command = server_command(
        "--file", str(directory / "app.log"), "--metrics", f"127.0.0.1:{metrics}", *args
    )
    if listen:
        command += ["--listen", f"127.0.0.1:{port}"]

    def stderr() -> str:
        return err.read_text(errors="replace")

    with open(err, "wb") as out:
        process = start_log_server(
            command,
            lambda: "listening on" in stderr(),
            timeout=20,
            output=stderr,
            poll=0.02,
            stderr=out,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    return LogServer(process, directory, port, metrics, err)


@contextmanager
def run_server(directory: Path, *args: str, **kwargs: Any) -> Iterator[LogServer]:
    server = start_server(directory, *args, **kwargs)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
            try:
                server.process.wait(15)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()


class NativeClient:
    """The native protocol, written out by hand over a blocking socket."""

    def __init__(self, address: tuple[str, int] | str, timeout: float = 5.0) -> None:
        if isinstance(address, str):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(address)
        else:
            self.sock = socket.create_connection(address, timeout=timeout)
        self.frames = FrameReader(1 << 24)
        self.acked_seq = 0  # the highest batch the server acknowledged
        self.pending: list[bytes] = []

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(encode(message))

    def send_raw(self, payload: bytes) -> None:
        self.sock.sendall(frame(payload))

    def receive(self) -> dict[str, Any] | None:
        """The next message, or ``None`` when the server closed the connection."""
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.frames.feed(data)
            self.pending.extend(self.frames.frames())
        return decode(self.pending.pop(0))

    def hello(self, client: str, **fields: Any) -> dict[str, Any]:
        self.send({"type": "hello", "client": client, "host": "web-3", "pid": 42, **fields})
        welcome = self.receive()
        assert welcome is not None, "the server closed instead of welcoming"
        return welcome

    def batch(self, seq: int, messages: list[str], name: str = "tests.native") -> None:
        now = time.time()
        records = [
            {
                "created": now,
                "name": name,
                "levelno": 20,
                "levelname": "INFO",
                "msg": text,
                "process": 4242,
            }
            for text in messages
        ]
        self.send({"type": "batch", "seq": seq, "records": records})

    def acked(self, seq: int) -> None:
        """Wait for the ack of batch ``seq``: an ack of it or of a later batch (one ack covers
        every earlier batch of the connection, and the server sends one per writer pass)."""
        while self.acked_seq < seq:  # an ack of an earlier batch (a resent one) is skipped
            message = self.receive()
            assert message is not None
            assert message == {"v": 1, "type": "ack", "seq": message.get("seq")}, message
            self.acked_seq = max(self.acked_seq, message["seq"])

    def closed(self) -> bool:
        """Did the server close the connection (after any messages still pending)?"""
        try:
            while True:
                if self.receive() is None:
                    return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


def pattern_count(text: str, pattern: str) -> int:
    return len(re.findall(pattern, text))


def spools(*args: str) -> subprocess.CompletedProcess[str]:
    """``safe-rotating-spools ARGS`` run to its end (within a minute), output as text."""
    return subprocess.run(
        [sys.executable, "-m", "safe_rotating.spools", *args],
        env={**os.environ, "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
