"""Django system checks for the ``LOGGING`` setting.

Add ``"safe_rotating.contrib.django"`` to ``INSTALLED_APPS``; ``manage.py check`` (and every
``runserver``/``migrate``) then warns about:

``safe_rotating.W001``
    a handler using ``logging.handlers.RotatingFileHandler`` or ``TimedRotatingFileHandler``,
    which are not process-safe;
``safe_rotating.W002``
    ``mode='w'`` on a rotating handler;
``safe_rotating.W003``
    two handlers writing one file with different rotation settings, a timed and a size one included;
``safe_rotating.W004``
    a log directory this process cannot write;
``safe_rotating.W005``
    ``maxBytes`` without ``backupCount`` on a size handler (the file never rotates, or is emptied);
``safe_rotating.W006``
    a relative ``filename``;
``safe_rotating.W007``
    handlers on the root logger while Celery, configured in the settings, hijacks it.

Each id's meaning and fix, and what W007 can see: :mod:`safe_rotating.contrib.django.checks`.
Silence one the usual way, e.g. ``SILENCED_SYSTEM_CHECKS = ["safe_rotating.W001"]``.
"""

from safe_rotating.contrib.django.checks import check_logging

__all__ = ["check_logging"]
