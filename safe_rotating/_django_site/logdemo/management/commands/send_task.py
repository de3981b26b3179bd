"""``python manage.py send_task --request ID -n K``: send the Celery task, wait for its answer.

``log_records_task`` is a ``shared_task``: ``.delay()`` sends it through Celery's *current* app.
Until the site's app (``celery_app.py``) has been imported, that is Celery's default app, whose
broker is ``amqp://localhost`` ("Connection refused"). So this command imports the site's app
first, as a Django project's ``__init__.py`` usually does; the task then goes to the configured
broker, kombu's filesystem transport under ``SAFE_ROTATING_CELERY_DIR``.
"""

from __future__ import annotations

from typing import Any

from celery.exceptions import TimeoutError as ResultTimeout
from django.core.management.base import BaseCommand, CommandError, CommandParser

# Imported for its effect: creating the app makes it Celery's current app (see above).
from safe_rotating._django_site import celery_app  # noqa: F401
from safe_rotating._django_site.logdemo.records import MAX_RECORDS
from safe_rotating._django_site.logdemo.tasks import log_records_task


class Command(BaseCommand):  # type: ignore[misc]  # Django ships no type hints
    help = (
        "Send logdemo's Celery task, which logs K numbered records of request ID from a worker, "
        "and wait until a worker has run it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--request", type=int, default=1, help="request id (default 1)")
        parser.add_argument("-n", type=int, default=10, help="records to log (default 10)")
        parser.add_argument(
            "--timeout", type=float, default=30.0, help="seconds to wait for a worker (30)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        request, count, timeout = options["request"], options["n"], options["timeout"]
        if not 0 <= request < 10**8 or not 0 <= count <= MAX_RECORDS:
            raise CommandError(f"need 0 <= --request < 10**8 and 0 <= -n <= {MAX_RECORDS}")
        result = log_records_task.delay(request, count)
        try:
            answer = result.get(timeout=timeout, interval=0.1)
        except ResultTimeout:
            raise CommandError(
                f"no worker ran task {result.id} within {timeout:g} s; start one from this "
                "directory: celery -A safe_rotating._django_site.celery_app worker"
            ) from None
        self.stdout.write(
            f"task {result.id}: worker pid {answer['pid']} logged {answer['records']} records "
            f"of request {answer['request']}"
        )
