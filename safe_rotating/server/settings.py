"""From flags and a TOML file to one checked :class:`~safe_rotating.server.config.ServerConfig`.

Every long flag has a TOML key of the same name with dashes turned into underscores; a flag given
on the command line wins over the file. :func:`build` checks everything a person can get wrong
before anything is opened, so a bad setting stops the server at start-up with one clear line.
"""

from __future__ import annotations

import importlib
import ipaddress
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, Final

from safe_rotating._common.units import parse_age, parse_size
from safe_rotating._common.validate import check_timeout
from safe_rotating._engine.compress import parse_compression
from safe_rotating._engine.schedule import Schedule
from safe_rotating._net.address import Address, AddressError
from safe_rotating._net.address import parse_address as parse_any_address
from safe_rotating._net.wire import DEFAULT_MAX_FRAME
from safe_rotating.server.config import (
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_FORMAT,
    DEFAULT_FORWARD_QUEUE,
    DEFAULT_FRAME_MEMORY,
    DEFAULT_HELLO_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_LISTEN,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_PER_PEER,
    DEFAULT_QUEUE_SIZE,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_UNIX_MODE,
    FACILITIES,
    ConfigError,
    ServerConfig,
    Untokened,
    untokened_gap,
)

__all__ = ["KEYS", "build", "check_route", "load_toml", "parse_address", "parse_untokened"]


def parse_address(text: str, *, unix: bool = True) -> Address:
    """An address setting (:func:`safe_rotating._net.address.parse_address`); a bad one is a
    :class:`ConfigError` like every other bad setting."""
    try:
        return parse_any_address(text, unix=unix)
    except AddressError as exc:
        raise ConfigError(str(exc)) from None


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
    # The rule is check_timeout's (the handlers' and the client's too); the words are those of
    # every setting here: "key: what it must be, got what it got".
    try:
        return check_timeout(key, value, text=True)
    except TypeError:
        raise ConfigError(
            f"{key}: expected a number of seconds such as 30 or 0.5 (without a unit), got {value!r}"
        ) from None
    except ValueError:
        raise ConfigError(f"{key}: must be more than 0 seconds and finite, got {value!r}") from None


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
