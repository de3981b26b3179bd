"""The Celery task: the same numbered records as the stress view, from a pool process."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from safe_rotating._django_site.logdemo.records import log_records


@shared_task(name="logdemo.log_records")  # type: ignore[untyped-decorator]
def log_records_task(request: int, count: int) -> dict[str, Any]:
    """Log ``count`` records of ``request``; the result says which pid logged them."""
    pid = log_records(request, count)
    return {"pid": pid, "request": request, "records": count}
