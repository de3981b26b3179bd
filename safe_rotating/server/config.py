"""The server's settings: one validated, immutable object built from flags and a TOML file.

Every long flag has a TOML key of the same name with dashes turned into underscores; a flag given
on the command line wins over the file. :func:`build` checks everything a person can get wrong
before anything is opened, so a bad setting stops the server at start-up with one clear line.
"""

from __future__ import annotations

import importlib
import ipaddress
import logging
import logging.handlers
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from safe_rotating._engine.compress import parse_compression
from safe_rotating._engine.plan import parse_age, parse_size
from safe_rotating._engine.schedule import Schedule
from safe_rotating._net.wire import DEFAULT_MAX_FRAME

__all__ = [
    "DEFAULT_FORMAT",
    "DEFAULT_LISTEN",
    "Address",
    "ConfigError",
    "ServerConfig",
    "build",
    "load_toml",
    "parse_address",
    "peer_address",
    "untokened_gap",
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
FACILITIES: Final = logging.handlers.SysLogHandler.facility_names  # "user" -> 1, "local0" -> 16


def peer_address(peer: tuple[Any, ...]) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address of a ``getpeername()`` tuple (an IPv4-mapped IPv6 address as IPv4), or
    ``None`` if it is not one."""
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ConfigError(ValueError):
    """A setting that cannot work; the message says which and why."""


@dataclass(frozen=True)
class Address:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) or ``unix:PATH``."""

    host: str = ""
    port: int = 0
    path: str | None = None

    @property
    def is_unix(self) -> bool:
        return self.path is not None

    @property
    def is_loopback(self) -> bool:
        if self.path is not None:
            return True
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


# An ``allow_untokened`` entry: a network of peers (TCP, UDP) or a uid (Unix sockets).
Untokened: TypeAlias = "ipaddress.IPv4Network | ipaddress.IPv6Network | int"


def parse_untokened(text: str) -> Untokened:
    """``10.0.0.0/8``, ``192.0.2.7``, ``::1``, ``uid:1000`` or ``uid:www-data``."""
    text = text.strip()
    if text.startswith("uid:"):
        name = text[4:]
        if name.isdigit():
            return int(name)
        try:
            import pwd

            return pwd.getpwnam(name).pw_uid
        except (ImportError, KeyError):
            raise ConfigError(f"allow_untokened {text!r}: no user {name!r}") from None
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(
            f"allow_untokened {text!r}: expected an address or network (127.0.0.1, "
            "10.0.0.0/8, fd00::/8) or uid:NUMBER or uid:NAME for Unix sockets"
        ) from None


def untokened_name(entry: Untokened) -> str:
    return f"uid:{entry}" if isinstance(entry, int) else str(entry)


def parse_address(text: str, *, unix: bool = True) -> Address:
    """``HOST:PORT``, ``[IPv6]:PORT`` or (where ``unix``) ``unix:PATH``."""
    text = text.strip()
    if text.startswith("unix:"):
        if not unix:
            raise ConfigError(f"{text!r}: a Unix socket is not possible here; use HOST:PORT")
        path = text[5:]
        if not path:
            raise ConfigError(f"{text!r}: unix: needs a path, e.g. unix:/run/mysite/log.sock")
        return Address(path=os.path.abspath(path))
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\s\[\]]+):(\d+)", text)
    if match is None:
        example = "127.0.0.1:9020, [::1]:9020" + (" or unix:/run/app/log.sock" if unix else "")
        raise ConfigError(f"{text!r} is not an address (examples: {example})")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 < port < 65536:
        raise ConfigError(f"{text!r}: port {port} is out of range 1-65535")
    return Address(host=host, port=port)


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
            address = peer_address(peer)
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
            "",
            "[route]",
            *(f"{quote(prefix)} = {quote(path)}" for prefix, path in self.routes),
        ]
        return "\n".join(lines) + "\n"


def _compress(value: Any) -> str | None:
    if value in (None, ""):
        return None
    try:
        compression = parse_compression(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"compress: {exc}") from None
    return compression.kind if compression else None


def _age(value: Any) -> float | None:
    if value in (None, "", 0):
        return None
    try:
        return parse_age(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"max_age: {exc}") from None


# -- TOML --------------------------------------------------------------------------------------
KEYS: Final = frozenset(
    {
        "listen",
        "udp",
        "syslog_tcp",
        "syslog_udp",
        "file",
        "max_bytes",
        "backup_count",
        "compress",
        "max_age",
        "max_total_bytes",
        "when",
        "interval",
        "utc",
        "format",
        "escape_control_characters",
        "route",
        "max_frame",
        "read_timeout",
        "queue_size",
        "token",
        "token_file",
        "tls_cert",
        "tls_key",
        "tls_client_ca",
        "allow_remote_pickle",
        "unix_mode",
        "metrics",
        "state_dir",
        "max_connections",
        "drain_timeout",
        "forward",
        "forward_tls",
        "forward_ca",
        "forward_facility",
        "forward_queue",
        "hello_timeout",
        "idle_timeout",
        "max_connections_per_peer",
        "frame_memory",
        "allow_untokened",
    }
)


