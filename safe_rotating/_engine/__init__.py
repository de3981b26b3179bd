"""The rotation engine: one log file and its lock, the plans of renames, schedules, the queued
writer, the janitor. It knows nothing of ``logging``: the handlers and the server call it."""
