"""The shortest text that completes a JSON document cut off mid-way.

A generation constrained to JSON (``response_format``, forced tool calls) that reaches
``max_tokens`` ends mid-string or mid-object, and the client cannot parse it. llama.cpp's server
lets that happen; modelyard's llama-cpp slots watch the output with a ``JsonCloser`` and, once
the tokens left are no more than the closing text needs, write that text instead (each token
still checked by the grammar, so a schema that requires more simply runs out as before).

``JsonCloser.feed`` reads the output as it is generated; ``closing()`` is what would make it a
complete document: ``{"a": "tex`` needs ``"}``, ``[1, 2,`` needs ``null]``, ``{"k"`` needs
``:null}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# One sampled token can lengthen the closing by this many tokens (a key's opening quote turns "}"
# into '":null}'): a backend starts closing that much before the closing alone would need.
CLOSING_MARGIN = 4

_LITERALS = ("true", "false", "null")
_NUMBER = frozenset("0123456789+-.eE")


@dataclass
class _Container:
    kind: str  # "{" or "["
    phase: str  # object: first, key, colon, value, after; array: first, value, after


@dataclass
class JsonCloser:
    stack: list[_Container] = field(default_factory=list)
    started: bool = False  # a top-level value has begun
    in_string: bool = False
    string_is_key: bool = False
    escape: int = 0  # characters of an escape still to come (1 after "\", 4 more after "\u")
    literal: str = ""  # a true/false/null being written
    number: str = ""  # a number being written

    def feed(self, text: str) -> None:
        for char in text:
            self._char(char)

    def closing(self) -> str:
        """What completes the document: empty once it is complete; ``{}`` before it begins."""
        out, value_closed = [], False  # value_closed: the innermost value in progress is ended by ``out``
        if self.in_string:
            if self.escape:
                out.append("n" if self.escape == 5 else "0" * self.escape)  # "\n", or a \u escape's digits
            out.append('":null' if self.string_is_key else '"')
            value_closed = True
        elif self.literal:
            out.append(next(word for word in _LITERALS if word.startswith(self.literal))[len(self.literal):])
            value_closed = True
        elif self.number:
            out.append("0" if self.number[-1] in "+-.eE" else "")
            value_closed = True
        for depth, container in enumerate(reversed(self.stack)):
            # An outer container's value is the inner one, closed just before.
            phase = "after" if depth > 0 or value_closed else container.phase
            if container.kind == "{":
                out.append({"first": "}", "key": '"":null}', "colon": ":null}", "value": "null}",
                            "after": "}"}[phase])
            else:
                out.append({"first": "]", "value": "null]", "after": "]"}[phase])
        if not self.started:
            out.append("{}")
        return "".join(out)

    # --- the scanner ----------------------------------------------------------------------

    def _char(self, char: str) -> None:
        if self.in_string:
            self._string_char(char)
            return
        if self.literal:
            if any(word.startswith(self.literal + char) for word in _LITERALS):
                self.literal += char
                if self.literal in _LITERALS:
                    self.literal = ""
                    self._value_done()
                return
            self.literal = ""  # invalid; the grammar would not allow it
        if self.number:
            if char in _NUMBER:
                self.number += char
                return
            self.number = ""
            self._value_done()
        if char in " \t\r\n":
            return
        top = self.stack[-1] if self.stack else None
        if char in "{[":
            self._value_begins()
            self.stack.append(_Container(char, "first"))
        elif char in "}]":
            if self.stack:
                self.stack.pop()
                self._value_done()
        elif char == '"':
            self.string_is_key = top is not None and top.kind == "{" and top.phase in ("first", "key")
            if not self.string_is_key:
                self._value_begins()
            self.in_string = True
        elif char == ":" and top is not None and top.kind == "{":
            top.phase = "value"
        elif char == "," and top is not None:
            top.phase = "key" if top.kind == "{" else "value"
        elif char in "tfn":
            self._value_begins()
            self.literal = char
        elif char in _NUMBER:
            self._value_begins()
            self.number = char

    def _string_char(self, char: str) -> None:
        if self.escape:
            self.escape = 4 if self.escape == 5 and char == "u" else self.escape - 1 if self.escape < 5 else 0
            return
        if char == "\\":
            self.escape = 5  # "5": right after the backslash (then "u" takes 4 hex digits)
        elif char == '"':
            self.in_string = False
            if self.string_is_key:
                self.string_is_key = False
                self.stack[-1].phase = "colon"
            else:
                self._value_done()

    def _value_begins(self) -> None:
        self.started = True

    def _value_done(self) -> None:
        if self.stack:
            self.stack[-1].phase = "after"
