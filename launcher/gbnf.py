"""What the server and the llama.cpp worker need to know of GBNF text, without llama.cpp."""

from __future__ import annotations

import re

# GBNF's quoted strings and character classes (whose braces are characters, not repetitions).
LITERALS = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]')
# One GBNF character: an escape (\x.., \u...., \U........, or a one-letter escape) or itself.
_CHAR = re.compile(r"\\x([0-9a-fA-F]{2})|\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})|\\(.)|(.)", re.DOTALL)
_ESCAPES = {"n": 10, "r": 13, "t": 9}


def _code_points(text: str) -> list[int]:
    points = []
    for match in _CHAR.finditer(text):
        hex_digits = match.group(1) or match.group(2) or match.group(3)
        if hex_digits:
            points.append(int(hex_digits, 16))
        elif match.group(4) is not None:
            points.append(_ESCAPES.get(match.group(4), ord(match.group(4))))
        else:
            points.append(ord(match.group(5)))
    return points


def nul_match(grammar: str) -> str | None:
    """The literal or character class of ``grammar`` that can match U+0000, or None.

    llama.cpp ends its code-point sequences with 0, so a grammar element matching 0 matches the
    end of every partial token: the sampler lets any token through, the grammar's stacks run
    empty, and llama.cpp aborts (``Unexpected empty grammar stack``, SIGABRT), taking the
    model's worker down. A negated class (``[^...\\x00...]``) only excludes it and is fine.
    """
    for match in LITERALS.finditer(grammar):
        literal = match.group(0)
        if literal.startswith('"'):
            if 0 in _code_points(literal[1:-1]):
                return f"the string {literal[:40]}"
            continue
        body = literal[1:-1]
        if body.startswith("^"):
            continue
        points = _code_points(body)
        index = 0
        while index < len(points):  # items are single characters or ranges a-b
            if index + 2 < len(points) and points[index + 1] == ord("-"):
                low, high = points[index], points[index + 2]
                index += 3
            else:
                low = high = points[index]
                index += 1
            if low <= 0 <= high:
                return f"the character class {literal[:40]}"
    return None
