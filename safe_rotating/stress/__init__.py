"""``safe-rotating-stress``: many processes log through rotation, then every record is checked.

Each writer (a thread inside a worker process) logs ``--records`` numbered lines; afterwards
:func:`safe_rotating.verify.verify` reads every file from the oldest backup to the current one
and prints the verdict. Exit status 0 means every check passed.

``--handler stdlib`` runs the same workload through ``logging.handlers.RotatingFileHandler`` to
show what the checks catch; ``--handler clh`` uses concurrent-log-handler when it is installed.
Every handler is judged by the same rules, including the size rule (see
:attr:`StressConfig.size_allowance`), and the report states the limit it applied.

``--when S --interval 1`` rotates by time as well (``SafeTimedRotatingFileHandler``, the stdlib's
``TimedRotatingFileHandler``, concurrent-log-handler's ``ConcurrentTimedRotatingFileHandler``):
lines then start with the record's creation time and each must be in the file of its period.
``--compress``, ``--max-age`` and ``--max-total-bytes`` turn on compression and retention;
``--precreate N`` starts from ``N`` existing backups.

``--django`` runs a different workload, with options of its own: a Django site under real
gunicorn, uWSGI and Celery workers (:mod:`safe_rotating.stress.django`).

The package: :mod:`.cli` (the options), :mod:`.config` (a run's settings and rules),
:mod:`.factories` (the handlers under test), :mod:`.runner` (the run), :mod:`.result` (the
verdict and report), :mod:`.progress`, :mod:`.logserver` (a ``safe-rotating-server`` subprocess,
for server mode) and :mod:`.django` (``--django``).
"""

from __future__ import annotations

from safe_rotating.stress.cli import main

__all__ = ["main"]
