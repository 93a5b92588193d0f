"""Reasoning blocks out of chat answers, as LocalAI does (``pkg/reasoning``).

A model that thinks before it answers writes ``<think>...</think>`` (or one of the other tag
pairs below) into its text. The block goes to ``message.reasoning_content`` (and LocalAI's
``reasoning``), the rest is the content. When the prompt ends inside an opened block (templates
that write ``<think>`` for the model), the answer starts inside it. Several blocks are joined
with a blank line; a block the answer never closes runs to its end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modelyard.compiler.plan import Reasoning

# (start, end): the tags models use, as llama.cpp's chat parser and LocalAI know them.
TAG_PAIRS: tuple[tuple[str, str], ...] = (
    ("<|START_THINKING|>", "<|END_THINKING|>"),  # Command-R
    ("<|inner_prefix|>", "<|inner_suffix|>"),  # Apertus
    ("<seed:think>", "</seed:think>"),  # Seed
    ("<think>", "</think>"),  # DeepSeek-R1, Qwen3, Granite, ExaOne
    ("<|think|>", "<|end|><|begin|>assistant<|content|>"),  # Solar Open
    ("<|channel>thought", "<channel|>"),  # Gemma 4
    ("<thinking>", "</thinking>"),
    ("[THINK]", "[/THINK]"),  # Magistral
)


def _pairs(settings: Reasoning) -> tuple[tuple[str, str], ...]:
    return (*settings.tag_pairs, *TAG_PAIRS)


def opened_in_prompt(prompt: str, settings: Reasoning) -> str | None:
    """The start tag the prompt leaves open (the answer continues inside it), or None."""
    if not (settings.extract and settings.prefill):
        return None
    ends = dict(_pairs(settings))
    text = prompt.rstrip()
    for start in (*settings.start_tokens, *(s for s, _ in _pairs(settings))):
        at = text.rfind(start)
        end = ends.get(start)
        if at != -1 and (end is None or text.rfind(end) < at):
            return start
    return None


def split(text: str, settings: Reasoning, opened: str | None = None) -> tuple[str, str]:
    """(reasoning, content) of an answer. ``opened``: the prompt's open start tag."""
    if not settings.extract:
        return "", text
    if opened is not None and opened not in text.lstrip():
        stripped = text.lstrip()
        text = text[:len(text) - len(stripped)] + opened + stripped
    pairs = _pairs(settings)
    reasoning, content, position = [], [], 0
    while True:
        found = None  # (start index, start tag, end tag) of the earliest block
        for start, end in pairs:
            at = text.find(start, position)
            if at != -1 and (found is None or at < found[0]):
                found = (at, start, end)
        if found is None:
            content.append(text[position:])
            break
        at, start, end = found
        content.append(text[position:at])
        closing = text.find(end, at + len(start))
        inner_end = len(text) if closing == -1 else closing
        if inner := text[at + len(start):inner_end].strip():
            reasoning.append(inner)
        if closing == -1:
            break
        position = closing + len(end)
    return ("\n\n".join(reasoning) if settings.return_reasoning else ""), "".join(content)


@dataclass
class ReasoningStream:
    """Streamed text split as it arrives: ``feed`` returns the new (reasoning, content) deltas.
    Text that could still become a tag (``<thi``, ``</think``) is held back until it is known."""

    settings: Reasoning
    opened: str | None = None
    _text: str = ""
    _reasoning: str = ""
    _content: str = ""
    _tags: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        self._tags = tuple(tag for pair in _pairs(self.settings) for tag in pair)

    def feed(self, text: str, final: bool = False) -> tuple[str, str]:
        self._text += text
        known = self._text if final else self._text[:len(self._text) - self._held_back()]
        reasoning, content = split(known, self.settings, self.opened)
        # What was sent stays sent: only what extends it is new.
        new_reasoning = reasoning[len(self._reasoning):] if reasoning.startswith(self._reasoning) else ""
        new_content = content[len(self._content):] if content.startswith(self._content) else ""
        self._reasoning, self._content = self._reasoning + new_reasoning, self._content + new_content
        return new_reasoning, new_content

    def flush(self) -> tuple[str, str]:
        return self.feed("", final=True)

    def _held_back(self) -> int:
        """The length of the longest end of the text that is the beginning of a tag."""
        if not self.settings.extract:
            return 0
        longest = max(map(len, self._tags), default=0)
        for size in range(min(len(self._text), longest - 1), 0, -1):
            tail = self._text[-size:]
            if any(tag.startswith(tail) and tag != tail for tag in self._tags):
                return size
        return 0
