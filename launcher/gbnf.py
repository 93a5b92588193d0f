"""What the server and the llama.cpp worker need to know of GBNF text, without llama.cpp."""

from __future__ import annotations

import re
from dataclasses import dataclass

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


# --- LocalAI's call grammar around a converted JSON Schema (pkg/functions/grammars/rules.go) --


@dataclass(frozen=True)
class CallGrammarShape:
    """What LocalAI's GBNF adds around the calls: ``prefix`` before them; with ``mixed``, text
    instead of a call or before it (only one or the other with ``text_or_call``), and with
    ``text_after`` text after calls, text and calls alternating."""

    prefix: str = ""
    mixed: bool = False
    text_or_call: bool = False
    text_after: bool = False

    @property
    def plain(self) -> bool:
        return not self.prefix and not self.mixed


# rules.go names these `realvalue`, `freestring` and `mixedstring`; a converted schema's rules
# are named after its properties, so ours carry a prefix no JSON Schema converter writes.
_CALL, _TEXT, _MIXED = "modelyard-call", "modelyard-text", "modelyard-mixed"
# LocalAI's freestring (grammars/bnf_rules.go): any text but NUL, escapes kept whole.
_TEXT_RULE = f'{_TEXT} ::= ( [^\\x00] | "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F]) )*'
_RULE_NAME = re.compile(r"(?<![A-Za-z0-9-])root(?![A-Za-z0-9-])")


def shape_call_grammar(grammar: str, shape: CallGrammarShape) -> str:
    """``grammar`` (the calls' JSON Schema converted to GBNF, rooted at ``root``) with LocalAI's
    prefix and mixed text around it, as rules.go ``ToGrammar`` composes its own."""
    if shape.plain:
        return grammar
    body = _rename_root(grammar, _CALL)
    text = _TEXT if shape.text_or_call else _MIXED
    if shape.prefix:
        root = f"{gbnf_literal(shape.prefix)} {_CALL}"
        if shape.mixed:
            root = f"( {root} | {text} )"
    else:
        root = f"{text} | {_CALL}"
    lines = [f"root ::= {root}", body]
    if shape.mixed:
        lines.append(_TEXT_RULE)
    if shape.mixed and not shape.text_or_call:  # the mixed string, where the root uses it
        if shape.text_after:
            lines.append(f"{_MIXED} ::= {_TEXT} | ( {_TEXT} {_CALL} {_TEXT} )* | {_CALL}")
        else:
            lines.append(f"{_MIXED} ::= {_TEXT} | {_TEXT} {_CALL} | {_CALL}")
    return "\n".join(lines) + "\n"


def _rename_root(grammar: str, name: str) -> str:
    """Every use of the rule ``root`` renamed, literals and character classes left alone."""
    out, last = [], 0
    for match in LITERALS.finditer(grammar):
        out.append(_RULE_NAME.sub(name, grammar[last:match.start()]))
        out.append(match.group(0))
        last = match.end()
    out.append(_RULE_NAME.sub(name, grammar[last:]))
    return "".join(out)


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") \
        .replace("\t", "\\t")
    return f'"{escaped}"'
