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


def check_output(logging_config: dict[str, Any], **more_settings: Any) -> str:
    out, err = io.StringIO(), io.StringIO()
    with override_settings(LOGGING=logging_config, **more_settings):
        call_command("check", stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


def handler(cls: str, filename: Path, **options: Any) -> dict[str, Any]:
    return {"class": cls, "filename": str(filename), **options}


def config(**handlers: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1, "disable_existing_loggers": False, "handlers": handlers}


def test_a_safe_config_passes(tmp_path: Path) -> None:
    good = config(
        app=handler(
            "safe_rotating.SafeRotatingFileHandler",
            tmp_path / "a.log",
            maxBytes=1024,
            backupCount=5,
        ),
        timed=handler("safe_rotating.SafeTimedRotatingFileHandler", tmp_path / "t.log"),
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
        (
            "logging.handlers.TimedRotatingFileHandler",
            "Set 'class': 'safe_rotating.SafeTimedRotatingFileHandler' — same arguments (when,",
        ),
    ],
)
def test_w001_stdlib_rotating_handlers(tmp_path: Path, cls: str, hint: str) -> None:
    output = check_output(config(app=handler(cls, tmp_path / "a.log", maxBytes=1024)))
    assert "safe_rotating.W001" in output
    assert f"(safe_rotating.W001) LOGGING['handlers']['app'] uses {cls}, which is not" in output
    assert "process-safe" in output
    assert hint in output
    assert "several hosts" in output
    assert "'class': 'safe_rotating.LogServerHandler'" in output
    assert "rotates by size only" not in output


