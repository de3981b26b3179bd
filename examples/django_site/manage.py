#!/usr/bin/env python
"""manage.py of the example site, whose code ships inside the package (safe_rotating/_django_site).

python manage.py check                 # runs the safe_rotating.W001-W004 checks too
python manage.py runserver 127.0.0.1:8000
"""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "safe_rotating._django_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
