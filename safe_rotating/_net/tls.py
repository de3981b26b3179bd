"""TLS contexts: the server's (its certificate, optionally requiring clients' certificates)
and a client's (verifying the server against the system's or a given CA), made one way.

Both start from :func:`ssl.create_default_context`, so certificate verification and the
protocol floor are the standard library's secure defaults wherever a connection is made.
"""

from __future__ import annotations

import ssl

__all__ = ["client_context", "server_context"]


def server_context(cert: str, key: str | None, client_ca: str | None) -> ssl.SSLContext:
    """A context for accepting TLS with ``cert`` (and ``key``, if not in the same file); with
    ``client_ca``, a client must present a certificate that CA signed."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    return context


def client_context(ca: str | None) -> ssl.SSLContext:
    """A context for connecting with TLS: the server's certificate and host name are verified,
    against ``ca`` if given, else the system's trusted CAs."""
    return ssl.create_default_context(cafile=ca)
