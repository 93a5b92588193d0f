"""What happens to generated text on its way out: stop sequences, and the YAML's output rules.

Stop sequences are enforced here, for every backend, while streaming: text that could be the
start of a stop sequence is held back until it is known not to be one, so a stop string never
reaches the client, not even in part.
"""

from __future__ import annotations

import re

from modelyard.compiler.plan import OutputRules


class StopFilter:
    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.buffer = ""
        self.stopped = False
        self.matched: str | None = None  # the stop sequence that ended the text

    def feed(self, text: str) -> str:
        """Text safe to emit now; sets ``stopped`` when a stop sequence appears."""
        if self.stopped:
            return ""
        self.buffer += text
        hits = [(self.buffer.find(s), s) for s in self.stops if s in self.buffer]
        if hits:
            index, self.matched = min(hits)
            out, self.buffer, self.stopped = self.buffer[:index], "", True
            return out
        hold = max((self._partial(s) for s in self.stops), default=0)
        cut = len(self.buffer) - hold
        out, self.buffer = self.buffer[:cut], self.buffer[cut:]
        return out

    def flush(self) -> str:
        out, self.buffer = self.buffer, ""
        return out

    def _partial(self, stop: str) -> int:
        """Length of the longest end of the buffer that begins ``stop``: only the places in the
        buffer's tail where ``stop``'s first character stands are tried."""
        buffer = self.buffer
        start = max(0, len(buffer) - len(stop) + 1)
        index = buffer.find(stop[0], start)
        while index >= 0:
            if stop.startswith(buffer[index:]):
                return len(buffer) - index
            index = buffer.find(stop[0], index + 1)
        return 0


def finetune(prompt: str, reply: str, rules: OutputRules) -> str:
    """LocalAI's ``Finetune`` (core/backend/llm.go l.473), in its order, on a non-streamed reply:
    the YAML's echo puts the rendered prompt first; cutstrings are removed; extract_regex, when
    any matches, keeps the concatenation of each one's first match; each trimspace prefix is
    removed from the very start, then whitespace; each trimsuffix likewise from the end.
    Patterns are Python's ``re`` (LocalAI's are Go RE2; compile checks each one)."""
    if rules.echo:
        reply = prompt + reply
    for pattern in rules.cutstrings:
        reply = re.sub(pattern, "", reply)
    extracted = ""
    for pattern in rules.extract_regex:
        found = re.search(pattern, reply)
        extracted += found.group(0) if found else ""
    if extracted:
        reply = extracted
    for prefix in rules.trimspace:
        reply = reply.removeprefix(prefix).strip()
    for suffix in rules.trimsuffix:
        reply = reply.removesuffix(suffix).strip()
    return reply
