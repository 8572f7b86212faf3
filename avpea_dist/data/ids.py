"""Release ids and values as every builder checks and quotes them.

``id_problem`` is the one id rule every release reader applies (AVE, MUSIC-AVQA, VALOR): an id names a video
file and goes into a tar key, so it is a non-empty string without whitespace anywhere (a stray tab or line
break inside an id is a broken annotation line, not part of a YouTube id), slashes, NUL or control
characters, and not '.' or '..'; a dataset whose ids have a known shape adds its own pattern. ``excerpt``
quotes a release value in a message at a bounded length (a 100 kB question is not echoed whole).
``in_several_splits`` finds records that one release lists in two splits (a leak between train and test).
"""

from __future__ import annotations

import re
from typing import Any, Iterable

EXCERPT = 80
"""Characters of a release value quoted in a message."""


def excerpt(value: Any, limit: int = EXCERPT) -> str:
    """``repr(value)``, cut to about ``limit`` characters with the length of what was left out."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def id_problem(vid: Any, *, name: str = "video_id", pattern: re.Pattern[str] | None = None,
               shape: str = "") -> str | None:
    """Why ``vid`` cannot be a video id (None when it can). ``pattern``/``shape``: the dataset's own id form
    (e.g. ``[A-Za-z0-9_-]+``, 'letters, digits, '-' or '_' (no dots)'), checked after the common rule."""
    if not isinstance(vid, str) or not vid:
        return f"{name} {excerpt(vid)} is not a non-empty string"
    if any(c.isspace() for c in vid):
        return f"{name} {excerpt(vid)} holds whitespace (a broken annotation line?); ids never do"
    if pattern is not None and not pattern.fullmatch(vid):
        return f"{name} {excerpt(vid)} must be {shape}"
    if any(c in "/\\" or not c.isprintable() for c in vid) or vid in (".", ".."):
        return f"{name} {excerpt(vid)} cannot name a file (slash, NUL or control character, or dots only)"
    return None


def in_several_splits(records: dict[str, Iterable[dict[str, Any]]]) -> list[dict[str, Any]]:
    """{split: identities of its records} -> one entry ``{**identity, "splits": [...]}`` per identity found in
    two or more splits, in order of first occurrence (the splits in the order given)."""
    where: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for split, identities in records.items():
        for identity in identities:
            key = repr(sorted(identity.items()))
            entry = where.setdefault(key, (identity, []))
            if split not in entry[1]:
                entry[1].append(split)
    return [{**identity, "splits": splits} for identity, splits in where.values() if len(splits) > 1]
