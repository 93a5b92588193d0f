"""Serving behaviour every backend must show, checked the same way on each (transformers' and
vLLM's suites run them on their tiny random Llamas, whose text is noise): a stop string cuts
the output where it first appears, and a seed reproduces sampling while different seeds differ."""

from __future__ import annotations


def check_stop_strings_cut_the_output(client, model: str) -> None:
    text = client.completions.create(model=model, prompt="The lazy dog", max_tokens=24).choices[0].text
    stop = next((text[i:i + 2] for i in range(len(text) // 3, len(text) - 1) if text[i:i + 2].isprintable()
                 and text[i:i + 2].strip()), None)
    assert stop, f"need a visible stop string in {text!r}"
    cut = client.completions.create(model=model, prompt="The lazy dog", max_tokens=24, stop=[stop])
    assert cut.choices[0].text == text[:text.index(stop)] and cut.choices[0].finish_reason == "stop"


def check_a_seed_reproduces_sampling(client, model: str) -> None:
    def sample(seed: int) -> str:
        return client.completions.create(model=model, prompt="café", max_tokens=16, temperature=1.0,
                                         seed=seed).choices[0].text

    assert sample(7) == sample(7)
    assert len({sample(seed) for seed in range(4)}) > 1
