"""``safe-rotating-server``: the command line (``python -m safe_rotating.server`` is the same)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final

from safe_rotating._version import __version__
from safe_rotating.server.config import (
    DEFAULT_FORMAT,
    DEFAULT_LISTEN,
    LOG_LEVELS,
    ConfigError,
    ServerConfig,
)
from safe_rotating.server.settings import build, load_toml

__all__ = ["CONFIG_VARIABLE", "TOKEN_VARIABLE", "main", "parser", "settings_from"]

CONFIG_VARIABLE: Final = "SAFE_ROTATING_CONFIG"  # the TOML file, when --config is not given
TOKEN_VARIABLE: Final = "SAFE_ROTATING_TOKEN"  # the token, kept off the command line (ps, history)

DESCRIPTION = """\
Receive log records over the network and write them to one rotating log file (and any routed
files), through the same rotation engine as SafeRotatingFileHandler: the file may also be
written by file-mode handlers in other processes.

Accepted: safe_rotating's LogServerHandler and the standard library's SocketHandler on --listen
(TCP or a Unix socket), DatagramHandler on --udp, syslog (RFC 5424 or RFC 3164) on --syslog-tcp
and --syslog-udp.
"""

EPILOG = f"""\
examples:
  %(prog)s --file /var/log/mysite/app.log --max-bytes 10MiB --backup-count 20
  %(prog)s --listen unix:/run/mysite/log.sock --file /var/log/mysite/app.log
  %(prog)s --file app.log --route app.db=db.log --route celery=celery.log
  %(prog)s --file app.log --syslog-udp 127.0.0.1:5514 --metrics 127.0.0.1:9021
  %(prog)s --file app.log --forward relay.example.net:6514 --forward-tls
  %(prog)s --config /etc/safe-rotating/server.toml --check-config

the default --format:
  {DEFAULT_FORMAT.replace("%", "%%")}
  (host and app are the sender's host and application; for syslog its HOSTNAME and APP-NAME;
  with --token, a host named by a sender on another machine is shown as NAME@ITS-ADDRESS)

signals: SIGTERM/SIGINT stop after writing what was received; SIGHUP/SIGUSR1 reopen the files.
configuration file: TOML, the long flags as keys with underscores (max_bytes = "10MiB",
listen = ["127.0.0.1:9020"], utc = true, [route] "app.db" = "db.log").
environment:
  {CONFIG_VARIABLE}  the configuration file, when --config is not given
  {TOKEN_VARIABLE}   the token, when neither --token nor --token-file is given
                        (it then replaces a token or token_file of the file)
