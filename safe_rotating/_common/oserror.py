"""OSErrors re-phrased so that a person knows what to do about them."""

from __future__ import annotations

import errno
import os
import stat

__all__ = ["describe_owner", "describe_stat", "explain"]


def _user(uid: int) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _group(gid: int) -> str:
    try:
        import grp

        return f"{grp.getgrgid(gid).gr_name} (gid {gid})"
    except (ImportError, KeyError):
        return f"gid {gid}"


def describe_stat(st: os.stat_result) -> str:
    """``"owner www-data (uid 33), group adm (gid 4), mode 0640"``."""
    return (
        f"owner {_user(st.st_uid)}, group {_group(st.st_gid)}, mode {stat.S_IMODE(st.st_mode):04o}"
    )


def describe_owner(path: str, follow: bool = True) -> str | None:
    """:func:`describe_stat` of ``path`` (of a link itself unless ``follow``), if it exists."""
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except OSError:
        return None
    return describe_stat(st)


def _blocking_ancestor(path: str) -> str | None:
    """The first directory on the way to ``path`` that this process may not enter."""
    effective = os.access in os.supports_effective_ids
    parts = os.path.abspath(path).split(os.sep)[1:-1]
    current = os.sep
    for part in parts:
        current = os.path.join(current, part)
        if os.path.isdir(current) and not os.access(current, os.X_OK, effective_ids=effective):
            return current
    return None


def _permission_hint(path: str, action: str) -> str:
    """Name the file or directory that really refuses access, its owner and mode."""
    me = f"this process runs as {_user(os.geteuid())}, group {_group(os.getegid())}"
    folder = os.path.dirname(path) or "."
    blocked = _blocking_ancestor(path)
    if blocked is not None:
        facts = describe_owner(blocked) or "owner unknown"
        return (
            f"permission denied: this process may not enter {blocked!r} ({facts}); {me}; "
            f"give it search (x) permission there, or put the log elsewhere"
        )
    if os.path.lexists(path):
        facts = describe_owner(path) or "owner unknown"
        target = path
        fix = (
            "make the file writable for this user (the same user for every process, or a shared "
            "group with chmod=0o660 so that the files a process creates stay group-writable)"
        )
    else:
        facts = describe_owner(folder) or "owner unknown"
        target = folder
        fix = f"let this user create files in {folder!r} or create {path!r} for it beforehand"
    return f"permission denied on {target!r} ({facts}); {me}; {fix}"


def explain(exc: OSError, action: str, path: str, as_type: type[OSError] | None = None) -> OSError:
    """Re-phrase an OSError so a person knows what to do about it."""
    folder = os.path.dirname(path)
    code = exc.errno or 0
    if code in (errno.EACCES, errno.EPERM):
        hint = _permission_hint(path, action)
    else:
        hints = {
            errno.ENOENT: f"the directory {folder!r} does not exist; create it or fix the path",
            errno.ENOSPC: "the disk is full; free space or lower maxBytes/backupCount",
            errno.EDQUOT: "the disk quota is exhausted; free space or raise the quota",
            errno.EROFS: "the file system is mounted read-only",
            errno.EISDIR: "the path is a directory, not a file",
        }
        hint = hints.get(code, exc.strerror or str(exc))
    new = (as_type or type(exc))(exc.errno, f"cannot {action} {path!r}: {hint}")
    new.__cause__ = exc
    return new
