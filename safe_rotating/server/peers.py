"""Who is at the other end of a connection or datagram, as records and limits show it.

The host a record shows (this host's name for a local peer; a claimed name with the address it
really came from, once a token makes records attributable), the uid behind a Unix socket, and
the key a connection counts against for ``--max-connections-per-peer``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from typing import Any, Final

from safe_rotating._net.address import is_loopback, peer_ip

__all__ = ["peer_host", "peer_key", "peer_uid", "shown_host"]

_CRED: Final = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_host(peer: Any, hostname: str) -> str:
    """What a record from ``peer`` shows as its host: this host's name for local peers."""
    if is_loopback(peer):
        return hostname
    return str(peer[0])


def shown_host(claimed: str, peer: Any, hostname: str, marked: bool) -> str:
    """The host a record shows, given the name its sender ``claimed`` (a hello's ``host``, a
    syslog HOSTNAME). A claim is not proof: with a token (``marked``) a server promises that
    records are attributable, so the claim of a peer on another machine is shown with the
    address it really came from, ``web-3@10.0.0.5`` (just the address if it claimed that).
    Local peers keep their claim: they are on this machine either way."""
    actual = peer_host(peer, hostname)
    if not marked or claimed == actual or is_loopback(peer):
        return claimed
    return f"{claimed}@{actual}"


def peer_uid(writer: asyncio.StreamWriter) -> int | None:
    """The uid of the process at the other end of a Unix socket (``SO_PEERCRED``, Linux);
    ``None`` over TCP or where the system has no such option."""
    option = getattr(socket, "SO_PEERCRED", None)
    sock = writer.get_extra_info("socket")
    if option is None or sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        _, uid, _ = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, option, _CRED.size))
    except (OSError, struct.error):
        return None
    return int(uid)


def peer_key(peer: Any, uid: int | None) -> str | None:
    """Who a connection counts against for ``--max-connections-per-peer``: its uid on a Unix
    socket, its address over TCP (IPv6: its /64, which one machine usually owns whole), and
    nobody for loopback TCP — every local user shares 127.0.0.1, so a cap there would let one
    lock out the others; the hello and idle timeouts cover it."""
    if not isinstance(peer, tuple) or not peer:
        return None if uid is None else f"uid {uid}"
    address = peer_ip(peer)
    if address is None:
        return str(peer[0])
    if address.is_loopback:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)
