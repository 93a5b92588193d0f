"""LocalAI's gallery bases (../shared/compat/localai-gallery), loaded for tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ..conftest import SHARED

GALLERY = SHARED / "compat" / "localai-gallery"


def gallery_dir() -> Path:
    if not (GALLERY / "bases").is_dir():
        pytest.skip(f"LocalAI gallery corpus not found at {GALLERY}")
    return GALLERY


def base_configs() -> list[tuple[str, str]]:
    """(base file name, config_file text) for every base that has one."""
    out = []
    for path in sorted((gallery_dir() / "bases").glob("*.yaml")):
        # The outer file is plain YAML holding the model YAML as a string.
        outer = yaml.safe_load(path.read_text(encoding="utf-8"))
        config = outer.get("config_file") if isinstance(outer, dict) else None
        if isinstance(config, str):
            out.append((path.name, config))
    return out


def chat_template_bases() -> list[tuple[str, str]]:
    """The bases whose chat is a Go template LocalAI renders itself (not the tokenizer's)."""
    bases = []
    for name, config in base_configs():
        try:
            data = yaml.safe_load(config)
        except yaml.YAMLError:
            continue  # two bases LocalAI's YAML reader takes and PyYAML does not; neither has a chat template
        templates = (data or {}).get("template") or {}
        if (templates.get("chat") or templates.get("chat_message")) and not templates.get("use_tokenizer_template"):
            bases.append((name, config))
    return bases