def load_toml(path: str) -> dict[str, Any]:
    """The settings of a TOML file (tomllib on 3.11+, the tomli backport on 3.10)."""
    toml = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")
    try:
        with open(path, "rb") as f:
            data: dict[str, Any] = toml.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration {path!r}: {exc.strerror}") from None
    except ValueError as exc:  # tomllib.TOMLDecodeError
        raise ConfigError(f"{path!r} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise ConfigError(
            f"{path!r}: unknown setting(s) {', '.join(unknown)}; the keys are the long flags "
            "with underscores (see --help)"
        )
    return data


# -- validation --------------------------------------------------------------------------------
def _list(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"{key}: expected a string or a list of strings, got {value!r}")


def _size(value: Any, key: str, minimum: int = 0) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a size, got {value!r}")
    try:
        size = value if isinstance(value, int) else parse_size(str(value))
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    if size < minimum:
        raise ConfigError(f"{key}: must be at least {minimum}, got {size}")
    return size


def _int(value: Any, key: str, minimum: int) -> int:
    try:
        number = (
            int(value) if isinstance(value, int | str) and not isinstance(value, bool) else None
        )
    except ValueError:
        number = None
    if number is None or number < minimum:
        raise ConfigError(f"{key}: expected a whole number >= {minimum}, got {value!r}")
    return number


