"""The server behaves as a daemon is expected to: settings from the environment, every on/off flag
with its ``--no-`` form, systemd's readiness protocol, a level for its own messages, errors that
name the setting as it was written, and a busy port that names the listener and leaves nothing
behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from safe_rotating.server.cli import parser, settings_from
from safe_rotating.server.config import ServerConfig
from safe_rotating.server.notify import notify
from safe_rotating.server.settings import build

from .logserver import eventually, run_server, server_command
from .servers import free_port


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **(env or {})}
    return subprocess.run(
        args, capture_output=True, text=True, timeout=60, check=False, env=environ
    )


def settings(argv: list[str], environ: dict[str, str]) -> ServerConfig:
    return build(*settings_from(parser().parse_args(argv), environ))


# -- the environment ---------------------------------------------------------------------------
def test_help_documents_the_environment_and_the_precedence() -> None:
    done = run(*server_command("--help"))
    assert done.returncode == 0
    for text in (
        "SAFE_ROTATING_CONFIG",
        "SAFE_ROTATING_TOKEN",
        "precedence: a flag, then the environment, then the configuration file, then the default",
        "--no-utc",
        "--log-level",
        "READY=1",
    ):
        assert text in done.stdout


def test_a_flag_wins_over_the_environment_which_wins_over_the_file(tmp_path: Path) -> None:
    toml = tmp_path / "server.toml"
    secret = tmp_path / "file.token"
    secret.write_text("from-the-file\n")
    toml.write_text(
        f'file = "{tmp_path / "app.log"}"\nmax_bytes = "1KiB"\nbackup_count = 2\n'
        f'token_file = "{secret}"\n'
    )
    environ = {"SAFE_ROTATING_CONFIG": str(toml)}
    from_file = settings([], environ)
    assert from_file.max_bytes == 1024
    assert from_file.token == "from-the-file"
    environ["SAFE_ROTATING_TOKEN"] = "from-the-environment"
    from_env = settings([], environ)
    assert from_env.token == "from-the-environment"
    assert from_env.max_bytes == 1024  # the file still counts
    flagged = settings(["--token", "from-the-flag", "--max-bytes", "2KiB"], environ)
    assert flagged.token == "from-the-flag"
    assert flagged.max_bytes == 2048
    flag_file = tmp_path / "flag.token"
    flag_file.write_text("from-the-flag-file")
    assert settings(["--token-file", str(flag_file)], environ).token == "from-the-flag-file"
    other = tmp_path / "other.toml"
    other.write_text(f'file = "{tmp_path / "other.log"}"\n')
    assert settings(["--config", str(other)], environ).file == str(tmp_path / "other.log")
    assert settings(["--file", str(tmp_path / "x.log")], {}).max_bytes == 0  # the default


def test_the_token_from_the_environment_is_used_and_never_shown(tmp_path: Path) -> None:
    toml = tmp_path / "server.toml"
    toml.write_text(f'file = "{tmp_path / "app.log"}"\n')
    env = {"SAFE_ROTATING_CONFIG": str(toml), "SAFE_ROTATING_TOKEN": "s3cret-env-token"}
    done = run(*server_command("--check-config"), env=env)
    assert done.returncode == 0, done.stderr
    assert "# token: set, not shown" in done.stdout
    assert "s3cret-env-token" not in done.stdout + done.stderr
    assert f'file = "{tmp_path / "app.log"}"' in done.stdout


def test_a_missing_configuration_from_the_environment_says_where_it_came_from(
    tmp_path: Path,
) -> None:
    env = {"SAFE_ROTATING_CONFIG": str(tmp_path / "nowhere.toml")}
    done = run(*server_command("--check-config"), env=env)
    assert done.returncode == 2
    assert "SAFE_ROTATING_CONFIG: cannot read the configuration" in done.stderr


# -- on/off flags ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "flag"),
    [
        ("utc", "utc"),
        ("escape_control_characters", "escape-control-characters"),
        ("allow_remote_pickle", "allow-remote-pickle"),
        ("forward_tls", "forward-tls"),
    ],
)
def test_every_on_off_setting_of_the_file_is_overridden_both_ways(
    tmp_path: Path, key: str, flag: str
) -> None:
    toml = tmp_path / "server.toml"
    lines = [f'file = "{tmp_path / "app.log"}"', 'forward = ["127.0.0.1:6514"]', 'when = "H"']
    for value in ("true", "false"):
        toml.write_text("\n".join([*lines, f"{key} = {value}"]) + "\n")
        environ = {"SAFE_ROTATING_CONFIG": str(toml)}
        assert getattr(settings([], environ), key) is (value == "true")
        assert getattr(settings([f"--no-{flag}"], environ), key) is False
        assert getattr(settings([f"--{flag}"], environ), key) is True


def test_no_utc_overrides_utc_true_on_the_real_command_line(tmp_path: Path) -> None:
    toml = tmp_path / "server.toml"
    toml.write_text(f'file = "{tmp_path / "app.log"}"\nwhen = "midnight"\nutc = true\n')
    done = run(*server_command("--config", str(toml), "--no-utc", "--check-config"))
    assert done.returncode == 0, done.stderr
    assert "utc = false" in done.stdout


# -- errors name the setting as written --------------------------------------------------------
def test_an_error_names_the_flag_when_it_came_from_the_command_line(tmp_path: Path) -> None:
    log = str(tmp_path / "app.log")
    done = run(*server_command("--file", log, "--max-bytes", "lots", "--check-config"))
    assert done.returncode == 2
    assert "safe-rotating-server: --max-bytes: " in done.stderr
    done = run(*server_command("--file", log, "--read-timeout", "soon", "--check-config"))
    assert "--read-timeout: expected a number of seconds" in done.stderr
    done = run(*server_command("--file", log, "--listen", "nowhere", "--check-config"))
    assert "--listen: " in done.stderr


def test_an_error_names_the_key_when_it_came_from_the_file(tmp_path: Path) -> None:
    toml = tmp_path / "server.toml"
    toml.write_text(f'file = "{tmp_path / "app.log"}"\nmax_bytes = "lots"\n')
    done = run(*server_command("--config", str(toml), "--check-config"))
    assert done.returncode == 2
    assert "safe-rotating-server: max_bytes: " in done.stderr
    assert "--max-bytes" not in done.stderr


# -- systemd readiness and --log-level ---------------------------------------------------------
@contextmanager
def notify_socket(where: str) -> Iterator[socket.socket]:
    """A datagram socket as systemd makes it: ``where`` is a path, or ``@name`` (abstract)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + where[1:] if where.startswith("@") else where)
    sock.settimeout(20)
    try:
        yield sock
    finally:
        sock.close()


