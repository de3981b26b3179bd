"""``safe-rotating-spools``: list and send client spools that no live process owns.

A ``LogServerHandler`` keeps what the log server has not acknowledged in a spool file, and
delivers it before its process ends whenever the server can be reached within
``flush_timeout``. A spool is left behind when it cannot be: the server was down when the last
process on a host (or the last one of a deploy) ended, or a process was killed. The next
process that logs to the same address with the same spool directory delivers it; this command
does it without waiting for one. Records keep the identity (host, app, pid) of the process that
logged them, and the server's journal (``last_seq``) still skips what it already wrote.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from safe_rotating._client import spool as _spool
from safe_rotating._client.sender import Sender
from safe_rotating._common import osfiles as _safefs
from safe_rotating.client import LogServerHandler

__all__ = ["SpoolInfo", "find_spools", "main"]

_DESCRIPTION = """\
List and send the spools of LogServerHandler clients that no live process owns.

A LogServerHandler keeps the records the log server has not acknowledged in a spool file and
delivers them before its process ends, if the server can be reached within flush_timeout.
When it cannot (the server was down when the last process on this host ended, a deploy, a
killed process), the spool stays behind until the next process logging to the same address
starts. This command delivers it now.

Spools live in one subdirectory per server address of the spool root: by default
$XDG_RUNTIME_DIR/safe_rotating, else /tmp/safe_rotating-<uid> (a private
/tmp/safe_rotating-<uid>.<hex> beside it if another user took that name), or the handler's
spool_dir. Run this command as the user the application runs as: each user has its own root.
"""

_EPILOG = """\
examples:
  safe-rotating-spools list
  safe-rotating-spools list --all --spool-dir /var/lib/mysite/spool
  safe-rotating-spools send --address 127.0.0.1:9020
  safe-rotating-spools send --address unix:/run/mysite/log.sock --token-file /etc/mysite/token

exit status: 0 everything listed or delivered; 1 some spool could not be delivered (the
server did not take it: it stays for a later attempt); 2 usage error.
"""


@dataclass
class SpoolInfo:
    """One client's spool as found on disk."""

    directory: str
    client: str
    live: bool  # its lock is held: a running process owns it
    segments: int
    size: int  # bytes
    modified: float  # newest segment's mtime (0 without segments)
    identity: _spool.Identity | None

    @property
    def address(self) -> str:
        """The address its records were meant for (from the lock file), else the directory."""
        if self.identity is not None:
            return self.identity.address
        return "? (directory " + os.path.basename(self.directory) + ")"


def _roots(spool_dir: str | None) -> tuple[str, bool]:
    if spool_dir is None:
        return _spool.default_spool_root(), True
    return os.path.abspath(spool_dir), False


def _address_directories(root: str, default: bool) -> list[str]:
    """Every per-address spool directory under ``root`` (and the private roots beside a
    squatted default root)."""
    roots = [root, *_spool.fallback_roots(root)] if default else [root]
    found: list[str] = []
    for each in roots:
        try:
            names = sorted(os.listdir(each))
        except OSError:
            continue
        for name in names:
            directory = os.path.join(each, name)
            if name.startswith(("tcp-", "unix-")) and _spool.spool_directories(each, name, False):
                found.append(directory)
    return found


def find_spools(spool_dir: str | None = None) -> Iterator[SpoolInfo]:
    """Every client spool under ``spool_dir`` (default: this user's default root), live or not.

    Whether a spool is live is asked of its lock without waiting: a spool whose lock is held
    belongs to a running process (its own sender delivers it)."""
    root, default = _roots(spool_dir)
    for directory in _address_directories(root, default):
        yield from _spools_in(directory)


def _spools_in(directory: str) -> Iterator[SpoolInfo]:
    try:
        names = os.listdir(directory)
    except OSError:
        return
    segments: dict[str, list[os.stat_result]] = {}
    clients: set[str] = set()
    for name in names:
        match = _spool._SEGMENT.match(name)
        if match:
            with contextlib.suppress(OSError):
                segments.setdefault(match.group(1), []).append(
                    os.lstat(os.path.join(directory, name))
                )
            clients.add(match.group(1))
        elif (match := _spool._LOCK.match(name)) is not None:
            clients.add(match.group(1))
    for client in sorted(clients):
        identity = None
        live = False
        lock_path = os.path.join(directory, f"{client}.lock")
        fd = _spool._lock_existing(lock_path)
        if fd is not None:
            try:
                identity = _spool.read_identity(fd)
            finally:
                os.close(fd)
        elif os.path.lexists(lock_path):
            live = True  # held by its owner (or by a client claiming it right now)
            with contextlib.suppress(OSError):
                peek = _safefs.open_to_read(lock_path, "a spool lock")[0]
                try:
                    identity = _spool.read_identity(peek)
                finally:
                    os.close(peek)
        stats = segments.get(client, [])
        yield SpoolInfo(
            directory,
            client,
            live,
            len(stats),
            sum(st.st_size for st in stats),
            max((st.st_mtime for st in stats), default=0.0),
            identity,
        )


