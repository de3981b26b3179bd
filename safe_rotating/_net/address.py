"""Network addresses as people write them, and peers as sockets report them.

``HOST:PORT``, ``[IPv6]:PORT`` or ``unix:PATH`` parsed once into an :class:`Address`, and the
questions asked about a ``getpeername()`` result (its IP address; is it this machine?), so the
server's listeners, its connections and its settings agree on what "local" means.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Any

__all__ = ["Address", "AddressError", "is_loopback", "parse_address", "peer_ip"]


class AddressError(ValueError):
    """Text that is not an address; the message quotes it and gives examples."""


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


_UNIX_PATH_MAX = 107  # sun_path holds 108 bytes, one of them the terminating NUL


def parse_address(text: str, *, unix: bool = True) -> Address:
    """``HOST:PORT``, ``[IPv6]:PORT`` or (where ``unix``) ``unix:PATH`` (made absolute).

    The one grammar of the client, the server's listeners, ``--forward`` and ``--metrics``.
    Every :class:`AddressError` message starts with the text as given (``repr``) and says what
    is wrong with it and how it should look, so callers can prefix the setting's name.
    """
    text = text.strip()
    if text.startswith("unix:"):
        if not unix:
            raise AddressError(f"{text!r}: a Unix socket is not possible here; use HOST:PORT")
        path = text[5:]
        if not path:
            raise AddressError(f"{text!r} names no socket path (use e.g. 'unix:/run/app/log.sock')")
        path = os.path.abspath(path)
        if len(os.fsencode(path)) > _UNIX_PATH_MAX:
            raise AddressError(
                f"{text!r}: a Unix socket path may be at most {_UNIX_PATH_MAX} bytes"
            )
        return Address(path=path)
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise AddressError(f"{text!r} must look like '[::1]:9020'")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)  # a scope (fe80::1%eth0) is part of the address
        except ValueError:
            raise AddressError(f"{text!r}: {host!r} in brackets is not an IPv6 address") from None
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            raise AddressError(f"{text!r} has no port: use 'HOST:PORT' such as '127.0.0.1:9020'")
        if ":" in host:
            raise AddressError(f"{text!r}: an IPv6 address goes in brackets, as in '[::1]:9020'")
        if any(char.isspace() or char in "[]" for char in host):
            raise AddressError(f"{text!r}: {host!r} is not a host name")
    if not host:
        raise AddressError(f"{text!r} has no host: use e.g. '127.0.0.1:{port_text}'")
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise AddressError(f"{text!r}: the port must be a number from 1 to 65535")
    return Address(host=host, port=int(port_text))


def peer_ip(peer: tuple[Any, ...]) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address of a ``getpeername()`` tuple (an IPv4-mapped IPv6 address as IPv4), or
    ``None`` if it is not one."""
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_loopback(peer: Any) -> bool:
    """Is ``peer`` (a ``getpeername()`` result or a datagram's source) this machine? Unix
    sockets are."""
    if not isinstance(peer, tuple) or not peer:
        return True  # AF_UNIX: a path or an empty name
    address = peer_ip(peer)
    return address is not None and address.is_loopback
