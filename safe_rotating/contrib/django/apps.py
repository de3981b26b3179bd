from __future__ import annotations

from django.apps import AppConfig


class SafeRotatingConfig(AppConfig):  # type: ignore[misc]  # Django ships no type hints
    name = "safe_rotating.contrib.django"
    label = "safe_rotating"
    verbose_name = "safe_rotating"

    def ready(self) -> None:
        from django.core import checks

        from safe_rotating.contrib.django.checks import check_logging

        checks.register(check_logging, "logging")