def _describe(info: SpoolInfo) -> str:
    who = info.identity
    by = f"pid {who.pid} on {who.host}, app {who.app}" if who else "logged by an unknown process"
    age = ""
    if info.modified:
        age = f", last written {_ago(time.time() - info.modified)} ago"
    state = "LIVE (its process delivers it)" if info.live else "leftover"
    return (
        f"{os.path.join(info.directory, info.client)}: {state}, for {info.address}, "
        f"{info.segments} file(s), {info.size} bytes{age}; {by}"
    )


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _list(args: argparse.Namespace) -> int:
    shown = 0
    for info in find_spools(args.spool_dir):
        if info.live and not args.all:
            continue
        print(_describe(info))
        shown += 1
    if not shown:
        root, _ = _roots(args.spool_dir)
        what = "spools" if args.all else "leftover spools"
        print(f"no {what} under {root}")
    return 0


def _send(args: argparse.Namespace) -> int:
    token = args.token
    if args.token_file is not None:
        try:
            with open(args.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            print(f"safe-rotating-spools: cannot read --token-file: {exc}", file=sys.stderr)
            return 2
    try:
        handler = LogServerHandler(
            args.address,
            token=token,
            tls=args.tls,
            tls_ca=args.tls_ca,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_server_hostname=args.tls_server_hostname,
            spool_dir=args.spool_dir,
            ack_timeout=args.timeout,
        )
    except (TypeError, ValueError) as exc:
        print(f"safe-rotating-spools: {exc}", file=sys.stderr)
        return 2
    config = handler._config
    assert config.spool_root is not None
    problems: list[str] = []

    def report(problem: BaseException) -> None:
        problems.append(str(problem))

    def dropped(count: int, reason: str) -> None:
        problems.append(f"{count} record(s) dropped: {reason}")

    # A Sender with no thread: only its replay of dead spools is used.
    sender = Sender(config, report, dropped, None)
    key = _spool.address_key(config.address)
    directories = _spool.spool_directories(config.spool_root, key, config.spool_root_is_default)
    delivered = failed = 0
    for directory in directories:
        for dead in _spool.claim_dead(directory, set()):
            before = sender.replay.acked
            done = False
            try:
                done = not dead.segments or sender.replay.replay_one(dead)
            finally:
                if done:
                    dead.remove()
                else:
                    dead.release()
            records = sender.replay.acked - before
            where = os.path.join(directory, dead.client)
            if done:
                delivered += 1
                print(f"{where}: delivered ({records} record(s) sent)")
            else:
                failed += 1
                print(f"{where}: NOT delivered, kept for a later attempt ({records} sent)")
    for problem in problems:
        print(f"safe-rotating-spools: {problem}", file=sys.stderr)
    if failed:
        print(
            f"safe-rotating-spools: {failed} spool(s) could not be delivered to {args.address}: "
            "is the server running and reachable (and the token right)?",
            file=sys.stderr,
        )
        return 1
    if not delivered:
        print(f"no leftover spools for {args.address} in {', '.join(directories) or 'none'}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="safe-rotating-spools",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    spool_help = (
        "the spool root the application uses (its handler's spool_dir); default: this "
        "user's default root"
    )
    listing = commands.add_parser(
        "list",
        help="show the spools no live process owns",
        description="Show each leftover spool: where it is, the address it was meant for, its "
        "size, when it was last written, and the process that logged it.",
        allow_abbrev=False,
    )
    listing.add_argument("--spool-dir", metavar="DIR", help=spool_help)
    listing.add_argument(
        "--all", action="store_true", help="also show spools that running processes own"
    )
    listing.set_defaults(run=_list)
    sending = commands.add_parser(
        "send",
        help="deliver the leftover spools of one server address",
        description="Deliver every leftover spool of ADDRESS to the server there, in order, under "
        "the identity of the process that logged it; each spool is removed once the server "
        "acknowledged all of it. Spools of running processes are left to them.",
        allow_abbrev=False,
    )
    sending.add_argument(
        "--address",
        required=True,
        help="the server address, as in the handler's address: HOST:PORT, [IPv6]:PORT or "
        "unix:/path (also selects the spools: one directory per address)",
    )
    sending.add_argument("--spool-dir", metavar="DIR", help=spool_help)
    sending.add_argument("--token", help="the shared secret, for a server started with --token")
    sending.add_argument("--token-file", metavar="FILE", help="read the token from FILE")
    sending.add_argument("--tls", action="store_true", help="connect with TLS")
    sending.add_argument("--tls-ca", metavar="FILE", help="CA bundle to verify the server with")
    sending.add_argument("--tls-cert", metavar="FILE", help="client certificate")
    sending.add_argument("--tls-key", metavar="FILE", help="client certificate's key")
    sending.add_argument("--tls-server-hostname", metavar="NAME", help="name to verify")
    sending.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="longest wait for a connection or an acknowledgement (default 5)",
    )
    sending.set_defaults(run=_send)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``safe-rotating-spools``."""
    args = _parser().parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