precedence: a flag, then the environment, then the configuration file, then the default;
every on/off flag has a --no- form, so --no-utc overrides utc = true in the file.
systemd: with Type=notify the server sends READY=1 once every listener is bound and the writer
runs (NOTIFY_SOCKET), and STOPPING=1 when it stops; ListenStream= sockets are taken over.
exit status: 0 after a clean stop, 1 if the server could not start, 2 for a bad setting.
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="safe-rotating-server",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # --max-byte is a typo, not --max-bytes
    )
    a = p.add_argument
    where = p.add_argument_group("where records come from")
    where.add_argument(
        "--listen",
        action="append",
        metavar="ADDR",
        help="TCP HOST:PORT or unix:PATH for LogServerHandler and SocketHandler; repeatable "
        f"(default {DEFAULT_LISTEN} when no other listener is given)",
    )
    where.add_argument(
        "--udp", action="append", metavar="HOST:PORT", help="DatagramHandler pickles; repeatable"
    )
    where.add_argument(
        "--syslog-tcp", action="append", metavar="ADDR", help="syslog over TCP; repeatable"
    )
    where.add_argument(
        "--syslog-udp", action="append", metavar="HOST:PORT", help="syslog over UDP; repeatable"
    )
    out = p.add_argument_group("where records go")
    out.add_argument("--file", metavar="PATH", help="the log file (required unless in --config)")
    out.add_argument(
        "--max-bytes", metavar="SIZE", help="rotate at this size: 10MiB, 500KB, 1048576 (0: never)"
    )
    out.add_argument("--backup-count", metavar="N", help="backups kept: PATH.1 ... PATH.N")
    out.add_argument(
        "--compress",
        choices=("gzip", "zstd"),
        help="compress backups in the background (zstd needs the zstd extra)",
    )
    out.add_argument("--max-age", metavar="AGE", help="also delete backups older than: 14d, 12h")
    out.add_argument(
        "--max-total-bytes", metavar="SIZE", help="also keep the whole set under: 5GiB"
    )
    out.add_argument(
        "--when",
        metavar="WHEN",
        help="also rotate by time, on one schedule shared with file-mode handlers: S, M, H, D, "
        "MIDNIGHT, W0-W6 (backups named PATH.2026-11-27 etc., as the stdlib names them)",
    )
    out.add_argument("--interval", metavar="N", type=int, help="periods of --when per file (1)")
    out.add_argument(
        "--utc",
        action=argparse.BooleanOptionalAction,
        help="--when boundaries in UTC, not local time (default: local time)",
    )
    out.add_argument("--format", metavar="FMT", help="logging %%-style format of each line")
    out.add_argument(
        "--escape-control-characters",
        action=argparse.BooleanOptionalAction,
        help="escape control characters from the network, one record a line (the default); "
        "--no-escape-control-characters writes them raw",
    )
    out.add_argument(
        "--route",
        action="append",
        metavar="PREFIX=FILE",
        help="records of logger PREFIX (and its children) go to FILE, inside the directory of "
        "--file; repeatable, the longest prefix wins",
    )
    out.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where the journal of acknowledged batches lives (default: beside --file)",
    )
    fwd = p.add_argument_group("forwarding (a copy of every record written, to syslog relays)")
    fwd.add_argument(
        "--forward",
        action="append",
        metavar="HOST:PORT",
        help="send each record written as RFC 5424 over TCP with RFC 6587 octet counting "
        "(rsyslog imtcp, syslog-ng syslog(), Fluent Bit, Vector); repeatable",
    )
    fwd.add_argument(
        "--forward-tls",
        action=argparse.BooleanOptionalAction,
        help="forward over TLS, checking the relay's certificate and host name (default: off)",
    )
    fwd.add_argument(
        "--forward-ca", metavar="PEM", help="CA of the relays' certificates (default: the system's)"
    )
    fwd.add_argument(
        "--forward-facility",
        metavar="NAME",
        help="syslog facility of forwarded records: user (default), daemon, local0 ... local7",
    )
    fwd.add_argument(
        "--forward-queue",
        metavar="N",
        help="records kept per relay while it is down or slow (default 100000, and at most "
        "64 MiB); beyond that new records are dropped and counted",
    )
    lim = p.add_argument_group("limits")
    lim.add_argument("--max-frame", metavar="SIZE", help="largest frame accepted (default 1MiB)")
    lim.add_argument(
        "--read-timeout",
        metavar="SECONDS",
        help="longest wait for the rest of a frame once it started (default 30)",
    )
    lim.add_argument(
        "--queue-size",
        metavar="N",
        help="records waiting for the disk before readers pause (default 10000); each "
        "connection gets its share, and a burst may briefly hold up to twice this",
    )
    lim.add_argument("--max-connections", metavar="N", help="open connections at most (4096)")
    lim.add_argument(
        "--max-connections-per-peer",
        metavar="N",
        help="open connections per remote address (IPv6: per /64) and per uid on a Unix socket "
        "(default 1024: one sender cannot take all of --max-connections, while a host of many "
        "worker processes fits); loopback TCP clients all share 127.0.0.1 and are not capped "
        "this way",
    )
    lim.add_argument(
        "--hello-timeout",
        metavar="SECONDS",
        help="a new connection must complete its first frame (a hello, a stock handler's first "
        "record, a syslog message) within this long, or it is closed (default 10)",
    )
    lim.add_argument(
        "--idle-timeout",
        metavar="SECONDS",
        help="close a LogServerHandler connection that has sent nothing and is owed nothing "
        "for this long (default 300): told 'bye', it reconnects when it next has records, "
        "quietly. Idle stock-pickle and syslog connections, whose senders would lose a record, "
        "are closed so only while connections are scarce (3/4 of --max-connections in use, or "
        "the peer at --max-connections-per-peer)",
    )
    lim.add_argument(
        "--frame-memory",
        metavar="SIZE",
        help="bytes that unfinished frames of all connections together may hold (default "
        "64MiB, at least --max-frame); beyond it the connection holding the most is closed",
    )
    lim.add_argument(
        "--drain-timeout", metavar="SECONDS", help="longest shutdown drain (default 5)"
    )
    sec = p.add_argument_group("security")
    sec.add_argument(
        "--token",
        help="shared secret every LogServerHandler hello must carry (--token-file or "
        f"{TOKEN_VARIABLE} keep it out of ps and the shell history); inputs that cannot carry "
        "it (syslog, --udp, stock SocketHandler pickles) then take only --allow-untokened peers, "
        "and a name a remote sender gives is shown as NAME@ITS-ADDRESS",
    )
    sec.add_argument("--token-file", metavar="PATH", help="read the token from PATH (preferred)")
    sec.add_argument("--tls-cert", metavar="PEM", help="serve TCP listeners over TLS")
    sec.add_argument("--tls-key", metavar="PEM", help="the key of --tls-cert, if not in it")
    sec.add_argument(
        "--tls-client-ca", metavar="PEM", help="require client certificates signed by this CA"
    )
    sec.add_argument(
        "--allow-remote-pickle",
        action=argparse.BooleanOptionalAction,
        help="accept SocketHandler/DatagramHandler pickles from other machines (they are read "
        "without running code, but the default keeps them local)",
    )
    sec.add_argument(
        "--allow-untokened",
        action="append",
        metavar="NET|uid:USER",
        help="with --token: a network (10.1.2.0/24, 127.0.0.1) or, on Unix sockets, a uid "
        "(uid:www-data, uid:33) whose syslog, --udp and stock-pickle records are taken without "
        "the token; repeatable. Required with --token for --udp and --syslog-* listeners: the "
        "server refuses to start otherwise (UDP source addresses can be forged off-host)",
    )
    sec.add_argument(
        "--unix-mode", metavar="MODE", help="permissions of Unix sockets (default 0600)"
    )
    ops = p.add_argument_group("operations")
    ops.add_argument(
        "--metrics", metavar="HOST:PORT", help="serve /metrics (Prometheus) and /healthz"
    )
    ops.add_argument(
        "--config",
        metavar="TOML",
        help=f"read settings from a TOML file (default: ${CONFIG_VARIABLE}, if set)",
    )
    ops.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        help="the least severe of the server's own messages shown on stderr (default INFO); "
        "the records it writes are never filtered by it",
    )
    ops.add_argument(
        "--check-config",
        action="store_true",
        help="check the settings, print them, exit 0 (or 2 with the problem)",
    )
    a("--version", action="version", version=f"safe-rotating-server {__version__}")
    return p


