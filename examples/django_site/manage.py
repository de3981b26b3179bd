#!/usr/bin/env python
"""manage.py of the example site, whose code ships inside the package (safe_rotating/_django_site).

python manage.py check                 # runs safe_rotating's checks of LOGGING too
python manage.py runserver 127.0.0.1:8000
python manage.py send_task --request 4 -n 100   # with a Celery worker running (see README.md)
"""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "safe_rotating._django_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