def test_notify_sends_one_datagram_to_an_abstract_socket() -> None:
    name = f"@safe-rotating-test-{uuid.uuid4().hex}"
    with notify_socket(name) as sock:
        assert notify("READY=1", "STATUS=ok", environ={"NOTIFY_SOCKET": name})
        assert sock.recv(4096) == b"READY=1\nSTATUS=ok"
    assert not notify("READY=1", environ={})


def test_the_server_tells_systemd_it_is_ready_and_stopping(tmp_path: Path) -> None:
    """READY=1 comes once the listener accepts and the writer writes; STOPPING=1 at SIGTERM.
    With --log-level WARNING the server's INFO lines are not shown."""
    port = free_port()
    where = str(tmp_path / "notify.sock")
    err = tmp_path / "server.err"
    command = server_command(
        "--file", str(tmp_path / "app.log"), "--listen", f"127.0.0.1:{port}",
        "--log-level", "warning",
    )  # fmt: skip
    with notify_socket(where) as sock, open(err, "wb") as stderr:
        process = subprocess.Popen(
            command, stderr=stderr, env={**os.environ, "NOTIFY_SOCKET": where}
        )
        try:
            ready = sock.recv(4096).decode().split("\n")
            assert ready[0] == "READY=1"
            assert ready[1].startswith(f"STATUS=listening on listen 127.0.0.1:{port}")
            import logging.handlers

            handler = logging.handlers.SocketHandler("127.0.0.1", port)
            handler.emit(logging.makeLogRecord({"msg": "right after READY=1", "levelno": 20}))
            handler.close()
            eventually(lambda: "right after READY=1" in (tmp_path / "app.log").read_text(), 5.0)
            process.send_signal(signal.SIGTERM)
            assert sock.recv(4096).decode().split("\n")[0] == "STOPPING=1"
            assert process.wait(20) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert "INFO" not in err.read_text()  # neither "listening on" nor "stopped: ..."


def test_a_bad_log_level_is_a_usage_error(tmp_path: Path) -> None:
    done = run(*server_command("--file", str(tmp_path / "a.log"), "--log-level", "LOUD"))
    assert done.returncode == 2
    assert "--log-level" in done.stderr
    toml = tmp_path / "server.toml"
    toml.write_text(f'file = "{tmp_path / "app.log"}"\nlog_level = "loud"\n')
    done = run(*server_command("--config", str(toml), "--check-config"))
    assert done.returncode == 2
    assert "log_level: expected one of DEBUG, INFO, WARNING, ERROR" in done.stderr


# -- a busy address ----------------------------------------------------------------------------
@pytest.mark.parametrize("listener", ["--listen", "--metrics", "--syslog-udp"])
def test_an_address_in_use_names_the_listener_and_leaves_no_files(
    tmp_path: Path, listener: str
) -> None:
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # what holds the --syslog-udp port
    udp.bind(("127.0.0.1", 0))
    try:
        with run_server(first_dir, err_dir=tmp_path) as first:
            busy = {
                "--listen": first.port,
                "--metrics": first.metrics_port,
                "--syslog-udp": udp.getsockname()[1],
            }[listener]
            args = ["--file", str(second_dir / "app.log"), "--listen", f"127.0.0.1:{free_port()}"]
            args += [listener, f"127.0.0.1:{busy}"]
            done = run(*server_command(*args))
            assert done.returncode == 1
            assert f"cannot start: {listener} 127.0.0.1:{busy}: address already in use" in (
                done.stderr
            )
            assert first.process.poll() is None  # the first server still runs, and writes
            first.send_stock("still here")
            first.assert_lands("still here", timeout=5.0)
    finally:
        udp.close()
    assert sorted(os.listdir(second_dir)) == []
    assert all((first_dir / name).exists() for name in (".app.log.lock", ".app.log.journal"))
