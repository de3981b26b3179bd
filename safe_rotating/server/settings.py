"""From flags and a TOML file to one checked :class:`~safe_rotating.server.config.ServerConfig`.

Every long flag has a TOML key of the same name with dashes turned into underscores; a flag given
on the command line wins over the environment, which wins over the file. :func:`build` checks
everything a person can get wrong before anything is opened, so a bad setting stops the server at
start-up with one clear line, which names the setting as the person wrote it: ``--max-bytes`` when
it came from the command line, ``max_bytes`` when from the file.
"""

from __future__ import annotations

import importlib
import ipaddress
import logging
import os
import sys
from collections.abc import Callable, Mapping
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
    LOG_LEVELS,
    ConfigError,
    ServerConfig,
    Untokened,
    untokened_gap,
)

__all__ = ["KEYS", "build", "check_route", "load_toml", "parse_address", "parse_untokened"]

Spell = Callable[[str], str]  # a setting's key -> how the user wrote it (see ``build``)


def parse_address(text: str, *, unix: bool = True) -> Address:
    """An address setting (:func:`safe_rotating._net.address.parse_address`); a bad one is a
    :class:`ConfigError` like every other bad setting."""
    try:
        return parse_any_address(text, unix=unix)
    except AddressError as exc:
        raise ConfigError(str(exc)) from None


def parse_untokened(text: str, name: str = "allow_untokened") -> Untokened:
    """``10.0.0.0/8``, ``192.0.2.7``, ``::1``, ``uid:1000`` or ``uid:www-data``; ``name`` is the
    setting as the user wrote it."""
    text = text.strip()
    if text.startswith("uid:"):
        user = text[4:]
        if user.isdigit():
            return int(user)
        try:
            import pwd

            return pwd.getpwnam(user).pw_uid
        except (ImportError, KeyError):
            raise ConfigError(f"{name} {text!r}: no user {text[4:]!r}") from None
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(
            f"{name} {text!r}: expected an address or network (127.0.0.1, "
            "10.0.0.0/8, fd00::/8) or uid:NUMBER or uid:NAME for Unix sockets"
        ) from None


