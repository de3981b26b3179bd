"""Celery settings of the demo (standard library only): a broker that needs no server.

kombu's filesystem transport keeps the queue in a directory and Celery's ``file://`` result
backend keeps results in another, so a worker and the process sending tasks need only share
``directory``. The stress command builds its sending app from the same function.
"""

from __future__ import annotations

import os
from typing import Any


def celery_config(directory: str) -> dict[str, Any]:
    """Celery's settings (lowercase names) for a broker and result store under ``directory``."""
    directory = os.path.abspath(directory)
    for name in ("queue", "control", "results"):
        os.makedirs(os.path.join(directory, name), exist_ok=True)
    queue = os.path.join(directory, "queue")
    return {
        # The host part means nothing to this transport; naming one keeps kombu from warning
        # "No hostname was supplied" into the log at every connection.
        "broker_url": "filesystem://localhost//",
        # kombu's filesystem transport, but writing each message under a temporary name first:
        # the stock one can hand a worker a half-written message under load.
        "broker_transport": "safe_rotating._django_site.kombu_fs:Transport",
        "broker_transport_options": {
            "data_folder_in": queue,
            "data_folder_out": queue,
            "control_folder": os.path.join(directory, "control"),
            "polling_interval": 0.05,
        },
        "result_backend": "file://" + os.path.join(directory, "results"),
        # Without this, the worker removes the root logger's handlers when it starts, and the
        # handler from LOGGING stops receiving records without any error.
        "worker_hijack_root_logger": False,
        "task_acks_late": False,
        "worker_prefetch_multiplier": 4,
    }
