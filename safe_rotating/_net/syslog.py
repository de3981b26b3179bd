"""Syslog in and out: RFC 5424 and RFC 3164 parsing, RFC 6587 TCP framing, RFC 5424 output.

Parsing is lenient, as receivers must be: the messages that Python's ``SysLogHandler``
(``<PRI>ident: msg``, no timestamp, no host), util-linux ``logger`` (either RFC) and syslog-ng's
``loggen`` send all become records; a message that fits no shape still becomes a record with the
whole text as its message.

A TCP connection's framing (RFC 6587) is told apart once per message start and settled once per
connection: octet counting (``LEN SP MSG``, a count that may be zero-padded), or a terminator —
LF (``logger``, rsyslog) or NUL (Python's ``SysLogHandler``, which sends tracebacks with embedded
line feeds and ends each message with a NUL).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Final

from safe_rotating._net.wire import ProtocolError

__all__ = [
    "DEFAULT_MAX_MESSAGE",
    "LEVELS",
    "SyslogFramer",
    "SyslogMessage",
    "format_rfc5424",
    "octet_frame",
    "parse",
    "severity_of",
]

DEFAULT_MAX_MESSAGE: Final = 64 * 1024
# Severity (0 emerg ... 7 debug) to a logging level.
LEVELS: Final = (
    logging.CRITICAL,
    logging.CRITICAL,
    logging.CRITICAL,
    logging.ERROR,
    logging.WARNING,
    logging.INFO,
    logging.INFO,
    logging.DEBUG,
)
_NIL: Final = "-"
_BOM: Final = "\ufeff"


@dataclass
class SyslogMessage:
    """One parsed message. ``None`` (or ``-`` in the text) means the sender gave no value."""

    facility: int
    severity: int
    message: str
    timestamp: float | None = None
    hostname: str | None = None
    app: str | None = None
    procid: str | None = None
    msgid: str | None = None
    structured_data: str | None = None
    rfc: int = 3164
    extra: dict[str, Any] = field(default_factory=dict)

    def to_record(self, received: float, peer_host: str) -> dict[str, Any]:
        """The flat record of docs/protocol.md, with ``host`` and ``app`` filled in."""
        level = LEVELS[self.severity]
        process: int | None = None
        if self.procid is not None and self.procid.isdigit() and len(self.procid) < 19:
            process = int(self.procid)
        extra: dict[str, Any] = {"syslog_facility": self.facility}
        extra["syslog_severity"] = self.severity
        if self.msgid is not None:
            extra["msgid"] = self.msgid
        if self.structured_data is not None:
            extra["structured_data"] = self.structured_data
        if self.procid is not None and process is None:
            extra["procid"] = self.procid
        return {
            "created": self.timestamp if self.timestamp is not None else received,
            "name": self.app or "syslog",
            "levelno": level,
            "levelname": logging.getLevelName(level),
            "msg": self.message,
            "process": process,
            "processName": None,
            "exc_text": None,
            "stack_info": None,
            "host": self.hostname or peer_host,
            "app": self.app or _NIL,
            "extra": extra,
        }


def severity_of(levelno: int) -> int:
    """The syslog severity of a logging level (CRITICAL→2, ERROR→3, WARNING→4, INFO→6, DEBUG→7)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


# -- parsing ---------------------------------------------------------------------------------
_PRI: Final = re.compile(r"<(\d{1,3})>")
_COUNTED: Final = re.compile(rb"(\d{1,10}) (?=<)")
_5424_HEAD: Final = re.compile(r"(1) (-|\d{4}-\d\d-\d\d[Tt]\S+) (\S+) (\S+) (\S+) (\S+) ?")
_RFC3339: Final = re.compile(
    r"(\d{4}-\d\d-\d\d)[Tt ](\d\d:\d\d:\d\d)(?:\.(\d+))?([Zz]|[+-]\d\d:?\d\d)?"
)
_BSD_TIME: Final = re.compile(
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +(\d{1,2}) "
    r"(\d\d):(\d\d):(\d\d)(?:\.\d+)?(?: (\d{4}))?(?=[ :])[ :]?"
)
_ISO_TIME: Final = re.compile(
    r"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?) "
)
_TAG: Final = re.compile(r"([^\s:\[\]]{1,64})(?:\[([^\]\s]{1,128})\])?: ?")
_MONTHS: Final = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)


def _nil(value: str) -> str | None:
    return None if value == _NIL else value


