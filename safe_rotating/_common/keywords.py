"""Keyword-argument typos answered with the nearest real argument names.

``checked_keywords`` wraps a handler's ``__init__``: a keyword it does not take (``max_bytes=``,
``backup_count=``, ``maxbytes=``) raises a ``TypeError`` that names it and suggests the argument
meant, instead of Python's bare "got an unexpected keyword argument". The explicit signature
stays what ``inspect.signature``, ``logging.config.dictConfig`` and IDEs see (``functools.wraps``
sets ``__wrapped__``, which ``inspect.signature`` follows); a known keyword costs one set lookup.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Collection
from typing import Concatenate, ParamSpec, TypeVar

__all__ = ["checked_keywords", "nearest_names", "unknown_keyword"]

_P = ParamSpec("_P")
_S = TypeVar("_S")
_KEYWORD_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _folded(name: str) -> str:
    """``max_bytes``, ``maxbytes`` and ``MaxBytes`` all fold to ``maxbytes``."""
    return name.replace("_", "").replace("-", "").lower()


def nearest_names(name: str, known: Collection[str]) -> list[str]:
    """The real names ``name`` was probably meant as: the one that differs only in case and
    underscores (``max_bytes``: ``maxBytes``), else the closest spellings, at most three."""
    folded = _folded(name)
    same = [k for k in sorted(known) if _folded(k) == folded]
    return same or difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)


def unknown_keyword(owner: str, name: str, known: Collection[str]) -> str:
    """The message for ``owner(name=...)`` when ``owner`` takes no such keyword."""
    message = f"{owner}() got an unexpected keyword argument {name!r}"
    nearest = nearest_names(name, known)
    if nearest:
        return message + "; did you mean " + " or ".join(repr(n) for n in nearest) + "?"
    return message + "; its keyword arguments are " + ", ".join(sorted(known))


def checked_keywords(
    init: Callable[Concatenate[_S, _P], None],
) -> Callable[Concatenate[_S, _P], None]:
    """Wrap ``init`` (an ``__init__`` without ``**kwargs``) so an unknown keyword raises
    ``TypeError`` naming it and the nearest real names, before ``init`` runs."""
    _, *parameters = inspect.signature(init).parameters.values()  # without ``self``
    known = frozenset(p.name for p in parameters if p.kind in _KEYWORD_KINDS)

    @functools.wraps(init)
    def checked(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> None:
        for name in kwargs:
            if name not in known:
                raise TypeError(unknown_keyword(type(self).__name__, name, known))
        init(self, *args, **kwargs)

    return checked
