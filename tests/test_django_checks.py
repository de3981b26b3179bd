"""safe_rotating.contrib.django: system checks on LOGGING, run through Django's check framework."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest

from safe_rotating.contrib.django.checks import inspect_logging

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test.utils import override_settings  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def django_configured() -> None:
    """Django with only the checks app; LOGGING_CONFIG=None leaves this process's logging be."""
    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=["safe_rotating.contrib.django"],
            LOGGING_CONFIG=None,
            DATABASES={},
            USE_TZ=True,
        )
        django.setup()


def check_output(logging_config: dict[str, Any]) -> str:
    out, err = io.StringIO(), io.StringIO()
    with override_settings(LOGGING=logging_config):
        call_command("check", stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


def handler(cls: str, filename: Path, **options: Any) -> dict[str, Any]:
    return {"class": cls, "filename": str(filename), **options}


def config(**handlers: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1, "disable_existing_loggers": False, "handlers": handlers}


def test_a_safe_config_passes(tmp_path: Path) -> None:
    good = config(
        app=handler("safe_rotating.SafeRotatingFileHandler", tmp_path / "a.log", maxBytes=1024),
        console={"class": "logging.StreamHandler"},
    )
    assert "System check identified no issues" in check_output(good)
    assert inspect_logging(good) == []


@pytest.mark.parametrize(
    ("cls", "hint"),
    [
        (
            "logging.handlers.RotatingFileHandler",
            "Set 'class': 'safe_rotating.SafeRotatingFileHandler' — same arguments",
        ),
        ("logging.handlers.TimedRotatingFileHandler", "safe_rotating rotates by size only"),
    ],
)
def test_w001_stdlib_rotating_handlers(tmp_path: Path, cls: str, hint: str) -> None:
    output = check_output(config(app=handler(cls, tmp_path / "a.log", maxBytes=1024)))
    assert "safe_rotating.W001" in output
    assert f"(safe_rotating.W001) LOGGING['handlers']['app'] uses {cls}, which is not" in output
    assert "process-safe" in output
    assert hint in output


def test_w001_also_for_a_class_object(tmp_path: Path) -> None:
    import logging.handlers

    found = inspect_logging(
        config(app={"class": logging.handlers.RotatingFileHandler, "filename": "x.log"})
    )
    assert [f.id for f in found] == ["W001"]


def test_w002_mode_w_on_a_rotating_handler(tmp_path: Path) -> None:
    output = check_output(
        config(app=handler("safe_rotating.SafeRotatingFileHandler", tmp_path / "a.log", mode="w"))
    )
    assert "safe_rotating.W002" in output
    assert "mode='w'" in output
    assert "Remove 'mode'" in output


def test_w003_two_handlers_on_one_file_with_different_rotation(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    safe = "safe_rotating.SafeRotatingFileHandler"
    output = check_output(
        config(
            web=handler(safe, log, maxBytes=1024, backupCount=5),
            jobs=handler(safe, tmp_path / "sub" / ".." / "a.log", maxBytes=4096, backupCount=5),
            other=handler(safe, tmp_path / "b.log", maxBytes=1),
        )
    )
    assert "safe_rotating.W003" in output
    assert str(log) in output
    assert "'jobs': SafeRotatingFileHandler maxBytes=4096 backupCount=5" in output
    assert "'web': SafeRotatingFileHandler maxBytes=1024 backupCount=5" in output
    assert "b.log" not in output.split("W003")[1]
    same = config(
        web=handler(safe, log, maxBytes=1024, backupCount=5),
        jobs=handler(safe, log, maxBytes=1024, backupCount=5),
    )
    assert inspect_logging(same) == []


def test_w004_a_missing_log_directory(tmp_path: Path) -> None:
    output = check_output(
        config(app=handler("safe_rotating.SafeRotatingFileHandler", tmp_path / "no" / "a.log"))
    )
    assert "safe_rotating.W004" in output
    assert f"the log directory '{tmp_path / 'no'}' does not exist" in output


def test_w004_an_unwritable_log_directory_names_owner_and_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root may write anywhere, so the refusal is simulated; owner and mode are the real ones."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o755)
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, m, **kw: False if str(p) == str(locked) else real_access(p, m)
    )
    output = check_output(
        config(app=handler("safe_rotating.SafeRotatingFileHandler", locked / "a.log"))
    )
    assert "safe_rotating.W004" in output
    assert f"the log directory '{locked}' is not writable by this process" in output
    assert "mode drwxr-xr-x (0o755)" in output
    assert "owned by root:" in output or os.geteuid() != 0
    assert "chmod 2775" in output


def test_a_warning_can_be_silenced(tmp_path: Path) -> None:
    stdlib = config(app=handler("logging.handlers.RotatingFileHandler", tmp_path / "a.log"))
    with override_settings(SILENCED_SYSTEM_CHECKS=["safe_rotating.W001"]):
        output = check_output(stdlib)
    assert "W001" not in output
    assert "1 silenced" in output


def test_the_shipped_site_passes_in_file_mode_and_warns_in_stdlib_mode(tmp_path: Path) -> None:
    from safe_rotating._django_site.logsetup import logging_config

    log = str(tmp_path / "app.log")
    assert inspect_logging(logging_config("file", log)) == []
    assert [f.id for f in inspect_logging(logging_config("stdlib", log))] == ["W001"]
    assert inspect_logging(logging_config("server")) == []
