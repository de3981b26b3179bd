"""examples/django_site/README.md, followed word for word: every ``bash`` block runs as written.

The blocks run, in order, in a copy of the repository's layout (the example directory, the
package beside it for ``uwsgi.ini``'s include, ``pyproject.toml`` and ``.gitignore``), each in a
fresh ``bash`` that starts where the previous block ended (so the set-up block's ``cd`` counts).
Only the set-up's venv and ``pip install`` lines are left out: this interpreter's environment
stands in for the new venv (its ``bin`` first on ``PATH``, ``VIRTUAL_ENV`` set, as ``activate``
does), after checking that the extras the ``pip`` line names exist and are installed here.

A comment just before a block says how to run it:

- ``<!-- test: background, wait=HOST:PORT, needs=PROGRAM -->``: a server, started in its own
  process group and left running while the following blocks run; ``wait`` makes the test wait
  until it accepts connections (and fail if something already listens there). Background blocks
  are stopped as a terminal's Ctrl-C would (``SIGINT`` to the process group), newest first, at
  the next heading. Without ``PROGRAM`` on ``PATH`` the rest of the section is not run and the
  test ends skipped (a failure under ``CI=true``, see ``tests/ci_skips.py``).
- ``<!-- test: skip, REASON -->``: not run.

Then the log files must hold what the README promises: every record of every request and task.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from safe_rotating.verify import parse_request_line, request_line_pattern

toml = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")

pytest.importorskip("django")
pytest.importorskip("celery")
pytest.importorskip("gunicorn")
pytestmark = pytest.mark.multiprocess

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = Path("examples") / "django_site"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
BLOCK_TIMEOUT = 60.0
# A person reads the output before pressing Ctrl-C. Without that pause, gunicorn's quick shutdown
# (SIGINT) can catch a worker still writing the access log line of a request it has answered,
# and it prints that traceback (seen about one run in five).
SETTLE = 1.0

# The set-up lines this test may leave out: the new venv is replaced by this interpreter's.
VENV_LINE = re.compile(r"python3 -m venv \.venv")
ACTIVATE_LINE = re.compile(r"(\.|source) \.venv/bin/activate")
PIP_LINE = re.compile(r"pip install -e '\.\[(?P<extras>[\w,-]+)\]'(?P<more>( [\w.-]+)*)")

# What following the README leaves in the logs: records of each request id, by file.
EXPECTED_REQUESTS = {"logs/app.log": {1: 100, 2: 100, 3: 100, 4: 100}, "logs/server.log": {5: 100}}
UWSGI_REQUESTS = {3}  # the README's uWSGI section
EXPECTED_LINES = [
    "logdemo.views: index requested",  # DEBUG
    "logdemo.views: index served to 127.0.0.1",  # INFO
    "WARNING [",
    "logdemo.views: a warning was asked for: hello",
    "django.request: Internal Server Error: /fail",
    "RuntimeError: logdemo.views.fail raised on purpose",
]


@dataclass(frozen=True)
class Block:
    """One ``bash`` block of the README and what its ``<!-- test: -->`` comment says."""

    code: str
    heading: str
    line: int
    kind: str = "run"  # run, background or skip
    options: dict[str, str] = field(default_factory=dict)


def parse_readme(text: str) -> list[Block]:
    blocks: list[Block] = []
    heading, marker = "", ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            end = lines.index("```", i + 1)
            if line == "```bash":
                kind, _, rest = marker.partition(",")
                options = dict(o.strip().split("=", 1) for o in rest.split(",") if "=" in o)
                code = "\n".join(lines[i + 1 : end]) + "\n"
                blocks.append(Block(code, heading, i + 1, kind or "run", options))
            marker, i = "", end + 1
            continue
        if line.startswith("#"):
            heading = line
        found = re.fullmatch(r"<!-- test: (.*) -->", line)
        marker = found.group(1) if found else ("" if line.strip() else marker)
        i += 1
    return blocks


def accepting(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def without_install_lines(code: str) -> str:
    """The block minus the venv, activate and pip lines, after checking what pip would install."""
    kept = []
    for line in code.splitlines():
        pip = PIP_LINE.fullmatch(line)
        if pip:
            extras = toml.loads((ROOT / "pyproject.toml").read_text())["project"][
                "optional-dependencies"
            ]
            for extra in pip["extras"].split(","):
                assert extra in extras, f"the README installs extra {extra!r}: not in pyproject"
                for requirement in extras[extra]:
                    importlib.metadata.version(re.split(r"[<>=!~;\[ ]", requirement)[0])
            for name in pip["more"].split():
                importlib.metadata.version(name)  # installed here, as the line would
        elif not (VENV_LINE.fullmatch(line) or ACTIVATE_LINE.fullmatch(line)):
            kept.append(line)
    return "\n".join(kept) + "\n"


class Terminal:
    """Runs the blocks like a user at a terminal: the foreground ones in turn, the servers in
    the background until their section ends."""

    def __init__(self, cwd: Path, env: dict[str, str], out: Path) -> None:
        self.cwd, self.env, self.out = cwd, env, out
        self.servers: list[tuple[Block, subprocess.Popen[bytes], Path]] = []
        self.problems: list[str] = []

    def run(self, block: Block, *, set_up: bool = False) -> None:
        code = without_install_lines(block.code) if set_up else block.code
        where = self.out / "pwd"
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", code + 'pwd > "$0"\n', str(where)],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            timeout=BLOCK_TIMEOUT,
            check=False,
        )
        output = (done.stdout + done.stderr).decode(errors="replace")
        assert done.returncode == 0, f"README line {block.line} failed:\n{block.code}\n{output}"
        self.cwd = Path(where.read_text().strip())

    def start(self, block: Block) -> None:
        address = block.options.get("wait")
        assert not (address and accepting(address)), f"something already listens on {address}"
        log = self.out / f"server-{block.line}.out"
        with log.open("wb") as sink:
            server = subprocess.Popen(
                ["bash", "-c", block.code],
                cwd=self.cwd,
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, as a terminal's job
            )
        self.servers.append((block, server, log))
        deadline = time.monotonic() + START_TIMEOUT
        while address and not accepting(address):
            code = server.poll()
            assert code is None, f"README line {block.line} exited ({code}):\n{log.read_text()}"
            assert time.monotonic() < deadline, f"README line {block.line}: not up on {address}"
            time.sleep(0.1)

    def stop_all(self) -> None:
        """Ctrl-C to each server, the newest first; each must stop and print no traceback."""
        if self.servers:
            time.sleep(SETTLE)
        while self.servers:
            block, server, log = self.servers.pop()
            os.killpg(server.pid, signal.SIGINT)
            try:
                server.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
                self.problems.append(f"README line {block.line} did not stop on Ctrl-C")
            if "Traceback" in log.read_text(errors="replace"):
                self.problems.append(f"README line {block.line}:\n{log.read_text()}")


def copy_of_the_repository(root: Path) -> Path:
    """The example directory and what it refers to, laid out as in the repository."""
    shutil.copytree(ROOT / EXAMPLE, root / EXAMPLE)
    (root / "safe_rotating").symlink_to(ROOT / "safe_rotating")  # uwsgi.ini includes a file there
    for name in ("pyproject.toml", ".gitignore"):
        shutil.copy(ROOT / name, root / name)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


def untracked(root: Path) -> set[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return set(listed.stdout.splitlines())


def a_fresh_shell(tmp_path: Path) -> dict[str, str]:
    """This environment as ``activate`` leaves it, without the site's variables set by others."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAFE_ROTATING_", "DJANGO_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = sys.prefix
    runtime = tmp_path / "run"  # the client's default spool lives here, not in a shared /tmp
    runtime.mkdir(mode=0o700)
    env["XDG_RUNTIME_DIR"] = str(runtime)
    return env


