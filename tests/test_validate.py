"""Durations: one rule for every timeout and period, from the handlers' arguments to the
server's settings (``safe_rotating._common.validate.check_timeout``).

A duration is a number of seconds, more than 0 and finite. Settings read as text (a command
line, a TOML file) may write it as a string of that number; nobody may write a unit ("5s"),
and infinity is refused wherever it is given: a timeout that never ends is not a timeout.
Every refusal names the argument and quotes the value it got.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from safe_rotating._common.validate import check_timeout
from safe_rotating.server.config import ConfigError
from safe_rotating.server.settings import build


@pytest.mark.parametrize(("value", "seconds"), [(30, 30.0), (0.5, 0.5), (1e-3, 0.001)])
def test_a_positive_number_is_that_many_seconds(value: float, seconds: float) -> None:
    assert check_timeout("lock_timeout", value) == seconds
    assert isinstance(check_timeout("lock_timeout", value), float)


@pytest.mark.parametrize("value", [0, -1, -0.5, math.inf, -math.inf, math.nan])
def test_zero_negative_infinite_and_nan_are_refused_naming_the_value(value: float) -> None:
    with pytest.raises(
        ValueError, match=r"^ack_timeout must be a positive, finite number"
    ) as caught:
        check_timeout("ack_timeout", value)
    assert f"got {value!r}" in str(caught.value)


@pytest.mark.parametrize("value", ["5", True, None, [5]])
def test_an_argument_must_be_a_number_not_text_nor_a_bool(value: Any) -> None:
    with pytest.raises(TypeError) as caught:
        check_timeout("flush_timeout", value)
    assert str(caught.value) == (
        f"flush_timeout must be a number of seconds, got {type(value).__name__}: {value!r}"
    )


@pytest.mark.parametrize(("value", "seconds"), [("30", 30.0), (" 2.5 ", 2.5), (7, 7.0)])
def test_a_setting_may_write_the_number_as_text(value: Any, seconds: float) -> None:
    assert check_timeout("read_timeout", value, text=True) == seconds


@pytest.mark.parametrize("value", ["5s", "1m", "", "soon"])
def test_a_setting_takes_no_unit_nor_other_text(value: str) -> None:
    with pytest.raises(TypeError, match=r"^read_timeout must be a number") as caught:
        check_timeout("read_timeout", value, text=True)
    assert str(caught.value) == (
        "read_timeout must be a number of seconds such as 30 or 0.5 (without a unit), "
        f"got {value!r}"
    )


@pytest.mark.parametrize("value", ["inf", "Infinity", "nan", "0", "-3"])
def test_a_setting_is_refused_when_not_positive_and_finite(value: str) -> None:
    with pytest.raises(
        ValueError, match=rf"^read_timeout must be a positive, finite .*got '{value}'"
    ):
        check_timeout("read_timeout", value, text=True)


@pytest.mark.parametrize("key", ["read_timeout", "drain_timeout", "hello_timeout", "idle_timeout"])
@pytest.mark.parametrize("value", ["inf", "-1", 0, -2.5])
def test_the_server_refuses_a_duration_not_more_than_0_and_finite(
    tmp_path: Path, key: str, value: Any
) -> None:
    with pytest.raises(ConfigError) as caught:
        build({"file": str(tmp_path / "app.log"), key: value})
    assert str(caught.value) == f"{key}: must be more than 0 seconds and finite, got {value!r}"


@pytest.mark.parametrize("key", ["read_timeout", "drain_timeout", "hello_timeout", "idle_timeout"])
@pytest.mark.parametrize("value", ["5s", "soon", True, [5]])
def test_the_server_refuses_a_duration_that_is_not_a_number(
    tmp_path: Path, key: str, value: Any
) -> None:
    with pytest.raises(ConfigError) as caught:
        build({"file": str(tmp_path / "app.log"), key: value})
    assert str(caught.value) == (
        f"{key}: expected a number of seconds such as 30 or 0.5 (without a unit), got {value!r}"
    )


def test_the_server_takes_its_durations_as_numbers_or_text(tmp_path: Path) -> None:
    config = build({"file": str(tmp_path / "app.log"), "read_timeout": "2.5", "idle_timeout": 60})
    assert (config.read_timeout, config.idle_timeout) == (2.5, 60.0)
