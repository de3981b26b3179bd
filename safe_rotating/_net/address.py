"""Network addresses as people write them, and peers as sockets report them.

``HOST:PORT``, ``[IPv6]:PORT`` or ``unix:PATH`` parsed once into an :class:`Address`, and the
questions asked about a ``getpeername()`` result (its IP address; is it this machine?), so the
server's listeners, its connections and its settings agree on what "local" means.
"""

from __future__ import annotations

import ipaddress
import os
import re
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


def parse_address(text: str, *, unix: bool = True) -> Address:
    """``HOST:PORT``, ``[IPv6]:PORT`` or (where ``unix``) ``unix:PATH`` (made absolute)."""
    text = text.strip()
    if text.startswith("unix:"):
        if not unix:
            raise AddressError(f"{text!r}: a Unix socket is not possible here; use HOST:PORT")
        path = text[5:]
        if not path:
            raise AddressError(f"{text!r}: unix: needs a path, e.g. unix:/run/mysite/log.sock")
        return Address(path=os.path.abspath(path))
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\s\[\]]+):(\d+)", text)
    if match is None:
        example = "127.0.0.1:9020, [::1]:9020" + (" or unix:/run/app/log.sock" if unix else "")
        raise AddressError(f"{text!r} is not an address (examples: {example})")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 < port < 65536:
        raise AddressError(f"{text!r}: port {port} is out of range 1-65535")
    return Address(host=host, port=port)


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