def records_by_request(path: Path) -> dict[int, list[int]]:
    """The indices of the intact numbered records in ``path`` and its backups, by request."""
    pattern = request_line_pattern(rb".*?")
    found: dict[int, list[int]] = defaultdict(list)
    for file in sorted(path.parent.glob(path.name + "*")):
        if file.name.endswith(".lock"):
            continue
        for line in file.read_bytes().splitlines():
            record = parse_request_line(line, pattern)
            if record is not None:
                found[record.request].append(record.position)
    return found


def test_the_example_readme_works_as_written(tmp_path: Path) -> None:
    blocks = parse_readme((ROOT / EXAMPLE / "README.md").read_text())
    assert VENV_LINE.match(blocks[0].code), "the set-up comes first"
    root = copy_of_the_repository(tmp_path / "repo")
    before = untracked(root)
    out = tmp_path / "out"
    out.mkdir()
    terminal = Terminal(root, a_fresh_shell(tmp_path), out)
    missing: str | None = None
    skipping = ""
    try:
        for previous, block in zip([None, *blocks], blocks, strict=False):
            if previous is not None and block.heading != previous.heading:
                terminal.stop_all()
                skipping = ""
            needs = block.options.get("needs")
            if needs and shutil.which(needs, path=terminal.env["PATH"]) is None:
                missing, skipping = needs, block.heading
            if block.kind == "skip" or skipping == block.heading:
                continue
            if block.kind == "background":
                terminal.start(block)
            else:
                terminal.run(block, set_up=block is blocks[0])
    finally:
        terminal.stop_all()
    assert not terminal.problems, "\n".join(terminal.problems)

    site = root / EXAMPLE
    text = (site / "logs" / "app.log").read_text()
    for expected in EXPECTED_LINES:
        assert expected in text, expected
    for name, requests in EXPECTED_REQUESTS.items():
        found = records_by_request(site / name)
        for request, count in requests.items():
            if missing and request in UWSGI_REQUESTS:
                continue
            assert sorted(found[request]) == list(range(count)), (name, request)
    left = untracked(root) - before
    assert not left, f"following the README leaves files git does not ignore: {sorted(left)}"
    if missing:
        pytest.skip(f"{missing} is not installed (not on PATH): its README section did not run")
