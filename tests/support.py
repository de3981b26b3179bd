"""Helpers shared by the tests."""

from __future__ import annotations

import logging
import sys
from typing import Any

from safe_rotating import SafeRotatingFileHandler, SafeTimedRotatingFileHandler


class _Records(logging.Handler):
    """Keeps what went to ``handleError`` (the exception active at that moment)."""

    failures: list[BaseException]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures = []

    def handleError(self, record: logging.LogRecord) -> None:
        failure = sys.exc_info()[1]
        assert failure is not None
        self.failures.append(failure)


class Recording(_Records, SafeRotatingFileHandler):
    """``SafeRotatingFileHandler`` keeping what went to ``handleError``."""


class TimedRecording(_Records, SafeTimedRotatingFileHandler):
    """``SafeTimedRotatingFileHandler`` keeping what went to ``handleError``."""
