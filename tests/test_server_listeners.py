"""Syslog and UDP listeners, metrics, TLS, systemd socket activation and a full disk."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from safe_rotating._net.wire import FrameReader, decode, encode

from .exposition import parse
from .logserver import NativeClient, eventually, run_server, server_command, start_server
from .servers import free_port
from .support import tmpfs

pytestmark = pytest.mark.multiprocess


def test_syslog_over_udp_and_tcp(tmp_path: Path) -> None:
    udp, tcp = free_port(), free_port()
    args = ["--syslog-udp", f"127.0.0.1:{udp}", "--syslog-tcp", f"127.0.0.1:{tcp}"]
    with run_server(tmp_path, *args) as server:
        host = socket.gethostname()
        over_udp = logging.handlers.SysLogHandler(("127.0.0.1", udp))
        over_tcp = logging.handlers.SysLogHandler(("127.0.0.1", tcp), socktype=socket.SOCK_STREAM)
        try:
            for handler in (over_udp, over_tcp):
                handler.ident = "myapp: "
                handler.emit(logging.makeLogRecord({"msg": "via " + handler.socktype.name}))
            over_tcp.emit(
                logging.makeLogRecord({"msg": "line one\nline two", "levelname": "ERROR"})
            )
        finally:
            over_udp.close()
            over_tcp.close()
        server.assert_lands("line two")
        server.assert_lands("via SOCK_DGRAM")
        text = server.text()
        assert f"WARNING myapp [{host}/myapp:-] via SOCK_DGRAM" in text
        assert f"WARNING myapp [{host}/myapp:-] via SOCK_STREAM" in text
        assert f"ERROR myapp [{host}/myapp:-] line one\n\tline two\n" in text  # marked


def test_bad_syslog_connections_are_refused(tmp_path: Path) -> None:
    port = free_port()
    args = ["--syslog-tcp", f"127.0.0.1:{port}", "--read-timeout", "1", "--max-frame", "4KiB"]
    with run_server(tmp_path, *args) as server:
        huge = socket.create_connection(("127.0.0.1", port), timeout=5)
        huge.sendall(b"999999 <13>")
        trickle = socket.create_connection(("127.0.0.1", port), timeout=5)
        trickle.sendall(b"<13>never ends")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and server.refused("read_timeout") < 1:
            with contextlib.suppress(OSError):
                trickle.sendall(b".")  # bytes keep coming, the message never ends
            time.sleep(0.1)
        server.wait_refused("read_timeout", timeout=1)
        server.wait_refused("message_too_large")
        server.send_stock("still serving")
        server.assert_lands("still serving")
        huge.close()
        trickle.close()


@pytest.mark.parametrize("transport", ["--tcp", "--udp"])
def test_util_linux_logger(tmp_path: Path, transport: str) -> None:
    port = free_port()
    flag = "--syslog-tcp" if transport == "--tcp" else "--syslog-udp"
    with run_server(tmp_path, flag, f"127.0.0.1:{port}") as server:
        subprocess.run(
            [
                *("logger", transport, "-n", "127.0.0.1", "-P", str(port), "--octet-count"),
                *("-t", "cronjob", "-p", "user.err", "--id=4321", "nightly run failed"),
            ],
            check=True,
            timeout=10,
        )
        server.assert_lands("nightly run failed")
        assert "ERROR cronjob [" in server.text()
        assert "/cronjob:4321] nightly run failed" in server.text()


def test_metrics_and_health(tmp_path: Path) -> None:
    with run_server(tmp_path) as server:
        base = f"http://127.0.0.1:{server.metrics_port}"
        with urllib.request.urlopen(base + "/healthz", timeout=5) as response:
            assert response.read() == b"ok\n"
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(base + "/nothing", timeout=5)
        assert caught.value.code == 404
        server.send_stock("counted")
        server.assert_lands("counted")
        with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            body = response.read().decode()
        for name in (
            "records_received_total 1",
            "records_written_total 1",
            "duplicate_batches_suppressed_total 0",
            "write_errors_total 0",
            "rotations_total 0",
            "queue_depth 0",
            "connections_open ",
            "written_bytes_total ",
        ):
            assert f"\nsafe_rotating_server_{name}" in body, name
        assert "# TYPE safe_rotating_server_records_dropped_total counter" in body
        assert "# TYPE safe_rotating_server_refused_frames_total counter" in body
        families = parse(body)  # the live page, by the conventions
        assert "safe_rotating_server_lock_wait_seconds" in families
        assert "process_open_fds" in families


def test_rotations_are_counted(tmp_path: Path) -> None:
    args = ["--format", "%(message)s", "--max-bytes", "1000", "--backup-count", "3"]
    with run_server(tmp_path, *args) as server:
        for i in range(30):
            server.send_stock(f"{i:03d} " + "r" * 95)
        eventually(
            lambda: server.metrics()["records_written_total"] == 30, what="30 records written"
        )
        assert server.metrics()["rotations_total"] >= 2


# -- TLS ---------------------------------------------------------------------------------------
PKI = Path(__file__).parent / "pki"  # a test CA, a server and a client certificate


def tls_client(port: int, pki: Path, with_certificate: bool) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if with_certificate:
        context.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def anonymous_hello(port: int, pki: Path) -> None:
    anonymous = tls_client(port, pki, with_certificate=False)
    anonymous.sendall(encode({"type": "hello", "client": "a" * 32}))
    if not anonymous.recv(4096):
        raise ConnectionError("closed")


def test_tls_with_client_certificates(tmp_path: Path) -> None:
    pki = PKI
    args = ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")]
    args += ["--tls-client-ca", str(pki / "ca.pem"), "--format", "%(message)s"]
    with run_server(tmp_path, *args) as server:
        sock = tls_client(server.port, pki, with_certificate=True)
        reader = FrameReader()
        sock.sendall(encode({"type": "hello", "client": "e" * 32}))
        sock.sendall(encode({"type": "batch", "seq": 1, "records": [{"msg": "encrypted"}]}))
        replies: list[dict[str, object]] = []
        while len(replies) < 2:
            reader.feed(sock.recv(4096))
            replies.extend(decode(payload) for payload in reader.frames())
        assert [r["type"] for r in replies] == ["welcome", "ack"]
        sock.close()
        assert server.lines() == ["encrypted"]
        # Without a client certificate the handshake fails and nothing is written.
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            anonymous_hello(server.port, pki)
        # Plain text on the TLS port is not a frame.
        plain = NativeClient(("127.0.0.1", server.port))
        plain.send({"type": "hello", "client": "p" * 32})
        assert plain.closed()
        assert server.process.poll() is None


# -- systemd socket activation -----------------------------------------------------------------
ACTIVATE = """
import os, socket, sys
stream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
stream.bind(("127.0.0.1", int(sys.argv[1])))
stream.listen(16)
datagram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
datagram.bind(("127.0.0.1", int(sys.argv[2])))
high = [os.dup(stream.fileno()), os.dup(datagram.fileno())]
for fd, target in zip(high, (3, 4)):
    os.dup2(fd, target)
    os.set_inheritable(target, True)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="2", LISTEN_FDNAMES="log:syslog")
