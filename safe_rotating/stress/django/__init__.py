"""``safe-rotating-stress --django``: real Django workers log through rotation, then every record
is checked.

Each scenario starts the site shipped in :mod:`safe_rotating._django_site` under a real server —
gunicorn sync workers (with and without ``--preload``), uWSGI (default mode and
``--lazy-apps``), a Celery prefork worker — on 127.0.0.1, sends it a bounded load (a number of
requests and a time limit, from concurrent client threads), stops it the way an operator does
(SIGTERM: gunicorn's graceful shutdown, uWSGI's through the site's ``uwsgi.ini``, Celery's warm
shutdown) and reads the rotated files back with :func:`safe_rotating.verify.verify_requests`:
every request the client saw answered must have all its records, none duplicated or torn, each
worker's records in order from the oldest backup to the current file, no file over the size
limit, and no more than ``backupCount + 1`` files.

Two modes, both run by default (``--mode both``):

* **file**: each worker's ``SafeRotatingFileHandler`` writes and rotates the files; a file may
  pass ``maxBytes`` by one record per worker process.
* **server**: the command starts ``safe-rotating-server`` on a free port of 127.0.0.1, writing
  the run's files with the same ``maxBytes`` and a line format identical to file mode's; each
  worker's ``LogServerHandler`` sends it its records (spooling in the run directory). Once the
  web server has stopped, its workers having flushed their handlers as they exited, the log
  server is stopped with SIGTERM (it writes what it holds and exits 0) and its files are read
  back with the same verdict. The server is their only writer and never lets a file pass
  ``maxBytes``; each worker process must appear in its journal under a client id of its own.

``--handler both`` (the default) runs every scenario through safe_rotating and then through
``logging.handlers.RotatingFileHandler`` (file mode), whose failure is the expected outcome and
does not change the exit status; ``--handler stdlib`` alone exits 1 when the checks catch it,
like the plain command.

Only the standard library is needed to drive the runs; the servers need Django (the ``django``
extra), gunicorn, uWSGI and Celery installed in the interpreter's environment. A scenario whose
server is missing is reported as skipped with the reason.

The package: :mod:`.cli` (the options and the plan of runs), :mod:`.scenarios` (what each runs),
:mod:`.runner` (one run), :mod:`.sinks` (file or server mode), :mod:`.load` (the clients),
:mod:`.process` (the processes started), :mod:`.result` and :mod:`.report`.
"""