def _seconds(value: Any, key: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected seconds, got {value!r}") from None
    if not seconds > 0:
        raise ConfigError(f"{key}: must be more than 0 seconds, got {value!r}")
    return seconds


def _mode(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    else:
        try:
            mode = int(str(value), 8)
        except ValueError:
            raise ConfigError(
                f"unix_mode: expected an octal mode like 0600, got {value!r}"
            ) from None
    if not 0 <= mode <= 0o777:
        raise ConfigError(f"unix_mode: {oct(mode)} is not a permission mode")
    return mode


def _bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{key}: expected true or false, got {value!r}")


def _existing_file(value: Any, key: str) -> str | None:
    if value in (None, ""):
        return None
    path = os.path.abspath(str(value))
    if not os.path.isfile(path):
        raise ConfigError(f"{key}: {path!r} does not exist or is not a file")
    return path


def facility_name(facility: int) -> str | int:
    """The usual name of a syslog facility number (``1`` -> ``"user"``), else the number."""
    return next((name for name, n in FACILITIES.items() if n == facility), facility)


def _facility(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        number: int | None = value
    elif isinstance(value, str):
        text = value.strip().lower()
        number = int(text) if text.isdigit() else FACILITIES.get(text)
    else:
        number = None
    if number is None or not 0 <= number <= 23:
        raise ConfigError(
            f"forward_facility: expected a syslog facility (user, daemon, local0 ... local7, "
            f"or 0-23), got {value!r}"
        )
    return number


def check_route(prefix: str, target: str, log_file: str) -> tuple[str, str]:
    """A route's file, resolved; it must stay inside the directory of ``log_file``."""
    if not prefix or prefix.strip() != prefix or any(not part for part in prefix.split(".")):
        raise ConfigError(f"route {prefix!r}: expected a logger name such as 'app.db'")
    if not target:
        raise ConfigError(f"route {prefix!r}: no file given")
    base = os.path.dirname(log_file)
    if ".." in target.replace("\\", "/").split("/"):
        raise ConfigError(f"route {prefix}={target}: '..' is not allowed in a route's file name")
    path = os.path.normpath(target if os.path.isabs(target) else os.path.join(base, target))
    real_base = os.path.realpath(base)
    real = os.path.realpath(path)
    if os.path.commonpath([real, real_base]) != real_base or real == real_base:
        raise ConfigError(
            f"route {prefix}={target}: {real!r} is outside {real_base!r}, the directory of "
            "--file; route files must stay inside it"
        )
    if os.path.isdir(path):
        raise ConfigError(f"route {prefix}={target}: {path!r} is a directory")
    if not os.path.isdir(os.path.dirname(path)):
        raise ConfigError(f"route {prefix}={target}: the directory of {path!r} does not exist")
    return prefix, path


def _routes(value: Any, log_file: str) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    if isinstance(value, Mapping):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    else:
        for item in _list(value, "route"):
            prefix, sep, target = item.partition("=")
            if not sep:
                raise ConfigError(f"route {item!r}: expected PREFIX=FILE, e.g. app.db=db.log")
            pairs.append((prefix.strip(), target.strip()))
    checked = [check_route(prefix, target, log_file) for prefix, target in pairs]
    seen: set[str] = set()
    for prefix, _ in checked:
        if prefix in seen:
            raise ConfigError(f"route {prefix!r} is given twice")
        seen.add(prefix)
    return tuple(sorted(checked, key=lambda pair: -len(pair[0])))


def _format(value: Any) -> str:
    text = str(value)
    try:
        logging.Formatter(text, validate=True)
    except ValueError as exc:
        raise ConfigError(f"format {text!r}: {exc}") from None
    return text


def _token(settings: Mapping[str, Any]) -> str | None:
    token, token_file = settings.get("token"), settings.get("token_file")
    if token and token_file:
        raise ConfigError("give either token or token_file, not both")
    if token_file:
        try:
            with open(str(token_file), encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise ConfigError(f"token_file {token_file!r}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"token_file {token_file!r} is not UTF-8 text") from None
        if not token:
            raise ConfigError(f"token_file {token_file!r} is empty")
    if not token:
        return None
    try:  # a client sends it as JSON text: bytes that are not UTF-8 could never match
        str(token).encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError("token is not valid UTF-8 text") from None
    return str(token)


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


def _check_untokened(
    token: str | None,
    allow: tuple[Untokened, ...],
    udp: tuple[Address, ...],
    syslog_tcp: tuple[Address, ...],
    syslog_udp: tuple[Address, ...],
    tls_client_ca: str | None,
) -> None:
    """With a token, every input is authenticated: listeners that cannot carry the token
    (syslog, DatagramHandler pickles) need ``allow_untokened`` to name who may use them —
    a server that silently took anyone's records there would make the token decorative.
    Syslog over TLS with required client certificates is authenticated by the certificate."""
    if token is None:
        if allow:
            raise ConfigError(
                "allow_untokened needs a token: without token/token_file every peer may send"
            )
        return
    if allow:
        # Each listener needs an entry of its kind: a uid for a Unix socket, else a network.
        for flag, addresses, datagram in (
            ("--udp", udp, True),
            ("--syslog-udp", syslog_udp, True),
            ("--syslog-tcp", syslog_tcp, False),
        ):
            for address in addresses:
                gap = untokened_gap(allow, tls_client_ca, unix=address.is_unix, datagram=datagram)
                if gap is not None:
                    raise ConfigError(
                        f"a token is set, and {flag} {address} cannot carry it: {gap}"
                    )
        return
    untokened = [f"--udp {a}" for a in udp] + [f"--syslog-udp {a}" for a in syslog_udp]
    untokened += [f"--syslog-tcp {a}" for a in syslog_tcp if a.is_unix or tls_client_ca is None]
    if untokened:
        raise ConfigError(
            f"a token is set, but {', '.join(untokened)} cannot carry it: name the senders "
            "those listeners take with --allow-untokened (a network such as 10.1.2.0/24 or "
            "127.0.0.1, or uid:NAME for a Unix socket; repeatable), or remove the listener"
            + ("" if tls_client_ca else " (syslog over TLS may use --tls-client-ca instead)")
        )


def build(settings: Mapping[str, Any]) -> ServerConfig:
    """A checked :class:`ServerConfig` from merged settings (keys as in the TOML file)."""
    unknown = sorted(set(settings) - KEYS)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    if not settings.get("file"):
        raise ConfigError("no output file: give --file PATH (or file = ... in --config)")
    log_file = os.path.abspath(str(settings["file"]))
    if os.path.isdir(log_file):
        raise ConfigError(f"file: {log_file!r} is a directory")
    if not os.path.isdir(os.path.dirname(log_file)):
        raise ConfigError(f"file: the directory of {log_file!r} does not exist")

    def addresses(key: str, unix: bool) -> tuple[Address, ...]:
        return tuple(parse_address(a, unix=unix) for a in _list(settings.get(key), key))

    listen = addresses("listen", True)
    udp = addresses("udp", False)
    syslog_tcp = addresses("syslog_tcp", True)
    syslog_udp = addresses("syslog_udp", False)
    if not (listen or udp or syslog_tcp or syslog_udp):
        listen = (parse_address(DEFAULT_LISTEN),)
    metrics = settings.get("metrics")
    tls_cert = _existing_file(settings.get("tls_cert"), "tls_cert")
    tls_key = _existing_file(settings.get("tls_key"), "tls_key")
    tls_client_ca = _existing_file(settings.get("tls_client_ca"), "tls_client_ca")
    if tls_key and not tls_cert:
        raise ConfigError("tls_key needs tls_cert")
    if tls_client_ca and not tls_cert:
        raise ConfigError("tls_client_ca (client certificates) needs tls_cert")
    forward = tuple(parse_address(a, unix=False) for a in _list(settings.get("forward"), "forward"))
    forward_tls = _bool(settings.get("forward_tls", False), "forward_tls")
    forward_ca = _existing_file(settings.get("forward_ca"), "forward_ca")
    if forward_tls and not forward:
        raise ConfigError("forward_tls needs at least one forward address")
    if forward_ca and not forward_tls:
        raise ConfigError("forward_ca (the relay's CA) needs forward_tls")
    when = str(settings.get("when") or "") or None
    interval = _int(settings.get("interval", 1), "interval", 1)
    utc = _bool(settings.get("utc", False), "utc")
    if when is not None:
        try:
            when = Schedule.parse(when, interval, utc).when
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"when: {exc}") from None
    state_dir = os.path.abspath(str(settings.get("state_dir") or os.path.dirname(log_file)))
    if not os.path.isdir(state_dir):
        raise ConfigError(f"state_dir: {state_dir!r} is not a directory")
    token = _token(settings)
    allow_untokened = tuple(
        parse_untokened(a) for a in _list(settings.get("allow_untokened"), "allow_untokened")
    )
    _check_untokened(token, allow_untokened, udp, syslog_tcp, syslog_udp, tls_client_ca)
    max_frame = _size(settings.get("max_frame", DEFAULT_MAX_FRAME), "max_frame", 1024)
    frame_memory = _size(
        settings.get("frame_memory") or max(DEFAULT_FRAME_MEMORY, 4 * max_frame), "frame_memory"
    )
    if frame_memory < max_frame:
        raise ConfigError(
            f"frame_memory ({frame_memory} bytes) must be at least max_frame ({max_frame}): "
            "otherwise a frame of the largest size could never be received"
        )
    return ServerConfig(
        file=log_file,
        listen=listen,
        udp=udp,
        syslog_tcp=syslog_tcp,
        syslog_udp=syslog_udp,
        max_bytes=_size(settings.get("max_bytes", 0), "max_bytes"),
        backup_count=_int(settings.get("backup_count", 0), "backup_count", 0),
        compress=_compress(settings.get("compress")),
        max_age=_age(settings.get("max_age")),
        max_total_bytes=(
            _size(settings["max_total_bytes"], "max_total_bytes", 1)
            if settings.get("max_total_bytes")
            else None
        ),
        when=when,
        interval=interval,
        utc=utc,
        format=_format(settings.get("format") or DEFAULT_FORMAT),
        escape_control_characters=_bool(
            settings.get("escape_control_characters", True), "escape_control_characters"
        ),
        routes=_routes(settings.get("route"), log_file),
        max_frame=max_frame,
        read_timeout=_seconds(settings.get("read_timeout", DEFAULT_READ_TIMEOUT), "read_timeout"),
        queue_size=_int(settings.get("queue_size", DEFAULT_QUEUE_SIZE), "queue_size", 1),
        token=token,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
        allow_remote_pickle=_bool(
            settings.get("allow_remote_pickle", False), "allow_remote_pickle"
        ),
        unix_mode=_mode(settings.get("unix_mode", DEFAULT_UNIX_MODE)),
        metrics=parse_address(str(metrics), unix=False) if metrics else None,
        state_dir=state_dir,
        max_connections=_int(
            settings.get("max_connections", DEFAULT_MAX_CONNECTIONS), "max_connections", 1
        ),
        drain_timeout=_seconds(
            settings.get("drain_timeout", DEFAULT_DRAIN_TIMEOUT), "drain_timeout"
        ),
        forward=forward,
        forward_tls=forward_tls,
        forward_ca=forward_ca,
        forward_facility=_facility(settings.get("forward_facility", 1)),
        forward_queue=_int(
            settings.get("forward_queue", DEFAULT_FORWARD_QUEUE), "forward_queue", 1
        ),
        hello_timeout=_seconds(
            settings.get("hello_timeout", DEFAULT_HELLO_TIMEOUT), "hello_timeout"
        ),
        idle_timeout=_seconds(settings.get("idle_timeout", DEFAULT_IDLE_TIMEOUT), "idle_timeout"),
        max_connections_per_peer=_int(
            settings.get("max_connections_per_peer", DEFAULT_MAX_PER_PEER),
            "max_connections_per_peer",
            1,
        ),
        frame_memory=frame_memory,
        allow_untokened=allow_untokened,
    )
