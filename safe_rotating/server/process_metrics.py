"""``safe_rotating_build_info`` and the standard ``process_*`` series of ``/metrics``.

The names and meanings are the ones every Prometheus exporter uses (the official client's
process collector), so the usual dashboards and alerts work unchanged. They are read at each
scrape: CPU time from ``os.times()``; memory, descriptors and the start time from ``/proc``
(Linux). Where ``/proc`` is missing those series are left out rather than reported as 0.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Final

from safe_rotating._version import __version__
from safe_rotating.server.prometheus import family, label

__all__ = ["build_info", "process_families"]

_PROC: Final = Path("/proc")


def build_info() -> list[str]:
    """``safe_rotating_build_info{version, python} 1``: which release serves, on which Python."""
    labels = f'{{version="{label(__version__)}",python="{label(platform.python_version())}"}}'
    return family(
        "build_info",
        "gauge",
        "Always 1; the labels name the safe_rotating release and the Python running it.",
        [(labels, 1)],
        prefix="safe_rotating_",
    )


def _start_time(proc: Path) -> float:
    """Seconds since the epoch at which this process started: its start in clock ticks after
    boot (``/proc/self/stat``, field 22) plus the boot time (``btime`` in ``/proc/stat``)."""
    # The command name (field 2) may hold spaces and parentheses: count fields after its ')'.
    fields = (proc / "self" / "stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[19])
    for line in (proc / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return int(line.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")
    raise OSError("no btime in /proc/stat")


def _resident_bytes(proc: Path) -> float:
    pages = int((proc / "self" / "statm").read_text().split()[1])
    return float(pages * os.sysconf("SC_PAGE_SIZE"))


def _open_fds(proc: Path) -> float:
    return float(len(os.listdir(proc / "self" / "fd")))


def process_families(proc: Path = _PROC) -> list[str]:
    """The ``process_*`` families of this process (those ``/proc`` can give, on Linux)."""
    times = os.times()
    out = family(
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time spent by the server, in seconds.",
        [("", times.user + times.system)],
        prefix="",
    )
    read: list[tuple[str, str, str, Callable[[Path], float]]] = [
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size, in bytes.",
            _resident_bytes,
        ),
        ("process_open_fds", "gauge", "Open file descriptors.", _open_fds),
        (
            "process_start_time_seconds",
            "gauge",
            "When the server started, in seconds since the Unix epoch.",
            _start_time,
        ),
    ]
    for name, kind, help_text, reader in read:
        try:
            value = reader(proc)
        except (OSError, ValueError, IndexError):  # no /proc (not Linux), or an odd one
            continue
        out += family(name, kind, help_text, [("", value)], prefix="")
    return out
