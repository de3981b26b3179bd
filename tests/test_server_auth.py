"""With a token, every input is authenticated: the token, or an explicit allow-list.

Syslog (TCP and UDP), ``--udp`` pickles and the stock ``SocketHandler``'s pickles cannot carry a
token. A server with a token therefore takes them only from peers that ``--allow-untokened``
names (a network, or a uid on a Unix socket); without such a list it refuses to start with those
listeners and says how to fix it. A host name a remote sender claims is shown with the address it
came from. Real servers; 127.0.0.2 is a second loopback address to send from.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from safe_rotating.server.config import ConfigError, untokened_gap
from safe_rotating.server.peers import shown_host
from safe_rotating.server.settings import build

from .logserver import LogServer, NativeClient, run_server, stock_frame
from .neighbour import SharedDir
from .servers import free_port

pytestmark = pytest.mark.multiprocess

ALLOWED = "127.0.0.2"  # named by --allow-untokened in these tests
OTHER = "127.0.0.1"


def _syslog(text: str) -> bytes:
    return f"<14>1 - web-9 myapp - - - {text}".encode()


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
    _send_udp(source, ports["udp"], stock_frame(f"{tag} udp-pickle"))
    _send_tcp(source, server.port, stock_frame(f"{tag} stock-pickle"))


def test_untokened_input_only_from_the_allow_list(guarded: Any) -> None:
    server, ports = guarded
    _send_all(server, ports, OTHER, "denied")
    server.wait_refused("untokened_peer", 3)  # syslog TCP and UDP, the pickle datagram
    server.wait_refused("pickle_without_token")
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
        server.wait_refused("untokened_peer")
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


# -- listeners an allow-list cannot name -------------------------------------------------------
def test_untokened_gap_says_which_listener_could_take_nothing() -> None:
    uid, network = 0, ipaddress.ip_network("10.0.0.0/8")
    # A Unix datagram carries no sender uid: no entry can ever name a sender.
    for allow in ((), (uid,), (network,), (uid, network)):
        gap = untokened_gap(allow, None, unix=True, datagram=True)
        assert gap is not None
        assert "Remove the token" in gap
    assert untokened_gap((uid,), None, unix=True, datagram=False) is None
    assert "names no uid" in str(untokened_gap((network,), None, unix=True, datagram=False))
    for datagram in (True, False):
        assert untokened_gap((network,), None, unix=False, datagram=datagram) is None
        gap = untokened_gap((uid,), None, unix=False, datagram=datagram)
        assert "names no network" in str(gap)
    # Syslog over TLS with required client certificates: the certificate names the sender.
    assert untokened_gap((uid,), "/etc/ca.pem", unix=False, datagram=False) is None
    assert untokened_gap((uid,), "/etc/ca.pem", unix=False, datagram=True) is not None


def test_an_allow_list_must_name_some_peer_of_each_listener(tmp_path: Path) -> None:
    log = str(tmp_path / "app.log")
    with pytest.raises(ConfigError, match=r"--syslog-udp 127\.0\.0\.1:5514 .* names no network"):
        build({"file": log, "token": "t", "syslog_udp": "127.0.0.1:5514",
               "allow_untokened": ["uid:0"]})  # fmt: skip
    sock = str(tmp_path / "syslog.sock")
    with pytest.raises(ConfigError, match="names no uid"):
        build({"file": log, "token": "t", "syslog_tcp": f"unix:{sock}",
               "allow_untokened": ["127.0.0.1"]})  # fmt: skip
    both = build(
        {"file": log, "token": "t", "syslog_tcp": f"unix:{sock}", "udp": "127.0.0.1:5515",
         "allow_untokened": ["127.0.0.1", "uid:0"]}
    )  # fmt: skip
    assert both.allow_untokened


ACTIVATE_UNIX_DATAGRAM = """
import os, socket, sys
datagram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
datagram.bind(sys.argv[1])
os.dup2(datagram.fileno(), 3)
os.set_inheritable(3, True)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="syslog")
os.execv(sys.executable, [sys.executable, "-m", "safe_rotating.server", *sys.argv[2:]])
"""


def test_a_token_with_an_activated_unix_datagram_socket_does_not_start(tmp_path: Path) -> None:
    # systemd hands over a Unix datagram socket; with a token, no sender could be named (a
    # datagram has no uid), so the server would refuse every record: it says so instead.
    command = [sys.executable, "-c", ACTIVATE_UNIX_DATAGRAM, str(tmp_path / "syslog.sock")]
    command += ["--file", str(tmp_path / "app.log"), "--token", "secret"]
    command += ["--allow-untokened", "uid:0"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail("the server started with a Unix datagram socket it can take nothing on")
    assert done.returncode == 1, done.stderr
    assert "cannot start: systemd fd 3 syslog takes records without the token" in done.stderr
    assert "Unix datagram socket does not tell which uid sent" in done.stderr
