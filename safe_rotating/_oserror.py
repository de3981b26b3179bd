"""OSErrors re-phrased so that a person knows what to do about them."""

from __future__ import annotations

import errno
import os

__all__ = ["explain"]


def explain(exc: OSError, action: str, path: str, as_type: type[OSError] | None = None) -> OSError:
    """Re-phrase an OSError so a person knows what to do about it."""
    folder = os.path.dirname(path)
    hints = {
        errno.ENOENT: f"the directory {folder!r} does not exist; create it or fix the path",
        errno.EACCES: f"permission denied; the process (uid {os.getuid()}) needs write access "
        f"to {folder!r}",
        errno.EPERM: "operation not permitted; check the file's owner and mode",
        errno.ENOSPC: "the disk is full; free space or lower maxBytes/backupCount",
        errno.EDQUOT: "the disk quota is exhausted",
        errno.EROFS: "the file system is mounted read-only",
        errno.EISDIR: "the path is a directory, not a file",
    }
    hint = hints.get(exc.errno or 0, exc.strerror or str(exc))
    new = (as_type or type(exc))(exc.errno, f"cannot {action} {path!r}: {hint}")
    new.__cause__ = exc
    return new
