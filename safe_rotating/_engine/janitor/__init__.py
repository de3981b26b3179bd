"""Work on the backups that writers never wait for: renumbering, compression and retention.

A rotation only moves the current file into the backup set, under the rotation lock, in a few
system calls. Everything slower happens afterwards, in a short-lived background thread of the
process that rotated (:meth:`~safe_rotating._engine.janitor.runner.Janitor.kick`), outside the
rotation lock:

* **renumbering** (:mod:`.renumbering`, on the file operations of :mod:`.staged`): the pending
  names of a size-rotated set are brought back to the stdlib's once rotations pause;
* **compression** (:mod:`.compression`) of each plain backup nobody has written to for
  ``Compression.grace`` seconds: open it without following a link and check that it is the
  regular file its name holds (``fstat`` against ``lstat``) before reading a byte, write
  ``.<base>.compressing.<random><suffix>`` beside it (created ``O_EXCL``, mode 0600), ``fsync``,
  then — under the rotation lock, after checking that the backup is still there, unchanged —
  give the temporary file its final mode and owner, rename it to ``<backup><suffix>`` and remove
  the plain file. A compressed name therefore always holds a whole file; a crash leaves either
  the plain backup (and a temporary file that the next janitor removes) or both (and the next
  janitor removes the plain one);
* **retention** (:mod:`.retention`): ``max_age``, ``max_total_bytes``, and ``backupCount`` for
  time-named sets, the oldest backup first, never the current file.

The backups are listed by :mod:`.listing`; every job shares the rotation lock and the reports
of :mod:`.context`; :mod:`.runner` holds the small :class:`~.runner.Janitor` that runs them,
one process at a time.

The directory may be shared with users we do not trust ("Several users" in docs): every file
the janitor opens or creates goes through :mod:`safe_rotating._common.osfiles`. A backup name
holding a link is never read through (its compression is refused and reported once); renames
and removals act on names and never follow links.
"""
