"""Under CI=true a skip fails the run, naming what is missing; without CI it stays a skip."""

from __future__ import annotations

import pytest

TESTS = """
import pytest

def test_passes():
    pass

def test_skips():
    pytest.skip("uWSGI is not installed")

@pytest.mark.skipif(True, reason="needs root to become another user")
def test_skipif():
    pass

@pytest.mark.xfail(reason="known bug", strict=True)
def test_xfails():
    assert False
"""

IMPORTORSKIP = """
import pytest

pytest.importorskip("no_such_module_for_ci_skips")

def test_never_runs():
    pass
"""


@pytest.fixture
def ci(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    value: str | None = request.param
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    return value


@pytest.mark.parametrize("ci", ["true", "TRUE", "1"], indirect=True)
def test_skips_fail_under_ci(pytester: pytest.Pytester, ci: str) -> None:
    pytester.makepyfile(test_inner=TESTS)
    result = pytester.runpytest("-p", "tests.ci_skips", "-rA")
    # A skipif mark skips at setup, and a failed setup is reported as an error.
    result.assert_outcomes(passed=1, failed=1, errors=1, xfailed=1)
    result.stdout.fnmatch_lines(
        [
            "*skipped under CI, where nothing may skip: uWSGI is not installed*",
            "*missing component: uWSGI*",
            "*install it with: .venv/bin/pip install 'uwsgi>=2.0.22'*",
            "*missing component: root privileges*",
        ]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED


@pytest.mark.parametrize("ci", [None, "", "false", "0"], indirect=True)
def test_skips_stay_skips_outside_ci(pytester: pytest.Pytester, ci: str | None) -> None:
    pytester.makepyfile(test_inner=TESTS)
    result = pytester.runpytest("-p", "tests.ci_skips")
    result.assert_outcomes(passed=1, skipped=2, xfailed=1)
    assert result.ret == pytest.ExitCode.OK


@pytest.mark.parametrize("ci", ["true"], indirect=True)
def test_importorskip_fails_collection_under_ci(pytester: pytest.Pytester, ci: str) -> None:
    pytester.makepyfile(test_inner=IMPORTORSKIP)
    result = pytester.runpytest("-p", "tests.ci_skips")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*could not import 'no_such_module_for_ci_skips'*",
            "*missing component: Python package no_such_module_for_ci_skips*",
            "*install it with: python3 dev.py test*",
        ]
    )
    assert result.ret != pytest.ExitCode.OK


@pytest.mark.parametrize("ci", [None], indirect=True)
def test_importorskip_skips_outside_ci(pytester: pytest.Pytester, ci: str | None) -> None:
    pytester.makepyfile(test_inner=IMPORTORSKIP)
    result = pytester.runpytest("-p", "tests.ci_skips")
    result.assert_outcomes(skipped=1)
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_rsyslog_hint() -> None:
    from tests.ci_skips import ci_failure

    text = ci_failure("rsyslogd is not installed (Debian: apt-get install rsyslog)")
    assert "missing component: rsyslog\n" in text
    assert "install it with: apt-get install rsyslog" in text
