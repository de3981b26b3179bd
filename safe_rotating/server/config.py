"""The server's settings: one immutable object, what it means, and how it is shown.

:mod:`safe_rotating.server.settings` builds it from flags and a TOML file, checking everything a
person can get wrong before anything is opened; here are its fields and defaults, the questions
the server asks it (may this peer send without the token?), and :meth:`ServerConfig.describe`,
the effective settings as TOML that ``--config`` reads back.
"""

from __future__ import annotations

import ipaddress
import logging
import logging.handlers
import os
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from safe_rotating._engine.schedule import Schedule
from safe_rotating._net.address import Address, peer_ip
from safe_rotating._net.wire import DEFAULT_MAX_FRAME

__all__ = [
    "DEFAULT_FORMAT",
    "DEFAULT_LISTEN",
    "LOG_LEVELS",
    "ConfigError",
    "ServerConfig",
    "Untokened",
    "facility_name",
    "untokened_gap",
    "untokened_name",
]

DEFAULT_LISTEN: Final = "127.0.0.1:9020"  # the standard library's DEFAULT_TCP_LOGGING_PORT
DEFAULT_FORMAT: Final = (
    "%(asctime)s %(levelname)s %(name)s [%(host)s/%(app)s:%(process)s] %(message)s"
)
DEFAULT_QUEUE_SIZE: Final = 10_000
DEFAULT_READ_TIMEOUT: Final = 30.0
DEFAULT_MAX_CONNECTIONS: Final = 4096
DEFAULT_UNIX_MODE: Final = 0o600
DEFAULT_DRAIN_TIMEOUT: Final = 5.0
DEFAULT_FORWARD_QUEUE: Final = 100_000
DEFAULT_HELLO_TIMEOUT: Final = 10.0  # seconds from accept to the first complete frame
DEFAULT_IDLE_TIMEOUT: Final = 300.0  # seconds a connection may wait with nothing under way
DEFAULT_MAX_PER_PEER: Final = 1024  # connections per remote address (IPv6: /64) or Unix uid
DEFAULT_FRAME_MEMORY: Final = 64 * 1024 * 1024  # bytes of unfinished frames, all connections
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")  # of the server's own messages
FACILITIES: Final = logging.handlers.SysLogHandler.facility_names  # "user" -> 1, "local0" -> 16


class ConfigError(ValueError):
    """A setting that cannot work; the message says which and why."""


# An ``allow_untokened`` entry: a network of peers (TCP, UDP) or a uid (Unix sockets).
Untokened: TypeAlias = "ipaddress.IPv4Network | ipaddress.IPv6Network | int"


def untokened_name(entry: Untokened) -> str:
    return f"uid:{entry}" if isinstance(entry, int) else str(entry)