def parse_rfc3339(text: str) -> float | None:
    """Seconds since the epoch of an RFC 3339 timestamp (no zone: local time), or ``None``."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    day, clock, fraction, zone = match.groups()
    try:
        moment = datetime.fromisoformat(f"{day}T{clock}")
    except ValueError:
        return None
    moment = moment.replace(microsecond=int((fraction or "0")[:6].ljust(6, "0")))
    if zone in ("Z", "z"):
        moment = moment.replace(tzinfo=timezone.utc)
    elif zone:
        sign = -1 if zone[0] == "-" else 1
        hours, minutes = int(zone[1:3]), int(zone[-2:])
        if hours > 23 or minutes > 59:
            return None
        offset = timedelta(hours=hours, minutes=minutes) * sign
        moment = moment.replace(tzinfo=timezone(offset))
    return moment.timestamp()


def _bsd_time(match: re.Match[str], now: float) -> float | None:
    month = _MONTHS.index(match.group(1)) + 1
    day, hour, minute, second = (int(match.group(i)) for i in range(2, 6))
    year_text = match.group(6)
    year = int(year_text) if year_text else time.localtime(now).tm_year
    try:
        moment = datetime(year, month, day, hour, minute, second).timestamp()
    except ValueError:
        return None
    if not year_text and moment > now + 86400:  # December's message read in January
        try:
            moment = datetime(year - 1, month, day, hour, minute, second).timestamp()
        except ValueError:
            return None
    return moment


def _looks_like_host(word: str) -> bool:
    return bool(word) and not word.endswith(":") and "[" not in word and len(word) <= 255


def parse(data: bytes, now: float | None = None) -> SyslogMessage:
    """One syslog message (without its framing), RFC 5424 or RFC 3164, parsed leniently."""
    if now is None:
        now = time.time()
    counted = _COUNTED.match(data)
    if counted is not None and int(counted.group(1)) == len(data) - counted.end():
        data = data[counted.end() :]  # octet counting inside a datagram (logger --octet-count)
    text = data.decode("utf-8", "replace").rstrip("\x00\r\n")
    pri = 13  # RFC 3164 4.3.3: a relay assumes user.notice when there is no PRI
    match = _PRI.match(text)
    if match is not None and int(match.group(1)) <= 191:
        pri = int(match.group(1))
        text = text[match.end() :]
    facility, severity = divmod(pri, 8)
    head = _5424_HEAD.match(text)
    if head is not None:
        return _parse_5424(text, head, facility, severity)
    return _parse_3164(text, facility, severity, now)


def _parse_5424(text: str, head: re.Match[str], facility: int, severity: int) -> SyslogMessage:
    _, stamp, host, app, procid, msgid = head.groups()
    rest = text[head.end() :]
    structured, rest = _split_structured(rest)
    if rest.startswith(" "):
        rest = rest[1:]
    return SyslogMessage(
        facility,
        severity,
        rest.removeprefix(_BOM),
        timestamp=None if stamp == _NIL else parse_rfc3339(stamp),
        hostname=_nil(host),
        app=_nil(app),
        procid=_nil(procid),
        msgid=_nil(msgid),
        structured_data=structured,
        rfc=5424,
    )


def _split_structured(rest: str) -> tuple[str | None, str]:
    """``(STRUCTURED-DATA or None, what follows)``; escapes ``\\"``, ``\\\\``, ``\\]`` honoured."""
    if rest.startswith(_NIL) and (len(rest) == 1 or rest[1] == " "):
        return None, rest[1:]
    if not rest.startswith("["):
        return None, rest  # not valid 5424; keep everything as the message
    i, n = 0, len(rest)
    while i < n and rest[i] == "[":
        quoted = False
        i += 1
        while i < n:
            ch = rest[i]
            if ch == "\\" and quoted:
                i += 2
                continue
            if ch == '"':
                quoted = not quoted
            elif ch == "]" and not quoted:
                break
            i += 1
        i += 1
    return rest[:i], rest[i:]


def _parse_3164(text: str, facility: int, severity: int, now: float) -> SyslogMessage:
    timestamp: float | None = None
    hostname: str | None = None
    stamp = _BSD_TIME.match(text)
    iso = _ISO_TIME.match(text) if stamp is None else None
    if stamp is not None:
        timestamp = _bsd_time(stamp, now)
        text = text[stamp.end() :].lstrip(" ")
    elif iso is not None:
        timestamp = parse_rfc3339(iso.group(1))
        text = text[iso.end() :]
    if stamp is not None or iso is not None:
        word, _, rest = text.partition(" ")
        if rest and _looks_like_host(word):
            hostname, text = word, rest
    app: str | None = None
    procid: str | None = None
    tag = _TAG.match(text)
    if tag is not None:
        app, procid = tag.group(1), tag.group(2)
        text = text[tag.end() :]
    return SyslogMessage(
        facility,
        severity,
        text.removeprefix(_BOM),
        timestamp=timestamp,
        hostname=hostname,
        app=app,
        procid=procid,
        rfc=3164,
    )


