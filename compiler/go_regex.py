"""LocalAI's ``cutstrings`` and ``extract_regex`` are Go regular expressions (RE2, Go's
``regexp``); modelyard applies them with Python's ``re``. This module maps the RE2 syntax Python
spells differently and finds what RE2 refuses, so a pattern behaves as it does in LocalAI:

* ``\\z`` (end of text) is Python's ``\\Z``; ASCII classes such as ``[[:alpha:]]`` are spelled out.
* Look-arounds and backreferences are Python-only: RE2 refuses them, and LocalAI skips such a
  pattern at request time (``core/backend/llm.go`` ``Finetune``), so it is skipped here too.
"""

from __future__ import annotations

import re

_POSIX = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7F", "blank": "\\t ", "cntrl": "\\x00-\\x1F\\x7F",
    "digit": "0-9", "graph": "!-~", "lower": "a-z", "print": " -~", "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ", "upper": "A-Z", "word": "0-9A-Za-z_", "xdigit": "0-9A-Fa-f",
}
_POSIX_CLASS = re.compile(r"\[:(\^?)([a-z]+):\]")
_PYTHON_ONLY = re.compile(r"\(\?(?:[=!]|<[=!])|\\[1-9]|\(\?P=")


def to_python(pattern: str) -> tuple[str | None, str | None]:
    """(the pattern in Python's syntax, or None when RE2 refuses it; why, when it does)."""
    if _PYTHON_ONLY.search(pattern):
        return None, "Go's RE2 has no look-arounds or backreferences: LocalAI skips this pattern, and so does modelyard"
    translated, index = [], 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            pair = pattern[index:index + 2]
            translated.append("\\Z" if pair == "\\z" else pair)
            index += 2
            continue
        match = _POSIX_CLASS.match(pattern, index)
        if match is not None:
            negated, name = match.groups()
            if name not in _POSIX or negated:
                return None, f"unknown ASCII class [:{negated}{name}:]"
            translated.append(_POSIX[name])
            index = match.end()
            continue
        translated.append(char)
        index += 1
    return "".join(translated), None


_GROUP_REFERENCE = re.compile(r"\$(?:\{(\w+)\}|(\w+))|\$\$|\\")


def replacement(value: str) -> str:
    """A Go ``ReplaceAllString`` replacement (``$1``, ``${1}``, ``$name``, ``$$``) for ``re.sub``."""
    def convert(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group(0) == "\\":
            return "\\\\"  # a literal backslash
        return f"\\g<{match.group(1) or match.group(2)}>"
    return _GROUP_REFERENCE.sub(convert, value)
