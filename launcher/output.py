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

    def feed(self, text: str) -> str:
        """Text safe to emit now; sets ``stopped`` when a stop sequence appears."""
        if self.stopped:
            return ""
        self.buffer += text
        hits = [(self.buffer.find(s), s) for s in self.stops if s in self.buffer]
        if hits:
            index = min(hits)[0]
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
        """Length of the longest end of the buffer that begins ``stop``."""
        for size in range(min(len(stop) - 1, len(self.buffer)), 0, -1):
            if self.buffer.endswith(stop[:size]):
                return size
        return 0


def has_rules(rules: OutputRules) -> bool:
    return bool(rules.cutstrings or rules.trimspace or rules.trimsuffix)


def apply_rules(text: str, rules: OutputRules) -> str:
    """LocalAI's post-processing, in its order: cutstrings, trimspace, trimsuffix."""
    for pattern in rules.cutstrings:
        text = re.sub(pattern, "", text)
    for trim in rules.trimspace:
        text = text.strip().removeprefix(trim).removesuffix(trim).strip()
    for suffix in rules.trimsuffix:
        text = text.removesuffix(suffix)
    return text
