"""gunicorn -c gunicorn.conf.py   (add --preload to build the app, and the handler, in the master)

The settings live in safe_rotating/_django_site/gunicorn_conf.py, which the stress command uses
too; gunicorn reads the names below from this module.
"""

from safe_rotating._django_site.gunicorn_conf import (
    bind,
    logconfig_dict,
    loglevel,
    worker_class,
    workers,
    wsgi_app,
)

__all__ = ["bind", "logconfig_dict", "loglevel", "worker_class", "workers", "wsgi_app"]
