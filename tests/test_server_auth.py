"""With a token, every input is authenticated: the token, or an explicit allow-list.

Syslog (TCP and UDP), ``--udp`` pickles and the stock ``SocketHandler``'s pickles cannot carry a
token. A server with a token therefore takes them only from peers that ``--allow-untokened``
names (a network, or a uid on a Unix socket); without such a list it refuses to start with those
listeners and says how to fix it. A host name a remote sender claims is shown with the address it
came from. Real servers; 127.0.0.2 is a second loopback address to send from.
"""

from __future__ import annotations

import contextlib
import pickle
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from safe_rotating.server.config import ConfigError, build
from safe_rotating.server.connections import shown_host

from .logserver import LogServer, NativeClient, run_server
from .neighbour import SharedDir
from .servers import free_port

pytestmark = pytest.mark.multiprocess

ALLOWED = "127.0.0.2"  # named by --allow-untokened in these tests
OTHER = "127.0.0.1"


def _syslog(text: str) -> bytes:
    return f"<14>1 - web-9 myapp - - - {text}".encode()


def _pickle_frame(text: str) -> bytes:
    payload = pickle.dumps({"name": "stock", "msg": text, "levelno": 20, "levelname": "INFO"}, 1)
    return struct.pack(">I", len(payload)) + payload


def _send_tcp(source: str, port: int, data: bytes) -> None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    with sock, contextlib.suppress(OSError):  # refused at once: reset, not connected, ...
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):  # until the server closes: it has read what it wanted
            pass


