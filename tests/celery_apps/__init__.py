"""Celery apps that the tests start under a real ``celery worker`` (see each module)."""
