"""Management commands of ``logdemo``."""
