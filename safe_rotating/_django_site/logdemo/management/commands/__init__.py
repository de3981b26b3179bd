"""``python manage.py send_task``: see :mod:`.send_task`."""