def _send_udp(source: str, port: int, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.sendto(data, ("127.0.0.1", port))


def test_a_token_with_untokened_listeners_needs_an_allow_list(tmp_path: Path) -> None:
    for listener in ("--syslog-udp", "--syslog-tcp", "--udp"):
        command = [sys.executable, "-m", "safe_rotating.server", "--file", str(tmp_path / "a.log")]
        command += ["--token", "secret", listener, f"127.0.0.1:{free_port()}", "--check-config"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert done.returncode == 2, (listener, done.stdout, done.stderr)
        assert f"{listener} 127.0.0.1:" in done.stderr
        assert "cannot carry it" in done.stderr
        assert "--allow-untokened" in done.stderr


def test_allow_list_settings_are_checked(tmp_path: Path) -> None:
    log = str(tmp_path / "app.log")
    with pytest.raises(ConfigError, match="allow_untokened needs a token"):
        build({"file": log, "allow_untokened": ["127.0.0.1"]})
    with pytest.raises(ConfigError, match="expected an address or network"):
        build({"file": log, "token": "t", "allow_untokened": ["localhost"]})
    with pytest.raises(ConfigError, match="no user"):
        build({"file": log, "token": "t", "allow_untokened": ["uid:no-such-user-here"]})
    config = build(
        {"file": log, "token": "t", "syslog_udp": "127.0.0.1:5514",
         "allow_untokened": ["10.1.0.0/16", "::1", "uid:0", "uid:65534"]}
    )  # fmt: skip
    assert config.allows_untokened(("10.1.2.3", 5), None)
    assert config.allows_untokened(("::ffff:10.1.2.3", 5, 0, 0), None)  # a dual-stack listener
    assert config.allows_untokened(("::1", 5, 0, 0), None)
    assert not config.allows_untokened(("10.2.0.1", 5), None)
    assert not config.allows_untokened(("127.0.0.1", 5), None)  # loopback is not implied
    assert config.allows_untokened("", 65534)
    assert not config.allows_untokened("", 1000)
    assert not config.allows_untokened("", None)  # a Unix peer whose uid is unknown
    assert 'allow_untokened = ["10.1.0.0/16", "::1/128", "uid:0", "uid:65534"]' in (
        config.describe()
    )


@pytest.fixture
def guarded(tmp_path: Path) -> Any:
    ports = {name: free_port() for name in ("syslog_tcp", "syslog_udp", "udp")}
    args = ["--format", "%(name)s [%(host)s] %(message)s", "--token", "secret"]
    args += ["--allow-untokened", f"{ALLOWED}/32"]
    args += ["--syslog-tcp", f"127.0.0.1:{ports['syslog_tcp']}"]
    args += ["--syslog-udp", f"127.0.0.1:{ports['syslog_udp']}"]
    args += ["--udp", f"127.0.0.1:{ports['udp']}"]
    with run_server(tmp_path, *args) as server:
        yield server, ports


def _send_all(server: LogServer, ports: dict[str, int], source: str, tag: str) -> None:
    _send_tcp(source, ports["syslog_tcp"], _syslog(f"{tag} syslog-tcp") + b"\n")
    _send_udp(source, ports["syslog_udp"], _syslog(f"{tag} syslog-udp"))
    _send_udp(source, ports["udp"], _pickle_frame(f"{tag} udp-pickle"))
    _send_tcp(source, server.port, _pickle_frame(f"{tag} stock-pickle"))


def test_untokened_input_only_from_the_allow_list(guarded: Any) -> None:
    server, ports = guarded
    _send_all(server, ports, OTHER, "denied")
    server.wait_refused("untokened peer", 3)  # syslog TCP and UDP, the pickle datagram
    server.wait_refused("pickle without token")
    _send_all(server, ports, ALLOWED, "allowed")
    for what in ("syslog-tcp", "syslog-udp", "udp-pickle", "stock-pickle"):
        server.assert_lands(f"allowed {what}")
    client = NativeClient((OTHER, server.port))  # the token still works from anywhere
    client.hello("t" * 32, token="secret")
    client.batch(1, ["with the token"])
    client.acked(1)
    server.assert_lands("with the token")
    text = server.text()
    assert "denied" not in text, text
    assert "myapp [web-9] allowed syslog-udp" in text  # a local sender keeps its name
    assert "not name" in server.stderr  # the refusal says why


def _send_syslog_unix(path: str, text: str) -> bool:
    """As the neighbour: send one syslog line over a Unix stream socket; was it refused?"""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        try:
            s.sendall(_syslog(text) + b"\n")
            s.shutdown(socket.SHUT_WR)
            return s.recv(1) == b""
        except OSError:  # reset or not connected: refused at once
            return True


def test_unix_socket_allow_list_by_uid(tmp_path: Path, shared_dir: SharedDir) -> None:
    path = shared_dir.join("syslog.sock")
    args = ["--format", "%(message)s", "--token", "secret", "--allow-untokened", "uid:0"]
    args += ["--syslog-tcp", f"unix:{path}", "--unix-mode", "0666"]
    with run_server(tmp_path, *args) as server:
        assert shared_dir.run(_send_syslog_unix, path, "from uid 65534")
        server.wait_refused("untokened peer")
        assert "uid 65534" in server.stderr
        assert _send_syslog_unix(path, "from root")
        server.assert_lands("from root")
        assert "from uid 65534" not in server.text()


@pytest.mark.parametrize(
    ("claimed", "peer", "marked", "shown"),
    [
        ("web-3", ("203.0.113.5", 4000), True, "web-3@203.0.113.5"),
        ("203.0.113.5", ("203.0.113.5", 4000), True, "203.0.113.5"),
        ("web-3", ("2001:db8::7", 4000, 0, 0), True, "web-3@2001:db8::7"),
        ("web-3", ("127.0.0.1", 4000), True, "web-3"),  # on this machine either way
        ("web-3", "", True, "web-3"),  # a Unix socket
        ("web-3", ("203.0.113.5", 4000), False, "web-3"),  # no token: the network is trusted
    ],
)
def test_a_remote_claim_is_shown_with_its_address(
    claimed: str, peer: Any, marked: bool, shown: str
) -> None:
    assert shown_host(claimed, peer, "logs-1", marked) == shown
