"""Generation requests for backend tests: greedy, unpenalized, every sampling field spelled out."""

from __future__ import annotations

from modelyard.launcher.backends.base import GenerationRequest


def greedy_request(prompt: str, **changes) -> GenerationRequest:
    values = dict(prompt=prompt, max_tokens=12, temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, typical_p=1.0,
                  repeat_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0, seed=None, ignore_eos=True)
    return GenerationRequest(**{**values, **changes})
