"""``logdemo``: views and a Celery task that log through the site's ``LOGGING``."""