def _compress(value: Any, name: str) -> str | None:
    if value in (None, ""):
        return None
    try:
        compression = parse_compression(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return compression.kind if compression else None


def _age(value: Any, name: str) -> float | None:
    if value in (None, "", 0):
        return None
    try:
        return parse_age(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: {exc}") from None


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
        "log_level",
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


def _mode(value: Any, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    else:
        try:
            mode = int(str(value), 8)
        except ValueError:
            raise ConfigError(f"{name}: expected an octal mode like 0600, got {value!r}") from None
    if not 0 <= mode <= 0o777:
        raise ConfigError(f"{name}: {oct(mode)} is not a permission mode")
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


def _facility(value: Any, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        number: int | None = value
    elif isinstance(value, str):
        text = value.strip().lower()
        number = int(text) if text.isdigit() else FACILITIES.get(text)
    else:
        number = None
    if number is None or not 0 <= number <= 23:
        raise ConfigError(
            f"{name}: expected a syslog facility (user, daemon, local0 ... local7, "
            f"or 0-23), got {value!r}"
        )
    return number


def check_route(prefix: str, target: str, log_file: str, name: str = "route") -> tuple[str, str]:
    """A route's file, resolved; it must stay inside the directory of ``log_file``. ``name`` is
    the setting as the user wrote it (``--route`` or ``route``)."""
    if not prefix or prefix.strip() != prefix or any(not part for part in prefix.split(".")):
        raise ConfigError(f"{name} {prefix!r}: expected a logger name such as 'app.db'")
    if not target:
        raise ConfigError(f"{name} {prefix!r}: no file given")
    base = os.path.dirname(log_file)
    if ".." in target.replace("\\", "/").split("/"):
        raise ConfigError(f"{name} {prefix}={target}: '..' is not allowed in a route's file name")
    path = os.path.normpath(target if os.path.isabs(target) else os.path.join(base, target))
    real_base = os.path.realpath(base)
    real = os.path.realpath(path)
    if os.path.commonpath([real, real_base]) != real_base or real == real_base:
        raise ConfigError(
            f"{name} {prefix}={target}: {real!r} is outside {real_base!r}, the directory of "
            "--file; route files must stay inside it"
        )
    if os.path.isdir(path):
        raise ConfigError(f"{name} {prefix}={target}: {path!r} is a directory")
    if not os.path.isdir(os.path.dirname(path)):
        raise ConfigError(f"{name} {prefix}={target}: the directory of {path!r} does not exist")
    return prefix, path


def _routes(value: Any, log_file: str, name: str) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    if isinstance(value, Mapping):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    else:
        for item in _list(value, name):
            prefix, sep, target = item.partition("=")
            if not sep:
                raise ConfigError(f"{name} {item!r}: expected PREFIX=FILE, e.g. app.db=db.log")
            pairs.append((prefix.strip(), target.strip()))
    checked = [check_route(prefix, target, log_file, name) for prefix, target in pairs]
    seen: set[str] = set()
    for prefix, _ in checked:
        if prefix in seen:
            raise ConfigError(f"{name} {prefix!r} is given twice")
        seen.add(prefix)
    return tuple(sorted(checked, key=lambda pair: -len(pair[0])))


def _format(value: Any, name: str) -> str:
    text = str(value)
    try:
        logging.Formatter(text, validate=True)
    except ValueError as exc:
        raise ConfigError(f"{name} {text!r}: {exc}") from None
    return text


def _level(value: Any, name: str) -> str:
    level = str(value).strip().upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{name}: expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return level


def _token(settings: Mapping[str, Any], spell: Spell) -> str | None:
    token, token_file = settings.get("token"), settings.get("token_file")
    if token and token_file:
        raise ConfigError(f"give either {spell('token')} or {spell('token_file')}, not both")
    if token_file:
        name = spell("token_file")
        try:
            with open(str(token_file), encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise ConfigError(f"{name} {token_file!r}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{name} {token_file!r} is not UTF-8 text") from None
        if not token:
            raise ConfigError(f"{name} {token_file!r} is empty")
    if not token:
        return None
    try:  # a client sends it as JSON text: bytes that are not UTF-8 could never match
        str(token).encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{spell('token')} is not valid UTF-8 text") from None
    return str(token)


def _check_untokened(
    token: str | None,
    allow: tuple[Untokened, ...],
    udp: tuple[Address, ...],
    syslog_tcp: tuple[Address, ...],
    syslog_udp: tuple[Address, ...],
    tls_client_ca: str | None,
    spell: Spell,
) -> None:
    """With a token, every input is authenticated: listeners that cannot carry the token
    (syslog, DatagramHandler pickles) need ``allow_untokened`` to name who may use them —
    a server that silently took anyone's records there would make the token decorative.
    Syslog over TLS with required client certificates is authenticated by the certificate."""
    if token is None:
        if allow:
            raise ConfigError(
                f"{spell('allow_untokened')} needs a token: without {spell('token')}/"
                f"{spell('token_file')} every peer may send"
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


def build(settings: Mapping[str, Any], names: Mapping[str, str] | None = None) -> ServerConfig:
    """A checked :class:`ServerConfig` from merged settings (keys as in the TOML file).

    ``names`` says how the user wrote a setting that did not come from the file (``max_bytes``
    -> ``--max-bytes``, ``token`` -> ``SAFE_ROTATING_TOKEN``): an error names it so."""
    written = dict(names or {})

    def spell(key: str) -> str:
        return written.get(key, key)

    unknown = sorted(set(settings) - KEYS)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    if not settings.get("file"):
        raise ConfigError("no output file: give --file PATH (or file = ... in --config)")
    log_file = os.path.abspath(str(settings["file"]))
    if os.path.isdir(log_file):
        raise ConfigError(f"{spell('file')}: {log_file!r} is a directory")
    if not os.path.isdir(os.path.dirname(log_file)):
        raise ConfigError(f"{spell('file')}: the directory of {log_file!r} does not exist")

    def addresses(key: str, unix: bool) -> tuple[Address, ...]:
        name = spell(key)
        found = []
        for text in _list(settings.get(key), name):
            try:
                found.append(parse_address(text, unix=unix))
            except ConfigError as exc:
                raise ConfigError(f"{name}: {exc}") from None
        return tuple(found)

    def size(key: str, default: Any, minimum: int = 0) -> int:
        return _size(settings.get(key, default), spell(key), minimum)

    def whole(key: str, default: int, minimum: int) -> int:
        return _int(settings.get(key, default), spell(key), minimum)

    def seconds(key: str, default: float) -> float:
        return _seconds(settings.get(key, default), spell(key))

    def flag(key: str, default: bool) -> bool:
        return _bool(settings.get(key, default), spell(key))

    def existing(key: str) -> str | None:
        return _existing_file(settings.get(key), spell(key))

    listen = addresses("listen", True)
    udp = addresses("udp", False)
    syslog_tcp = addresses("syslog_tcp", True)
    syslog_udp = addresses("syslog_udp", False)
    if not (listen or udp or syslog_tcp or syslog_udp):
        listen = (parse_address(DEFAULT_LISTEN),)
    metrics = addresses("metrics", False) if settings.get("metrics") else ()  # "": none
    tls_cert = existing("tls_cert")
    tls_key = existing("tls_key")
    tls_client_ca = existing("tls_client_ca")
    if tls_key and not tls_cert:
        raise ConfigError(f"{spell('tls_key')} needs {spell('tls_cert')}")
    if tls_client_ca and not tls_cert:
        raise ConfigError(
            f"{spell('tls_client_ca')} (client certificates) needs {spell('tls_cert')}"
        )
    forward = addresses("forward", False)
    forward_tls = flag("forward_tls", False)
    forward_ca = existing("forward_ca")
    if forward_tls and not forward:
        raise ConfigError(f"{spell('forward_tls')} needs at least one forward address")
    if forward_ca and not forward_tls:
        raise ConfigError(f"{spell('forward_ca')} (the relay's CA) needs {spell('forward_tls')}")
    when = str(settings.get("when") or "") or None
    interval = whole("interval", 1, 1)
    utc = flag("utc", False)
    if when is not None:
        try:
            when = Schedule.parse(when, interval, utc).when
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{spell('when')}: {exc}") from None
    state_dir = os.path.abspath(str(settings.get("state_dir") or os.path.dirname(log_file)))
    if not os.path.isdir(state_dir):
        raise ConfigError(f"{spell('state_dir')}: {state_dir!r} is not a directory")
    token = _token(settings, spell)
    allow_untokened = tuple(
        parse_untokened(a, spell("allow_untokened"))
        for a in _list(settings.get("allow_untokened"), spell("allow_untokened"))
    )
    _check_untokened(token, allow_untokened, udp, syslog_tcp, syslog_udp, tls_client_ca, spell)
    max_frame = size("max_frame", DEFAULT_MAX_FRAME, 1024)
    frame_memory = _size(
        settings.get("frame_memory") or max(DEFAULT_FRAME_MEMORY, 4 * max_frame),
        spell("frame_memory"),
    )
    if frame_memory < max_frame:
        raise ConfigError(
            f"{spell('frame_memory')} ({frame_memory} bytes) must be at least "
            f"{spell('max_frame')} ({max_frame}): otherwise a frame of the largest size could "
            "never be received"
        )
    if len(metrics) > 1:
        raise ConfigError(f"{spell('metrics')}: expected one address, got {len(metrics)}")
    return ServerConfig(
        file=log_file,
        listen=listen,
        udp=udp,
        syslog_tcp=syslog_tcp,
        syslog_udp=syslog_udp,
        max_bytes=size("max_bytes", 0),
        backup_count=whole("backup_count", 0, 0),
        compress=_compress(settings.get("compress"), spell("compress")),
        max_age=_age(settings.get("max_age"), spell("max_age")),
        max_total_bytes=size("max_total_bytes", None, 1)
        if settings.get("max_total_bytes")
        else None,
        when=when,
        interval=interval,
        utc=utc,
        format=_format(settings.get("format") or DEFAULT_FORMAT, spell("format")),
        escape_control_characters=flag("escape_control_characters", True),
        routes=_routes(settings.get("route"), log_file, spell("route")),
        max_frame=max_frame,
        read_timeout=seconds("read_timeout", DEFAULT_READ_TIMEOUT),
        queue_size=whole("queue_size", DEFAULT_QUEUE_SIZE, 1),
        token=token,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
        allow_remote_pickle=flag("allow_remote_pickle", False),
        unix_mode=_mode(settings.get("unix_mode", DEFAULT_UNIX_MODE), spell("unix_mode")),
        metrics=metrics[0] if metrics else None,
        state_dir=state_dir,
        max_connections=whole("max_connections", DEFAULT_MAX_CONNECTIONS, 1),
        drain_timeout=seconds("drain_timeout", DEFAULT_DRAIN_TIMEOUT),
        forward=forward,
        forward_tls=forward_tls,
        forward_ca=forward_ca,
        forward_facility=_facility(settings.get("forward_facility", 1), spell("forward_facility")),
        forward_queue=whole("forward_queue", DEFAULT_FORWARD_QUEUE, 1),
        hello_timeout=seconds("hello_timeout", DEFAULT_HELLO_TIMEOUT),
        idle_timeout=seconds("idle_timeout", DEFAULT_IDLE_TIMEOUT),
        max_connections_per_peer=whole("max_connections_per_peer", DEFAULT_MAX_PER_PEER, 1),
        frame_memory=frame_memory,
        allow_untokened=allow_untokened,
        log_level=_level(settings.get("log_level", "INFO"), spell("log_level")),
    )
