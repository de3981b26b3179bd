"""A small Django project that logs through safe_rotating: the example site and the stress site.

``examples/django_site/`` in the source tree runs this project, and ``safe-rotating-stress
--django`` starts it under gunicorn, uWSGI and Celery from an installed package. Importing this
package imports nothing from Django; :mod:`.logsetup` (the ``LOGGING`` dict) needs only the
standard library.

Settings come from the environment (see :mod:`.logsetup`): ``SAFE_ROTATING_LOG_MODE``
(``file``, ``server`` or ``stdlib``), ``SAFE_ROTATING_LOG_FILE``, ``SAFE_ROTATING_MAX_BYTES``,
``SAFE_ROTATING_BACKUP_COUNT``, ``SAFE_ROTATING_SERVER``, ``SAFE_ROTATING_SPOOL_DIR`` and, for
Celery, ``SAFE_ROTATING_CELERY_DIR``.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent
SETTINGS_MODULE = "safe_rotating._django_site.settings"
WSGI_APP = "safe_rotating._django_site.wsgi:application"
CELERY_APP = "safe_rotating._django_site.celery_app:app"
GUNICORN_CONF = PROJECT_DIR / "gunicorn_conf.py"
UWSGI_INI = PROJECT_DIR / "uwsgi.ini"
