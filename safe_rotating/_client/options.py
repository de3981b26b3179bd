"""``LogServerHandler``'s arguments checked and turned into a :class:`Config`: every error
names the argument, what it must be, and what was given."""

from __future__ import annotations

import os
import socket
import ssl
import sys
from typing import Any

from safe_rotating._client import spool as _spool
from safe_rotating._client.config import Config
from safe_rotating._common import validate as _options
from safe_rotating._net import address as _address
from safe_rotating._net import tls as _tls

__all__ = ["build_config", "parse_address"]

_MIN_SPOOL_BYTES = 64 * 1024


def parse_address(address: Any) -> tuple[int, Any]:
    """``"HOST:PORT"``, ``"[IPv6]:PORT"`` or ``"unix:/path"`` as ``(family, target)``, in the
    grammar the server uses (:func:`safe_rotating._net.address.parse_address`)."""
    if not isinstance(address, str):
        raise TypeError(
            f"address must be a str such as '127.0.0.1:9020' or 'unix:/run/log.sock', "
            f"got {type(address).__name__}: {address!r}"
        )
    try:
        parsed = _address.parse_address(address)
    except _address.AddressError as exc:
        raise ValueError(f"address={exc}") from None
    if parsed.path is not None:
        return socket.AF_UNIX, parsed.path
    return socket.AF_INET, (parsed.host, parsed.port)


def _check_int(name: str, value: Any, least: int, most: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r}")
    if value < least or (most is not None and value > most):
        bounds = f">= {least}" if most is None else f"from {least} to {most}"
        raise ValueError(f"{name} must be {bounds}, got {value!r}")
    return value


def _check_seconds(name: str, value: Any, most: float | None = None) -> float:
    seconds = _options.check_timeout(name, value)
    if most is not None and seconds > most:
        raise ValueError(f"{name} must be at most {most:g} seconds, got {value!r}")
    return seconds


def _check_text(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a non-empty str or None, got {type(value).__name__}")
    return value


def _check_file(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes) or not isinstance(value, str | os.PathLike):
        raise TypeError(f"{name} must be a file path or None, got {type(value).__name__}")
    path = os.path.abspath(os.fspath(value))
    if not os.path.isfile(path):
        raise ValueError(f"{name}={os.fspath(value)!r} is not a readable file")
    return path


def _check_spool_dir(value: Any) -> tuple[str | None, bool]:
    """``(root, is_default)``; ``root`` None means no spool (``spool_dir=False``)."""
    if value is False:
        return None, False
    if value is None:
        return _spool.default_spool_root(), True
    if isinstance(value, bytes) or not isinstance(value, str | os.PathLike) or value is True:
        raise TypeError(
            "spool_dir must be a directory path, None (a private directory of this user) or "
            f"False (no spool), got {type(value).__name__}: {value!r}"
        )
    path = os.fspath(value)
    if not path:
        raise ValueError("spool_dir must be a directory path, got ''")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"spool_dir={path!r} exists and is not a directory")
    return os.path.abspath(path), False


def _tls_context(
    tls: Any, ca: Any, cert: Any, key: Any, hostname: Any, family: int, host: str | None
) -> tuple[ssl.SSLContext | None, str | None]:
    if not isinstance(tls, bool):
        raise TypeError(f"tls must be True or False, got {type(tls).__name__}: {tls!r}")
    given = {
        "tls_ca": ca,
        "tls_cert": cert,
        "tls_key": key,
        "tls_server_hostname": hostname,
    }
    if not tls:
        for name, value in given.items():
            if value is not None:
                raise ValueError(f"{name}={value!r} is set but tls=False; set tls=True to use it")
        return None, None
    ca_file = _check_file("tls_ca", ca)
    cert_file = _check_file("tls_cert", cert)
    key_file = _check_file("tls_key", key)
    server_name = _check_text("tls_server_hostname", hostname)
    if key_file is not None and cert_file is None:
        raise ValueError("tls_key is set without tls_cert: give the client certificate too")
    if server_name is None:
        if family == socket.AF_UNIX:
            raise ValueError("tls=True on a Unix socket needs tls_server_hostname (the name in "
                             "the server's certificate)")  # fmt: skip
        server_name = host
    try:
        context = _tls.client_context(ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"tls_ca={ca!r} could not be loaded: {exc}") from None
    if cert_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"tls_cert={cert!r} / tls_key={key!r} could not be loaded: {exc}"
            ) from None
    return context, server_name


def build_config(
    address: Any,
    *,
    token: Any,
    tls: Any,
    tls_ca: Any,
    tls_cert: Any,
    tls_key: Any,
    tls_server_hostname: Any,
    app: Any,
    spool_dir: Any,
    spool_max_bytes: Any,
    queue_size: Any,
    batch_size: Any,
    flush_interval: Any,
    ack_timeout: Any,
    flush_timeout: Any,
    on_full: Any,
    block_timeout: Any,
    fallback_file: Any,
    format_on: Any,
) -> tuple[Config, str | None]:
    """The settings, and the path of the fallback file (None: no fallback file). Raises
    TypeError or ValueError for the first argument that is wrong."""
    family, target = parse_address(address)
    host = target[0] if family != socket.AF_UNIX else None
    token = _check_text("token", token)
    app_name = _check_text("app", app) or (
        os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    )
    context, server_hostname = _tls_context(
        tls, tls_ca, tls_cert, tls_key, tls_server_hostname, family, host
    )
    spool_root, spool_default = _check_spool_dir(spool_dir)
    spool_bytes = _check_int("spool_max_bytes", spool_max_bytes, _MIN_SPOOL_BYTES)
    batch = _check_int("batch_size", batch_size, 1, 10_000)
    queue = _check_int("queue_size", queue_size, 1)
    if queue < batch:
        raise ValueError(f"queue_size={queue_size!r} must be at least batch_size={batch_size!r}")
    interval = _check_seconds("flush_interval", flush_interval, most=1.0)
    acks = _check_seconds("ack_timeout", ack_timeout)
    flushing = _check_seconds("flush_timeout", flush_timeout)
    blocking = _check_seconds("block_timeout", block_timeout)
    if on_full not in ("block", "drop"):
        raise ValueError(f"on_full must be 'block' or 'drop', got {on_full!r}")
    if format_on not in ("client", "server"):
        raise ValueError(f"format_on must be 'client' or 'server', got {format_on!r}")
    fallback_path: str | None = None
    if fallback_file is not None:
        fallback_path = _options.check_filename(fallback_file)
        if spool_root is not None:
            raise ValueError(
                f"fallback_file={os.fspath(fallback_file)!r} is used only without a spool: "
                "set spool_dir=False too (with a spool, records wait on disk for the server)"
            )
    config = Config(
        address=address,
        family=family,
        target=target,
        tls=context,
        server_hostname=server_hostname,
        token=token,
        app=app_name,
        batch_size=batch,
        flush_interval=interval,
        queue_size=queue,
        spool_root=spool_root,
        spool_root_is_default=spool_default,
        spool_max_bytes=spool_bytes,
        ack_timeout=acks,
        flush_timeout=flushing,
        block_timeout=blocking,
        block=on_full == "block",
        fallback=fallback_path is not None,
    )
    return config, fallback_path
