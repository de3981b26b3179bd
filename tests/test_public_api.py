"""The front door: what ``import safe_rotating`` offers, and what it does not pay for."""

from __future__ import annotations

import subprocess
import sys

import safe_rotating


def test_everything_in_all_is_there() -> None:
    for name in safe_rotating.__all__:
        assert getattr(safe_rotating, name) is not None


def test_the_client_is_imported_only_when_asked_for() -> None:
    code = (
        "import sys, safe_rotating\n"
        "assert 'safe_rotating.client' not in sys.modules\n"
        "assert safe_rotating.LogServerHandler.__module__ == 'safe_rotating.client'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_dict_config_takes_the_server_handler_by_its_short_class_path() -> None:
    code = (
        "import logging, logging.config\n"
        "logging.config.dictConfig({'version': 1, 'handlers': {'central': {\n"
        "    'class': 'safe_rotating.LogServerHandler', 'address': '127.0.0.1:9',\n"
        "    'spool_dir': False}}, 'root': {'handlers': ['central']}})\n"
        "(handler,) = logging.getLogger().handlers\n"
        "assert type(handler).__name__ == 'LogServerHandler', handler\n"
        "handler.close()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
