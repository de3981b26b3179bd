"""The process id cache behind the hot paths' fork checks is cleared by every kind of fork."""

from __future__ import annotations

import os

import pytest

from safe_rotating._common.forksafe import PID_CELL, WIPED_ON_FORK, current_pid
from tests.test_fork_libc import FORKS

pytestmark = pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")


def test_current_pid_is_the_process_id() -> None:
    assert current_pid() == os.getpid()
    if WIPED_ON_FORK:
        assert PID_CELL[0] == os.getpid()


def test_the_kernel_clears_the_cell_on_linux() -> None:
    """On Linux >= 4.14 the cell is used; elsewhere it always reads zero (slower, not wrong)."""
    if os.uname().sysname == "Linux":
        assert WIPED_ON_FORK


@pytest.mark.parametrize("how", sorted(FORKS))
def test_a_child_sees_its_own_pid(how: str) -> None:
    parent = current_pid()
    read, write = os.pipe()
    pid = FORKS[how]()
    if pid == 0:  # the child: report what the cell held, then what current_pid() says
        try:
            os.write(write, f"{PID_CELL[0]} {current_pid()} {os.getpid()}".encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        seen = os.read(read, 100).decode().split()
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    cell, cached, real = (int(x) for x in seen)
    assert cell == 0  # the kernel handed the child a zeroed page, whichever way it forked
    assert cached == real == pid != parent
    assert current_pid() == parent  # the parent's cell is untouched
