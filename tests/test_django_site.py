"""The shipped Django site: its LOGGING dicts load, its views and task log checkable records,
and the example in examples/django_site runs the same code."""

from __future__ import annotations

import json
import logging
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from safe_rotating._django_site import logsetup

pytest.importorskip("django")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "django_site"

# Loads every dict with dictConfig in a fresh interpreter (dictConfig replaces the logging set-up
# of the process it runs in), logs one record through it and reports the handler built.
LOAD = r"""
import json, logging, logging.config, sys
from safe_rotating._django_site import logsetup
out = {}
for name, config in json.loads(sys.argv[1]).items():
    logging.config.dictConfig(config)
    if name != "server":  # no server listens: build the handler, log nothing
        logging.getLogger("logdemo.views").warning("hello from %s", name)
    handler = logging.getLogger().handlers[0]
    out[name] = type(handler).__module__ + "." + type(handler).__qualname__
    handler.close()
print(json.dumps(out))
"""


def load(configs: dict[str, object]) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", LOAD, json.dumps(configs)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, str] = json.loads(done.stdout)
    return result


def test_every_file_mode_dict_loads_with_dictconfig_and_writes(tmp_path: Path) -> None:
    configs: dict[str, object] = {
        mode: logsetup.logging_config(mode, str(tmp_path / f"{mode}.log"), 4096, 3)
        for mode in ("file", "stdlib")
    }
    assert load(configs) == {
        "file": "safe_rotating.handlers.SafeRotatingFileHandler",
        "stdlib": "logging.handlers.RotatingFileHandler",
    }
    for mode in ("file", "stdlib"):
        text = (tmp_path / f"{mode}.log").read_text()
        assert "WARNING [" in text
        assert f"logdemo.views: hello from {mode}" in text


def test_the_environment_picks_the_handler(tmp_path: Path) -> None:
    env = {
        "SAFE_ROTATING_LOG_MODE": "stdlib",
        "SAFE_ROTATING_LOG_FILE": str(tmp_path / "logs" / "site.log"),
        "SAFE_ROTATING_MAX_BYTES": "2048",
        "SAFE_ROTATING_BACKUP_COUNT": "7",
    }
    handler = logsetup.logging_from_env(env)["handlers"]["app"]
    assert handler == {
        "class": "logging.handlers.RotatingFileHandler",
        "formatter": "line",
        "filename": str(tmp_path / "logs" / "site.log"),
        "maxBytes": 2048,
        "backupCount": 7,
    }
    assert (tmp_path / "logs").is_dir()  # created, so the handler can open its file
    server = logsetup.logging_from_env(
        {"SAFE_ROTATING_LOG_MODE": "server", "SAFE_ROTATING_SERVER": "10.0.0.5:9021"}
    )
    assert server["handlers"]["app"] == {
        "class": "safe_rotating.client.LogServerHandler",
        "formatter": "line",
        "address": "10.0.0.5:9021",
    }
    with pytest.raises(ValueError, match="must be one of file, server, stdlib"):
        logsetup.logging_from_env({"SAFE_ROTATING_LOG_MODE": "syslog"})


def test_server_mode_takes_its_spool_directory_from_the_environment(tmp_path: Path) -> None:
    spool = str(tmp_path / "spool")
    env = {
        "SAFE_ROTATING_LOG_MODE": "server",
        "SAFE_ROTATING_SERVER": "127.0.0.1:9021",
        "SAFE_ROTATING_SPOOL_DIR": spool,
    }
    assert logsetup.logging_from_env(env)["handlers"]["app"] == {
        "class": "safe_rotating.client.LogServerHandler",
        "formatter": "line",
        "address": "127.0.0.1:9021",
        "spool_dir": spool,
    }
    file_mode = {**env, "SAFE_ROTATING_LOG_MODE": "file", "SAFE_ROTATING_LOG_FILE": spool + ".log"}
    assert "spool_dir" not in logsetup.logging_from_env(file_mode)["handlers"]["app"]


def test_the_server_format_writes_the_file_mode_line() -> None:
    """safe-rotating-server --format SERVER_FORMAT gives the line LOG_FORMAT gives in file mode,
    so one verification reads the files of both modes."""
    record = logging.LogRecord("logdemo.stress", logging.INFO, "f.py", 1, "req %s", ("x",), None)
    record.process = 4242
    file_line = logging.Formatter(logsetup.LOG_FORMAT, style="{").format(record)
    server_line = logging.Formatter(logsetup.SERVER_FORMAT).format(record)
    assert server_line == file_line
    assert re.fullmatch(logsetup.LINE_PREFIX + rb"req x", server_line.encode())


def test_the_server_mode_dict_loads_once_the_client_exists(tmp_path: Path) -> None:
    """Until safe_rotating.client exists, the dict only names the class."""
    config = logsetup.logging_config("server", server="127.0.0.1:9")
    assert config["handlers"]["app"]["class"] == "safe_rotating.client.LogServerHandler"
    if (ROOT / "safe_rotating" / "client.py").exists():
        assert load({"server": config}) == {"server": "safe_rotating.client.LogServerHandler"}


