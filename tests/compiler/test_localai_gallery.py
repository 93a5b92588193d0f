"""Every LocalAI gallery base compiles, or is refused with one clear reason."""

from __future__ import annotations

import collections

from modelyard.compiler import Severity

from .fakes import compile_yaml, default_probe
from .localai_corpus import base_configs

TEXT_BACKENDS = {"llama-cpp", "transformers", "vllm", "exllama2", "exllamav2", "llama", None}


def test_every_base_config_compiles_or_is_refused_for_one_reason(capsys) -> None:
    bases = base_configs()
    assert len(bases) >= 80
    outcomes: collections.Counter[str] = collections.Counter()
    failures = []
    probe = default_probe()
    probe.backends = {"llama-cpp", "transformers", "vllm", "exllama2"}
    for name, config in bases:
        stem = name.removesuffix(".yaml")
        # The bases hold no name and no model file of their own: gallery entries add them.
        result = compile_yaml({f"bases/{name}": config}, probe=probe, check_files=False,
                              sets=(f"name={stem}", "parameters.model=model.gguf"))
        errors = [d for d in result.diagnostics if d.severity is Severity.ERROR]
        if result.ok:
            outcomes["compiled"] += 1
            continue
        backend_errors = [d for d in errors if d.path.endswith(".backend")]
        if len(errors) == 1 and backend_errors:
            reason = "not a text-generation backend" if "not a text-generation" in errors[0].message \
                else "text backend modelyard does not serve"
            outcomes[f"refused: {reason}"] += 1
            continue
        failures.append((name, [f"{d.path}: {d.message}" for d in errors]))
    with capsys.disabled():
        print(f"\nLocalAI gallery bases: {len(bases)} with a config_file")
        for outcome, count in sorted(outcomes.items()):
            print(f"  {outcome}: {count}")
    assert failures == []
    assert outcomes["compiled"] >= 50
