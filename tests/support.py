"""Helpers shared by the tests."""

from __future__ import annotations

import logging
import sys
from typing import Any

from safe_rotating import SafeRotatingFileHandler


class Recording(SafeRotatingFileHandler):
    """Keeps what went to ``handleError`` (the exception active at that moment)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures: list[BaseException] = []

    def handleError(self, record: logging.LogRecord) -> None:
        failure = sys.exc_info()[1]
        assert failure is not None
        self.failures.append(failure)
