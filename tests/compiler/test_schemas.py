"""The JSON Schemas themselves: valid draft 2020-12, documented, and fit for the real corpus."""

from __future__ import annotations

import collections
import json

import pytest
import yaml
from jsonschema import Draft202012Validator

from ..conftest import REPO
from .localai_corpus import gallery_dir

SCHEMAS = ["model.schema.json", "gallery.schema.json", "plan.schema.json"]


def _properties(node, path=""):
    """Every (path, schema) under a "properties" keyword, recursively."""
    if isinstance(node, dict):
        for name, sub in (node.get("properties") or {}).items():
            yield f"{path}.{name}", sub
        for key, value in node.items():
            yield from _properties(value, f"{path}/{key}")
    elif isinstance(node, list):
        for item in node:
            yield from _properties(item, path)


@pytest.mark.parametrize("name", SCHEMAS)
def test_schema_is_valid_draft_2020_12(name) -> None:
    Draft202012Validator.check_schema(json.loads((REPO / "schema" / name).read_text()))


@pytest.mark.parametrize("name", ["model.schema.json", "gallery.schema.json"])
def test_every_property_has_a_description(name) -> None:
    schema = json.loads((REPO / "schema" / name).read_text())
    undocumented = [path for path, sub in _properties(schema) if not sub.get("description")]
    assert undocumented == []


def test_localai_gallery_index_entries_fit_the_gallery_schema(capsys) -> None:
    index = yaml.safe_load((gallery_dir() / "index.yaml").read_text())
    schema = json.loads((REPO / "schema" / "gallery.schema.json").read_text())
    validator = Draft202012Validator({"$ref": "#/$defs/entry", "$defs": schema["$defs"]})
    failures = collections.Counter()
    for entry in index:
        for error in validator.iter_errors(entry):
            failures[f"{error.validator}: {list(error.absolute_path)[:1]} {str(error.instance)[:40]!r}"] += 1
    with capsys.disabled():
        print(f"\nLocalAI index: {len(index)} entries, {sum(failures.values())} schema problems")
        for problem, count in failures.most_common(5):
            print(f"  {count} x {problem}")
    # LocalAI's own gallery schema also forbids unknown keys; a handful of entries carry stray ones.
    assert sum(failures.values()) <= 0.01 * len(index)