def test_w001_also_for_a_class_object(tmp_path: Path) -> None:
    import logging.handlers

    found = inspect_logging(
        config(app={"class": logging.handlers.RotatingFileHandler, "filename": str(tmp_path / "x")})
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


@pytest.mark.parametrize(
    "size_class",
    [
        "safe_rotating.SafeRotatingFileHandler",
        "concurrent_log_handler.ConcurrentRotatingFileHandler",
    ],
)
@pytest.mark.parametrize(
    "timed_class",
    [
        "safe_rotating.SafeTimedRotatingFileHandler",
        "safe_rotating.handlers.SafeTimedRotatingFileHandler",
        "concurrent_log_handler.ConcurrentTimedRotatingFileHandler",
    ],
)
def test_w003_a_timed_and_a_size_handler_on_one_file(
    tmp_path: Path, size_class: str, timed_class: str
) -> None:
    log = tmp_path / "a.log"
    output = check_output(
        config(
            web=handler(size_class, log, maxBytes=1024, backupCount=5),
            jobs=handler(timed_class, log, when="midnight", backupCount=5),
        )
    )
    assert "safe_rotating.W003" in output
    assert (
        "'jobs': " + timed_class.rsplit(".", 1)[-1] + " maxBytes=0 backupCount=5 "
        "when='midnight' interval=1"
    ) in output
    assert "'web': " + size_class.rsplit(".", 1)[-1] + " maxBytes=1024 backupCount=5" in output


def test_w003_one_class_under_two_spellings_is_one_setting(tmp_path: Path) -> None:
    from safe_rotating import SafeTimedRotatingFileHandler

    log = str(tmp_path / "a.log")
    same = config(
        web={"class": "safe_rotating.SafeTimedRotatingFileHandler", "filename": log},
        jobs={"class": SafeTimedRotatingFileHandler, "filename": log},
    )
    assert inspect_logging(same) == []


@pytest.mark.parametrize(
    "cls",
    [
        "safe_rotating.SafeTimedRotatingFileHandler",
        "concurrent_log_handler.ConcurrentTimedRotatingFileHandler",
    ],
)
def test_w004_also_for_timed_handlers(tmp_path: Path, cls: str) -> None:
    found = inspect_logging(config(app=handler(cls, tmp_path / "no" / "a.log")))
    assert [f.id for f in found] == ["W004"]


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


@pytest.mark.parametrize(
    "cls",
    [
        "safe_rotating.SafeRotatingFileHandler",
        "logging.handlers.RotatingFileHandler",
        "concurrent_log_handler.ConcurrentRotatingFileHandler",
    ],
)
def test_w005_max_bytes_without_backup_count(tmp_path: Path, cls: str) -> None:
    output = check_output(config(app=handler(cls, tmp_path / "a.log", maxBytes=1024)))
    assert "(safe_rotating.W005) LOGGING['handlers']['app'] sets maxBytes=1024 but no" in output
    assert "Add 'backupCount': N" in output
    if cls.startswith("concurrent_log_handler"):
        assert "empties the file each time it reaches maxBytes" in output
    else:
        assert "never rotated" in output


def test_w005_not_without_max_bytes_or_with_a_backup_count(tmp_path: Path) -> None:
    safe = "safe_rotating.SafeRotatingFileHandler"
    fine = config(
        plain=handler(safe, tmp_path / "a.log"),
        kept=handler(safe, tmp_path / "b.log", maxBytes=1024, backupCount=3),
        # backupCount=0 on a timed handler keeps every file; it still rotates by time.
        timed=handler(
            "safe_rotating.SafeTimedRotatingFileHandler", tmp_path / "c.log", maxBytes=1024
        ),
    )
    assert inspect_logging(fine) == []


def test_w006_a_relative_filename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    output = check_output(
        config(app={"class": "safe_rotating.SafeRotatingFileHandler", "filename": "app.log"})
    )
    assert "(safe_rotating.W006) LOGGING['handlers']['app'] has the relative filename" in output
    assert f"(this one: '{tmp_path / 'app.log'}')" in output
    assert "gunicorn" in output
    assert "cron" in output
    assert "manage.py" in output
    assert "Use an absolute path, e.g. 'filename': str(BASE_DIR / 'logs' / 'app.log')" in output
    absolute = config(app=handler("logging.FileHandler", tmp_path / "app.log"))
    assert inspect_logging(absolute) == []


def root_config(tmp_path: Path) -> dict[str, Any]:
    safe = "safe_rotating.SafeRotatingFileHandler"
    return {**config(app=handler(safe, tmp_path / "a.log")), "root": {"handlers": ["app"]}}


def test_w007_root_handlers_under_celerys_default_hijack(tmp_path: Path) -> None:
    output = check_output(root_config(tmp_path), CELERY_BROKER_URL="redis://localhost")
    assert "(safe_rotating.W007) LOGGING['root'] has the handlers ['app']" in output
    assert "worker_hijack_root_logger at its default (True)" in output
    assert "Set CELERY_WORKER_HIJACK_ROOT_LOGGER = False" in output
    explicit = check_output(
        root_config(tmp_path),
        CELERY_BROKER_URL="redis://localhost",
        CELERY_WORKER_HIJACK_ROOT_LOGGER=True,
    )
    assert "safe_rotating.W007" in explicit
    empty_name = config(app=handler("logging.FileHandler", tmp_path / "a.log"))
    empty_name["loggers"] = {"": {"handlers": ["app"]}}
    assert [f.obj for f in inspect_logging(empty_name, celery_hijack=True)] == [
        "LOGGING['loggers']['']"
    ]


@pytest.mark.parametrize(
    "celery_settings",
    [
        {},  # no Celery in the settings: nothing to see
        {"CELERY_BROKER_URL": "redis://localhost", "CELERY_WORKER_HIJACK_ROOT_LOGGER": False},
        {"CELERYD_HIJACK_ROOT_LOGGER": False},
    ],
)
def test_w007_not_when_celery_is_absent_or_told(
    tmp_path: Path, celery_settings: dict[str, Any]
) -> None:
    assert "System check identified no issues" in check_output(
        root_config(tmp_path), **celery_settings
    )


def test_w007_not_when_a_setup_logging_receiver_is_connected(tmp_path: Path) -> None:
    signals = pytest.importorskip("celery.signals")

    def keep_django_logging(**kwargs: Any) -> None:
        """A receiver makes Celery leave logging alone."""

    signals.setup_logging.connect(keep_django_logging)
    try:
        output = check_output(root_config(tmp_path), CELERY_BROKER_URL="redis://localhost")
    finally:
        signals.setup_logging.disconnect(keep_django_logging)
    assert "W007" not in output


def test_w007_not_without_root_handlers(tmp_path: Path) -> None:
    quiet = {**root_config(tmp_path), "root": {"level": "INFO"}}
    assert inspect_logging(quiet, celery_hijack=True) == []