# -- TCP framing (RFC 6587) --------------------------------------------------------------------
class SyslogFramer:
    """Split one TCP connection's bytes into syslog messages.

    A message that starts with a digit is octet-counted. Otherwise it runs up to a terminator,
    which is settled on the connection's first terminated message: NUL if the first NUL comes
    before any line feed that ends a message (a line feed at the end of the data or followed by
    ``<``), else LF. Raises :class:`ProtocolError` for a message over ``max_message`` bytes.
    """

    def __init__(self, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self.max_message = max_message
        self._buffer = bytearray()
        self.terminator: bytes | None = None  # b"\n" or b"\0" once settled

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def messages(self) -> Iterator[bytes]:
        buffer = self._buffer
        while True:
            skip = 0  # blank lines and stray terminators between messages
            while skip < len(buffer) and buffer[skip] in b"\r\n\x00 ":
                skip += 1
            if skip:
                del buffer[:skip]
            if not buffer:
                return
            counted = 0x30 <= buffer[0] <= 0x39  # a digit: RFC 6587 octet counting
            message = self._counted() if counted else self._terminated()
            if message is None:
                return
            yield message

    def _counted(self) -> bytes | None:
        buffer = self._buffer
        space = buffer.find(b" ", 0, 12)
        if space < 0:
            if len(buffer) >= 12 or not buffer.isdigit():
                raise ProtocolError("bad octet count", "an octet count that is not digits")
            return None
        digits = bytes(buffer[:space])
        if not digits.isdigit():
            raise ProtocolError("bad octet count", f"an octet count of {digits[:12]!r}")
        size = int(digits)
        if size > self.max_message:
            raise ProtocolError(
                "message too large",
                f"a syslog message of {size} bytes is over the limit of {self.max_message}",
            )
        end = space + 1 + size
        if len(buffer) < end:
            return None
        message = bytes(buffer[space + 1 : end])
        del buffer[:end]
        return message

    def _terminated(self) -> bytes | None:
        buffer = self._buffer
        if self.terminator is None:
            self.terminator = self._settle()
            if self.terminator is None:
                self._check_size(len(buffer))
                return None
        end = buffer.find(self.terminator)
        if end < 0:
            self._check_size(len(buffer))
            return None
        self._check_size(end)
        message = bytes(buffer[:end])
        del buffer[: end + 1]
        return message

    def _settle(self) -> bytes | None:
        buffer = self._buffer
        nul = buffer.find(b"\0")
        start = 0
        while True:
            lf = buffer.find(b"\n", start)
            if lf < 0 or (nul >= 0 and nul < lf):
                return b"\0" if nul >= 0 else None
            if lf == len(buffer) - 1 or buffer[lf + 1 : lf + 2] == b"<":
                return b"\n"
            start = lf + 1

    def _check_size(self, size: int) -> None:
        if size > self.max_message:
            raise ProtocolError(
                "message too large",
                f"a syslog message of more than {self.max_message} bytes without a terminator",
            )

    def rest(self) -> bytes | None:
        """What is left when the connection closes: a last unterminated message, if any."""
        data = bytes(self._buffer).strip(b"\r\n\x00 ")
        self._buffer.clear()
        return data or None


# -- output ----------------------------------------------------------------------------------
def _field(value: Any, limit: int) -> str:
    """An RFC 5424 header field: printable US-ASCII without spaces, or ``-``."""
    if value is None:
        return _NIL
    text = "".join(ch if "!" <= ch <= "~" else "_" for ch in str(value))[:limit]
    return text or _NIL


def format_rfc5424(
    record: Mapping[str, Any],
    *,
    facility: int = 1,
    hostname: str | None = None,
    app: str | None = None,
    msgid: str | None = None,
) -> bytes:
    """``<PRI>1 TIMESTAMP HOST APP PROCID MSGID - MSG`` for a flat record (docs/protocol.md).

    ``APP`` is the logger name unless ``app`` is given; ``HOST`` the record's ``host`` unless
    ``hostname`` is given. A traceback stays inside MSG, after the message.
    """
    levelno = record.get("levelno")
    severity = severity_of(levelno if isinstance(levelno, int) else logging.INFO)
    created = record.get("created")
    stamp = _NIL
    if isinstance(created, int | float) and not isinstance(created, bool):
        try:
            moment = datetime.fromtimestamp(created, timezone.utc)
            stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        except (OverflowError, OSError, ValueError):  # inf, NaN, out of datetime's years
            pass  # the NILVALUE: the receiver stamps it
    message = str(record.get("msg", ""))
    for key in ("exc_text", "stack_info"):
        if record.get(key):
            message += "\n" + str(record[key])
    header = " ".join(
        (
            f"<{facility * 8 + severity}>1",
            stamp,
            _field(hostname if hostname is not None else record.get("host"), 255),
            _field(app if app is not None else record.get("name"), 48),
            _field(record.get("process"), 128),
            _field(msgid, 32),
            _NIL,
        )
    )
    return (header + " " + message).encode("utf-8", "backslashreplace")


def octet_frame(message: bytes) -> bytes:
    """RFC 6587 octet counting: ``LEN SP MSG``."""
    return b"%d %s" % (len(message), message)
