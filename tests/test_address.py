"""One address grammar for the client, the server's listeners, --forward and --metrics."""

from __future__ import annotations

import socket

import pytest

from safe_rotating._client.options import parse_address as client_address
from safe_rotating._net.address import Address, AddressError, parse_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9020", Address(host="127.0.0.1", port=9020)),
        (" localhost:1 ", Address(host="localhost", port=1)),
        ("[::1]:9020", Address(host="::1", port=9020)),
        ("[fe80::1%eth0]:9020", Address(host="fe80::1%eth0", port=9020)),
        ("unix:/run/app/log.sock", Address(path="/run/app/log.sock")),
    ],
)
def test_addresses_as_people_write_them(text: str, expected: Address) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("9020", "'9020' has no port"),
        ("::1:9020", "IPv6 address goes in brackets"),
        ("[::1]9020", r"must look like '\[::1\]:9020'"),
        ("[example.com]:9020", "'example.com' in brackets is not an IPv6 address"),
        ("a b:1", "'a b' is not a host name"),
        (":9020", "has no host"),
        ("host:http", "the port must be a number from 1 to 65535"),
        ("host:70000", "the port must be a number from 1 to 65535"),
        ("host:٣", "the port must be a number"),  # a digit, but not an ASCII one
        ("unix:", "names no socket path"),
        ("unix:/" + "x" * 200, "at most 107 bytes"),
    ],
)
def test_a_bad_address_says_what_is_wrong_and_quotes_it_first(text: str, message: str) -> None:
    with pytest.raises(AddressError, match=message) as caught:
        parse_address(text)
    assert str(caught.value).startswith(repr(text.strip()))


def test_a_unix_socket_is_refused_where_it_cannot_be() -> None:
    with pytest.raises(AddressError, match="Unix socket is not possible here"):
        parse_address("unix:/run/x.sock", unix=False)


def test_the_client_uses_the_same_grammar_and_names_its_argument() -> None:
    assert client_address("[::1]:9020") == (socket.AF_INET, ("::1", 9020))
    assert client_address("unix:/run/x.sock") == (socket.AF_UNIX, "/run/x.sock")
    with pytest.raises(ValueError, match=r"^address='a b:1': 'a b' is not a host name"):
        client_address("a b:1")
