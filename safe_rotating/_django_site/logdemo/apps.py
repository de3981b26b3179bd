from __future__ import annotations

from django.apps import AppConfig


class LogdemoConfig(AppConfig):  # type: ignore[misc]  # Django ships no type hints
    name = "safe_rotating._django_site.logdemo"
    label = "logdemo"
    verbose_name = "safe_rotating log demo"