os.execv(sys.executable, [sys.executable, "-m", "safe_rotating.server", *sys.argv[3:]])
"""


def test_systemd_socket_activation(tmp_path: Path) -> None:
    tcp, udp = free_port(), free_port()
    err = tmp_path / "server.err"
    command = [sys.executable, "-c", ACTIVATE, str(tcp), str(udp)]
    command += ["--file", str(tmp_path / "app.log"), "--format", "%(name)s %(message)s"]
    with open(err, "wb") as stderr:
        process = subprocess.Popen(command, stderr=stderr)
    try:
        eventually(lambda: "listening on" in err.read_text(), 20, "start-up")
        assert "systemd fd 3 log" in err.read_text()
        assert "syslog-udp systemd fd 4 syslog" in err.read_text()
        handler = logging.handlers.SocketHandler("127.0.0.1", tcp)
        handler.emit(logging.makeLogRecord({"name": "activated", "msg": "over fd 3"}))
        handler.close()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"<14>1 - - sysapp 7 - - over fd 4", ("127.0.0.1", udp))
        path = tmp_path / "app.log"
        eventually(lambda: path.exists() and path.read_text().count("over fd") == 2, 2.0)
        assert "activated over fd 3" in path.read_text()
        assert "sysapp over fd 4" in path.read_text()
    finally:
        process.terminate()
        assert process.wait(15) == 0


# -- a full disk -------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, mounted for this test (needs root)."""
    with tmpfs(tmp_path / "disk", "256k") as mount:
        yield mount


def fill(directory: Path) -> Path:
    """Use every free byte of ``directory``'s file system; return the filler file."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)
    return filler


def test_full_disk_holds_back_then_resumes(small_disk: Path) -> None:
    server = start_server(small_disk, "--format", "%(message)s", err_dir=small_disk.parent)
    try:
        client = NativeClient(("127.0.0.1", server.port))
        client.hello("z" * 32)
        filler = fill(small_disk)
        client.batch(1, ["held while the disk is full"])
        server.send_stock("a stock record, held too")
        eventually(lambda: server.metrics()["write_errors_total"] >= 3, 5, "retries")
        assert server.process.poll() is None
        client.sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            client.receive()  # no ack for a batch that is not written
        assert server.stderr.count("Holding the records") == 1  # reported once per episode
        filler.unlink()
        client.sock.settimeout(5)
        client.acked(1)
        server.assert_lands("a stock record, held too")
        assert server.lines() == ["held while the disk is full", "a stock record, held too"]
        eventually(lambda: "writing works again" in server.stderr, 2, "the recovery report")
        assert "none lost" in server.stderr
        client.batch(2, ["after"])
        client.acked(2)
        client.close()
        assert server.stop() == 0
        assert server.stderr.count("Holding the records") == 1
        assert "written 3" in server.stderr
    finally:
        with contextlib.suppress(Exception):
            server.process.kill()
            server.process.wait(10)


def test_stop_while_the_disk_stays_full_gives_up_and_counts(small_disk: Path) -> None:
    server = start_server(
        small_disk, "--format", "%(message)s", "--drain-timeout", "1", err_dir=small_disk.parent
    )
    try:
        fill(small_disk)
        server.send_stock("never written")
        eventually(lambda: server.metrics()["write_errors_total"] >= 1, 5, "a failed write")
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 10
        assert "gave up writing 1 record(s) at shutdown" in server.stderr
        assert "dropped 1" in server.stderr
    finally:
        with contextlib.suppress(Exception):
            server.process.kill()
            server.process.wait(10)


def test_server_command_runs_as_a_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "safe-rotating-server"
    if not script.exists():
        pytest.skip("the safe-rotating-server script is not installed (pip install -e .)")
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    assert done.stdout.startswith("safe-rotating-server")
    assert server_command()[-1] == "safe_rotating.server"
