"""Did-you-mean hints for misspelled keys and values."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping


def did_you_mean(word: str, candidates: Iterable[str], aliases: Mapping[str, str] | None = None) -> str:
    """`` (did you mean 'context_size'?)`` or an empty string when nothing is close.

    An alias that matches is shown as the canonical name it stands for.
    """
    pool = list(candidates)
    match = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    if not match:
        lowered = {c.lower(): c for c in pool}
        match = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
        match = [lowered[m] for m in match]
    if not match:
        return ""
    best = (aliases or {}).get(match[0], match[0])
    return f" (did you mean {best!r}?)"