def test_gunicorn_accepts_the_dict_over_its_defaults(tmp_path: Path) -> None:
    """gunicorn lays logconfig_dict over its defaults key by key; the result must load."""
    pytest.importorskip("gunicorn")
    env = {**os.environ, "SAFE_ROTATING_LOG_FILE": str(tmp_path / "g.log")}
    script = (
        "import json, sys\n"
        "from gunicorn.glogging import CONFIG_DEFAULTS\n"
        "ns = {}\n"
        "exec(open(sys.argv[1]).read(), ns)\n"
        "print(json.dumps({'m': {**CONFIG_DEFAULTS, **ns['logconfig_dict']}}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(EXAMPLE / "gunicorn.conf.py")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    merged = json.loads(done.stdout)
    assert load(merged) == {"m": "safe_rotating.handlers.SafeRotatingFileHandler"}


def test_the_stress_records_restart_their_sequence_in_a_forked_child(tmp_path: Path) -> None:
    script = r"""
import logging, os, sys
from safe_rotating._django_site.logdemo import records
from safe_rotating.verify import parse_request_line
lines = []
class Keep(logging.Handler):
    def emit(self, record): lines.append(record.getMessage())
records.log.addHandler(Keep())
records.log.setLevel(logging.INFO)
records.log.propagate = False
records.log_records(1, 3)
pid = os.fork()
if pid == 0:
    lines.clear()
    records.log_records(2, 2)
    print("child", [tuple(parse_request_line(l.encode())) for l in lines], os.getpid(), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
print("parent", [tuple(parse_request_line(l.encode())) for l in lines], os.getpid(), flush=True)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    outputs = {line.split(" ", 1)[0]: line for line in done.stdout.splitlines()}
    child = eval(outputs["child"].split(" ", 1)[1].rsplit(" ", 1)[0])
    parent = eval(outputs["parent"].split(" ", 1)[1].rsplit(" ", 1)[0])
    child_pid = int(outputs["child"].rsplit(" ", 1)[1])
    parent_pid = int(outputs["parent"].rsplit(" ", 1)[1])
    assert parent == [(parent_pid, 0, 1, 0), (parent_pid, 1, 1, 1), (parent_pid, 2, 1, 2)]
    assert child == [(child_pid, 0, 2, 0), (child_pid, 1, 2, 1)]


def test_celery_pool_processes_flush_logging_before_they_exit() -> None:
    """A pool process leaves with os._exit, skipping atexit: the site closes the handlers from
    worker_process_shutdown, which the pool process sends just before."""
    pytest.importorskip("celery")
    script = r"""
import logging, sys
from celery.signals import worker_process_shutdown
from safe_rotating._django_site import celery_app
closed = []
class Handler(logging.Handler):
    def emit(self, record): pass
    def close(self):
        closed.append(True)
        super().close()
logging.getLogger().addHandler(Handler())
worker_process_shutdown.send(sender=None, pid=1, exitcode=0)
sys.exit(0 if closed else 1)
"""
    subprocess.run([sys.executable, "-c", script], check=True)


def test_the_views_log_through_the_site_logging(tmp_path: Path) -> None:
    """index logs at several levels with extra; fail makes django.request log the traceback."""
    script = r"""
import os
import django
django.setup()
from django.test import Client
client = Client(raise_request_exception=False)
assert client.get("/?warn=careful").status_code == 200
assert client.get("/fail").status_code == 500
response = client.get("/stress?request=7&n=3")
assert response.json()["records"] == 3, response.content
assert client.get("/stress?request=x").status_code == 400
"""
    log = tmp_path / "site.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "safe_rotating._django_site.settings",
        "SAFE_ROTATING_LOG_FILE": str(log),
        "SAFE_ROTATING_CELERY_DIR": str(tmp_path / "celery"),
    }
    subprocess.run([sys.executable, "-c", script], env=env, check=True, cwd=tmp_path)
    text = log.read_text()
    assert "DEBUG [" in text
    assert "logdemo.views: index requested" in text
    assert "WARNING [" in text
    assert "a warning was asked for: careful" in text
    assert "ERROR [" in text
    assert "django.request: Internal Server Error: /fail" in text
    assert "RuntimeError: logdemo.views.fail raised on purpose" in text
    assert "django.request: Bad Request: /stress" in text
    assert text.count("logdemo.stress: req ") == 3


def test_the_example_is_a_thin_wrapper_around_the_shipped_site(tmp_path: Path) -> None:
    for name in ("README.md", "manage.py", "gunicorn.conf.py", "uwsgi.ini"):
        assert (EXAMPLE / name).is_file(), name
    names = runpy.run_path(str(EXAMPLE / "gunicorn.conf.py"))
    assert names["wsgi_app"] == "safe_rotating._django_site.wsgi:application"
    assert set(names["logconfig_dict"]) >= {"version", "handlers", "root", "loggers"}
    assert "safe_rotating/_django_site/uwsgi.ini" in (EXAMPLE / "uwsgi.ini").read_text()
    done = subprocess.run(
        [sys.executable, str(EXAMPLE / "manage.py"), "check"],
        env={**os.environ, "SAFE_ROTATING_LOG_FILE": str(tmp_path / "app.log")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "System check identified no issues" in done.stdout


def test_importing_safe_rotating_does_not_import_django() -> None:
    code = (
        "import sys, safe_rotating, safe_rotating.contrib, safe_rotating.stress, "
        "safe_rotating._django_site, safe_rotating._django_site.logsetup\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('django', 'celery')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
