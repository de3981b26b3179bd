"""Integrations with frameworks. Nothing here is imported by ``import safe_rotating``."""