def settings_from(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ
) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings (a flag wins over the environment, which wins over the TOML file), and how
    the user wrote each one that did not come from the file (``max_bytes`` -> ``--max-bytes``),
    so that an error names it as written."""
    names: dict[str, str] = {}
    path = args.config or environ.get(CONFIG_VARIABLE)
    try:
        settings: dict[str, Any] = load_toml(path) if path else {}
    except ConfigError as exc:
        if args.config:
            raise
        raise ConfigError(f"{CONFIG_VARIABLE}: {exc}") from None
    given = {
        key: value
        for key, value in vars(args).items()
        if key not in ("config", "check_config") and value is not None
    }
    # token and token_file are one setting given two ways: the higher source replaces both.
    token = environ.get(TOKEN_VARIABLE)
    if token and not ("token" in given or "token_file" in given):
        settings.pop("token_file", None)
        settings["token"] = token
        names["token"] = TOKEN_VARIABLE
    elif "token" in given or "token_file" in given:
        settings.pop("token", None)
        settings.pop("token_file", None)
    for key, value in given.items():
        settings[key] = value
        names[key] = "--" + key.replace("_", "-")
    return settings, names


def configure_diagnostics(level: str) -> logging.Logger:
    """The server's own messages go to stderr (those at ``level`` and above), never into the
    log file it writes."""
    log = logging.getLogger("safe_rotating.server")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s safe-rotating-server %(levelname)s: %(message)s")
    )
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.addHandler(handler)
    asyncio_log.setLevel(logging.ERROR)
    return log


def raise_file_limit() -> None:
    """Each connection is a descriptor: use the hard limit, not the (often 1024) soft one."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ImportError, ValueError, OSError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config: ServerConfig = build(*settings_from(args))
    except ConfigError as exc:
        print(f"safe-rotating-server: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        for warning in config.warnings():
            print(f"safe-rotating-server: warning: {warning}", file=sys.stderr)
        sys.stdout.write(config.describe())
        return 0
    log = configure_diagnostics(config.log_level)
    for warning in config.warnings():
        log.warning("%s", warning)
    raise_file_limit()
    from safe_rotating.server.app import Server  # the event loop machinery only when serving

    server = Server(config, log)
    try:
        return asyncio.run(server.run())
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
