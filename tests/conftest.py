from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

# ci_skips: under CI=true a skipped test (a missing install) fails instead; see that module.
pytest_plugins = ["pytester", "tests.ci_skips", "tests.neighbour"]


@pytest.fixture
def logger(request: pytest.FixtureRequest) -> Iterator[logging.Logger]:
    """A private logger that does not propagate; its handlers are closed afterwards."""
    log = logging.getLogger(f"tests.{request.node.name}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
