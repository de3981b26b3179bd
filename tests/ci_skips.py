"""Under CI, a skipped test is a failure: a missing install must never pass unnoticed.

Registered by ``tests/conftest.py``. When the environment variable ``CI`` is ``true`` (any case)
or ``1``, every skip — ``pytest.skip``, ``skipif`` marks and module-level
``pytest.importorskip`` at collection — is turned into a failure naming what is missing and how
to install it. ``xfail`` is left alone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator

import pytest

DEV = (
    "python3 dev.py test (or .venv/bin/pip install -e '.[fast,django,celery,stress,zstd]' "
    "--group dev)"
)

# (pattern in the skip reason, component, how to install it), first match wins.
HINTS: list[tuple[str, str, str]] = [
    (
        r"uwsgi",
        "uWSGI",
        ".venv/bin/pip install 'uwsgi>=2.0.22' (builds from source: needs gcc and the Python "
        "headers, e.g. apt-get install gcc python3-dev); python3 dev.py test tries it",
    ),
    (
        r"rsyslogd",
        "rsyslog",
        "apt-get install rsyslog (the tests start their own rsyslogd; .ci/run installs it)",
    ),
    (r"could not import '([^']+)'", "Python package {0}", DEV),
    (r"\broot\b", "root privileges", "run the suite as root (.ci/run does)"),
]


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1"}


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # (path, lineno, "Skipped: reason")
        text = str(longrepr[2])
        return text.removeprefix("Skipped: ")
    return str(longrepr)


def ci_failure(reason: str) -> str:
    component, how = "unknown (see the reason)", DEV
    for pattern, name, hint in HINTS:
        match = re.search(pattern, reason, re.IGNORECASE)
        if match:
            component, how = name.format(*match.groups()), hint
            break
    return (
        f"skipped under CI, where nothing may skip: {reason}\n"
        f"missing component: {component}\n"
        f"install it with: {how}"
    )


def fail_instead_of_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    reason = skip_reason(report)
    report.outcome = "failed"
    report.longrepr = ci_failure(reason)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.skipped and not hasattr(report, "wasxfail") and running_in_ci():
        fail_instead_of_skip(report)
    return report


@pytest.hookimpl(tryfirst=True)  # before the session and the terminal count the report
def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped and running_in_ci():
        fail_instead_of_skip(report)