@dataclass(frozen=True)
class ServerConfig:
    file: str
    listen: tuple[Address, ...] = ()
    udp: tuple[Address, ...] = ()
    syslog_tcp: tuple[Address, ...] = ()
    syslog_udp: tuple[Address, ...] = ()
    max_bytes: int = 0
    backup_count: int = 0
    compress: str | None = None
    max_age: float | None = None
    max_total_bytes: int | None = None
    when: str | None = None  # also rotate by time: the stdlib's S, M, H, D, MIDNIGHT, W0-W6
    interval: int = 1
    utc: bool = False
    format: str = DEFAULT_FORMAT
    escape_control_characters: bool = True  # see safe_rotating/_net/escape.py
    routes: tuple[tuple[str, str], ...] = ()  # (logger-name prefix, absolute path), longest first
    max_frame: int = DEFAULT_MAX_FRAME
    read_timeout: float = DEFAULT_READ_TIMEOUT
    queue_size: int = DEFAULT_QUEUE_SIZE
    token: str | None = field(default=None, repr=False)
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    allow_remote_pickle: bool = False
    unix_mode: int = DEFAULT_UNIX_MODE
    metrics: Address | None = None
    state_dir: str = ""
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    forward: tuple[Address, ...] = ()  # relays that get a copy of every record, as RFC 5424
    forward_tls: bool = False
    forward_ca: str | None = None
    forward_facility: int = 1  # user
    forward_queue: int = DEFAULT_FORWARD_QUEUE
    hello_timeout: float = DEFAULT_HELLO_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_connections_per_peer: int = DEFAULT_MAX_PER_PEER
    frame_memory: int = DEFAULT_FRAME_MEMORY
    # With a token: the peers that may still send without one (syslog, --udp, stock pickles).
    allow_untokened: tuple[Untokened, ...] = ()
    log_level: str = "INFO"  # the server's own messages on stderr, never the records it writes

    def schedule(self) -> Schedule | None:
        """The time schedule of ``when``/``interval``/``utc``, shared with file-mode handlers
        through the lock file; ``None`` without ``when``."""
        return Schedule.parse(self.when, self.interval, self.utc) if self.when else None

    @property
    def journal_path(self) -> str:
        return os.path.join(self.state_dir, "." + os.path.basename(self.file) + ".journal")

    def allows_untokened(self, peer: Any, uid: int | None) -> bool:
        """May ``peer`` (a ``getpeername()`` result or a datagram's source) send records without
        the token? Always without a token; with one, only an ``allow_untokened`` entry lets it:
        a network holding its address, or (on a Unix socket) its uid."""
        if self.token is None:
            return True
        if isinstance(peer, tuple) and peer:
            address = peer_ip(peer)
            if address is None:
                return False
            return any(
                not isinstance(entry, int) and address in entry for entry in self.allow_untokened
            )
        return uid is not None and uid in self.allow_untokened

    def warnings(self) -> list[str]:
        """Settings that are valid but probably not what was meant, each with what to change.

        ``--check-config`` prints them and the server logs them when it starts."""
        found = []
        if self.max_bytes > 0 and self.backup_count == 0:
            found.append(
                f"max_bytes is {self.max_bytes} but backup_count is 0, so the file is never "
                "rotated by size (as with the standard library's RotatingFileHandler) and grows "
                "without limit; add --backup-count N (backup_count = N in the configuration "
                "file) to rotate and keep N old files"
            )
        return found

    def describe(self) -> str:
        """The effective settings as TOML that ``--config`` reads back (never the token)."""

        def quote(value: Any) -> str:
            if isinstance(value, bool):
                return "true" if value else "false"
            if isinstance(value, int | float):
                return str(value)
            text = str(value).replace("\\", "\\\\").replace('"', '\\"')
            return f'"{text}"'

        def array(values: tuple[Address, ...]) -> str:
            return "[" + ", ".join(quote(v) for v in values) + "]"

        lines = [
            f"file = {quote(self.file)}",
            f"listen = {array(self.listen)}",
            f"udp = {array(self.udp)}",
            f"syslog_tcp = {array(self.syslog_tcp)}",
            f"syslog_udp = {array(self.syslog_udp)}",
            f"max_bytes = {self.max_bytes}",
            f"backup_count = {self.backup_count}",
            f"compress = {quote(self.compress or '')}",
            f"max_age = {self.max_age or 0}",
            f"max_total_bytes = {self.max_total_bytes or 0}",
            f"when = {quote(self.when or '')}",
            f"interval = {self.interval}",
            f"utc = {quote(self.utc)}",
            f"format = {quote(self.format)}",
            f"escape_control_characters = {quote(self.escape_control_characters)}",
            f"max_frame = {self.max_frame}",
            f"read_timeout = {self.read_timeout}",
            f"queue_size = {self.queue_size}",
            f"max_connections = {self.max_connections}",
            "# token: set, not shown" if self.token else "# token: none",
            f"tls_cert = {quote(self.tls_cert or '')}",
            f"tls_key = {quote(self.tls_key or '')}",
            f"tls_client_ca = {quote(self.tls_client_ca or '')}",
            f"allow_remote_pickle = {quote(self.allow_remote_pickle)}",
            f"unix_mode = 0o{self.unix_mode:03o}",
            f"metrics = {quote(self.metrics or '')}",
            f"state_dir = {quote(self.state_dir)}",
            f"drain_timeout = {self.drain_timeout}",
            f"forward = {array(self.forward)}",
            f"forward_tls = {quote(self.forward_tls)}",
            f"forward_ca = {quote(self.forward_ca or '')}",
            f"forward_facility = {quote(facility_name(self.forward_facility))}",
            f"forward_queue = {self.forward_queue}",
            f"hello_timeout = {self.hello_timeout}",
            f"idle_timeout = {self.idle_timeout}",
            f"max_connections_per_peer = {self.max_connections_per_peer}",
            f"frame_memory = {self.frame_memory}",
            "allow_untokened = ["
            + ", ".join(quote(untokened_name(e)) for e in self.allow_untokened)
            + "]",
            f"log_level = {quote(self.log_level)}",
            "",
            "[route]",
            *(f"{quote(prefix)} = {quote(path)}" for prefix, path in self.routes),
        ]
        return "\n".join(lines) + "\n"


def facility_name(facility: int) -> str | int:
    """The usual name of a syslog facility number (``1`` -> ``"user"``), else the number."""
    return next((name for name, n in FACILITIES.items() if n == facility), facility)


def untokened_gap(
    allow: tuple[Untokened, ...], tls_client_ca: str | None, *, unix: bool, datagram: bool
) -> str | None:
    """With a token: why a listener that cannot carry it (syslog, pickle datagrams; ``unix``
    and ``datagram`` say what kind of socket) would take records from nobody, and how to fix
    that; ``None`` if ``allow`` can name some peer of it.

    A Unix datagram socket never can: a datagram does not say which uid sent it (that needs
    ``SO_PASSCRED``), so no ``uid:`` entry can match, and it would refuse everything. A Unix
    stream socket is named by a ``uid:`` entry only, a TCP or UDP one by a network only.
    Syslog over TCP with required client certificates (``tls_client_ca``) needs no entry."""
    if unix and datagram:
        return (
            "a Unix datagram socket does not tell which uid sent a datagram, so no "
            "--allow-untokened entry can name its senders: with a token it would refuse every "
            "record. Remove the token, or use a Unix stream socket (with --allow-untokened "
            "uid:NAME) or UDP (with --allow-untokened NETWORK) instead"
        )
    if not unix and not datagram and tls_client_ca is not None:
        return None
    if unix:
        if any(isinstance(entry, int) for entry in allow):
            return None
        return (
            "--allow-untokened names no uid: name the users that may send on it with "
            "--allow-untokened uid:NAME (repeatable), or remove the listener"
        )
    if any(not isinstance(entry, int) for entry in allow):
        return None
    return (
        "--allow-untokened names no network: name its senders with --allow-untokened "
        "(a network such as 10.1.2.0/24 or 127.0.0.1; repeatable), or remove the listener"
    )
