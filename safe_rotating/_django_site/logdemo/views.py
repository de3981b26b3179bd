"""Views that log the way a real application does, and the view the stress command calls."""

from __future__ import annotations

import logging
import os

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

from safe_rotating._django_site.logdemo.records import MAX_RECORDS, log_records

log = logging.getLogger("logdemo.views")


def index(request: HttpRequest) -> HttpResponse:
    """Log at several levels, with ``extra`` fields a formatter or a filter can use."""
    user = getattr(request, "user", None)
    extra = {"path": request.path, "remote": request.META.get("REMOTE_ADDR"), "user": str(user)}
    log.debug("index requested", extra=extra)
    log.info("index served to %s", extra["remote"], extra=extra)
    if "warn" in request.GET:
        log.warning("a warning was asked for: %s", request.GET["warn"], extra=extra)
    return HttpResponse(f"logged from pid {os.getpid()}\n", content_type="text/plain")


def fail(request: HttpRequest) -> HttpResponse:
    """Raise: Django answers 500 and ``django.request`` logs the traceback, with the request
    in the record (``record.request``) and ``status_code`` 500."""
    log.error("about to fail on purpose", extra={"path": request.path})
    raise RuntimeError("logdemo.views.fail raised on purpose")


def stress(request: HttpRequest) -> HttpResponse:
    """``GET /stress?request=ID&n=K``: log K numbered records of request ID.

    Answers ``{"pid": ..., "request": ID, "records": K}`` once every record is logged: the
    stress command counts the request as answered only then.
    """
    try:
        request_id = int(request.GET["request"])
        count = int(request.GET.get("n", "10"))
        if not 0 <= request_id < 10**8 or not 0 <= count <= MAX_RECORDS:
            raise ValueError
    except (KeyError, ValueError):
        return HttpResponseBadRequest(
            f"usage: /stress?request=ID&n=K with 0 <= ID < 10**8, 0 <= K <= {MAX_RECORDS}\n"
        )
    pid = log_records(request_id, count)
    return JsonResponse({"pid": pid, "request": request_id, "records": count})
