"""Load YAML into plain Python data while remembering where every key and value was written.

We compose ruamel.yaml's node graph and build the values ourselves rather than using a
constructor, because that gives us, in one pass: line:col for every key and value, every
duplicate key (not only the first), merge keys (``<<``), ``${VAR}`` interpolation with the
position of the scalar it came from, and a bound on alias expansion ("billion laughs").
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import ReusedAnchorWarning
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.resolver import BaseResolver
from ruamel.yaml.scanner import Scanner

from .diagnostics import Diagnostic, DiagnosticSink, Position, Severity
from .interpolation import interpolate
from .paths import Path, display_path

# Aliases may add at most this many values to a document beyond its own nodes ("billion laughs");
# a large document without aliases (a 30,000-entry gallery index) is not limited by it.
MAX_EXPANDED_NODES = 100_000
MAX_DEPTH = 200  # nesting of mappings and lists (a model config nests about 4 deep)
MAX_INT_DIGITS = 300  # past Python's own 4,300-digit guard long before; no config value is that long

_TAG = "tag:yaml.org,2002:"


class _LibyamlCompatibleScanner(Scanner):
    # libyaml and Go's yaml.v3 (what LocalAI parses with) accept the escape \' inside
    # double-quoted strings; LocalAI's own gallery uses it (chatml-hercules, command-r).
    ESCAPE_REPLACEMENTS = {**Scanner.ESCAPE_REPLACEMENTS, "'": "'"}


@dataclass(frozen=True)
class NodePosition:
    value: Position
    key: Position | None = None


@dataclass
class LoadedDocument:
    data: Any
    positions: dict[Path, NodePosition] = field(default_factory=dict)

    def value_position(self, path: Path) -> Position:
        """Where the value at ``path`` was written, or the nearest enclosing value."""
        for end in range(len(path), -1, -1):
            found = self.positions.get(path[:end])
            if found is not None:
                return found.value
        return Position()

    def key_position(self, path: Path) -> Position:
        found = self.positions.get(path)
        if found is not None and found.key is not None:
            return found.key
        return self.value_position(path)


def _position(node: Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


def _compose_all(text: str) -> list[Node]:
    """Compose with libyaml (ruamel.yaml.clib) when installed: about 9x faster than pure Python.

    On any YAML error we re-parse with the pure parser: it accepts LocalAI's ``\\'`` escape
    (which libyaml rejects), and its error messages are the ones users see.
    """
    fast = _fast_parser()
    if fast is not None:
        try:
            return list(fast.compose_all(text))
        except YAMLError:
            pass
    pure = YAML(typ="rt", pure=True)
    pure.Scanner = _LibyamlCompatibleScanner
    return list(pure.compose_all(text))


class _NoImplicitTags(BaseResolver):
    """Leaves plain scalars untyped: ``resolve_plain`` types them, after interpolation."""

    def __init__(self, version: Any = None, loader: Any = None, loadumper: Any = None) -> None:
        super().__init__(loadumper=loadumper)


@functools.cache
def _fast_parser() -> YAML | None:
    # Building a YAML object costs more than parsing a small file: reuse one.
    fast = YAML(typ="safe", pure=False)
    fast.Resolver = _NoImplicitTags  # ruamel's resolver per scalar was 60% of compose time
    return fast if "CParser" in fast.Parser.__name__ else None


def load_yaml(text: str, sink: DiagnosticSink, env: Mapping[str, str]) -> list[LoadedDocument]:
    """Parse every document in ``text``; problems go to ``sink``, never raise."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ReusedAnchorWarning)  # a re-used anchor is legal YAML
            nodes = _compose_all(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Position(mark.line + 1, mark.column + 1) if mark else Position()
        problem = exc.problem or exc.context or "invalid YAML"
        context = f" ({exc.context})" if exc.context and exc.problem else ""
        sink.error(where, "", f"YAML syntax error: {problem}{context}")
        return []
    except YAMLError as exc:  # errors without a position (e.g. bad encoding)
        sink.error(Position(), "", f"YAML syntax error: {exc}")
        return []
    except RecursionError:  # the parser recurses per nesting level
        sink.error(Position(), "", f"YAML nests more than {MAX_DEPTH} levels deep; refusing to load it")
        return []
    builder = _Builder(sink, env)
    documents = []
    for node in nodes:
        if node is None:
            continue
        document = LoadedDocument(data=None)
        builder.document = document
        document.data = builder.build(node, (), None)
        builder.flush(document.data)
        if builder.exhausted:
            return []
        documents.append(document)
    return documents


class _Builder:
    def __init__(self, sink: DiagnosticSink, env: Mapping[str, str]) -> None:
        self.sink = sink
        self.env = env
        self.document: LoadedDocument = LoadedDocument(data=None)
        self.count = 0
        self.exhausted = False
        self.pending: list[tuple[Severity, Position, Path, str]] = []
        self.building: set[int] = set()  # ids of the nodes being built: an alias to one of them recurses
        self.distinct: set[int] = set()  # ids of the nodes built at least once

    def _report(self, severity: Severity, where: Position, path: Path, message: str) -> None:
        # Held back until the document is built: its display path names the model.
        self.pending.append((severity, where, path, message))

    def flush(self, data: Any) -> None:
        fallback = PurePath(self.sink.file).stem
        for severity, where, path, message in self.pending:
            self.sink.items.append(
                Diagnostic(self.sink.file, where, display_path(data, path, fallback), message, severity)
            )
        self.pending.clear()

    def build(self, node: Node, path: Path, key_position: Position | None) -> Any:
        self.count += 1
        if id(node) in self.building or len(path) > MAX_DEPTH:
            if not self.exhausted:
                self.exhausted = True
                why = ("an alias refers to a value that contains it" if id(node) in self.building
                       else f"values nest more than {MAX_DEPTH} levels deep")
                self._report(Severity.ERROR, _position(node), (), f"{why}; refusing to load the document")
            return None
        self.distinct.add(id(node))
        if self.count - len(self.distinct) > MAX_EXPANDED_NODES:
            if not self.exhausted:
                self.exhausted = True
                self._report(
                    Severity.ERROR, _position(node), (),
                    f"document expands to more than {MAX_EXPANDED_NODES} values through "
                    "aliases; refusing to load it",
                )
            return None
        self.document.positions.setdefault(path, NodePosition(_position(node), key_position))
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        self.building.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            return [self.build(item, path + (i,), None) for i, item in enumerate(node.value)]
        finally:
            self.building.discard(id(node))

    def _mapping(self, node: MappingNode, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_seen: dict[str, tuple[Position, Node]] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if str(key_node.tag) == _TAG + "merge" or (
                isinstance(key_node, ScalarNode) and key_node.value == "<<" and not key_node.style
            ):
                merged.update(self._merge_sources(value_node, path))
                continue
            if not isinstance(key_node, ScalarNode):
                self._report(Severity.ERROR, _position(key_node), path, "mapping keys must be plain strings")
                continue
            key = str(key_node.value)
            where = _position(key_node)
            if key in first_seen:
                self._duplicate(key, where, first_seen[key], value_node, path)
                continue
            first_seen[key] = (where, value_node)
            result[key] = self.build(value_node, path + (key,), where)
        # Explicit keys win over merged ones, as the YAML merge-key spec says.
        return {**merged, **result} if merged else result

    def _merge_sources(self, node: Node, path: Path) -> dict[str, Any]:
        sources = node.value if isinstance(node, SequenceNode) else [node]
        merged: dict[str, Any] = {}
        # Earlier mappings in a merge list take precedence over later ones.
        for source in reversed(sources):
            if not isinstance(source, MappingNode):
                self._report(Severity.ERROR, _position(source), path, "'<<' must merge a mapping or a list of mappings")
                continue
            merged.update(self._mapping(source, path))
        return merged

    def _duplicate(
        self, key: str, where: Position, first: tuple[Position, Node], value: Node, path: Path
    ) -> None:
        first_position, first_value = first
        if _same_node(first_value, value):
            self._report(
                Severity.WARNING, where, path + (key,),
                f"duplicate key '{key}' (same value as line {first_position.line}; ignored)",
            )
        else:
            self._report(
                Severity.ERROR, where, path + (key,),
                f"duplicate key '{key}' (first defined at line {first_position.line}:{first_position.column})",
            )

    def _scalar(self, node: ScalarNode, path: Path) -> Any:
        text = str(node.value)
        if "${" in text or "$$" in text:
            text, errors = interpolate(text, self.env)
            for error in errors:
                self._report(Severity.ERROR, _position(node), path, error)
        if not node.style and len(text) > MAX_INT_DIGITS and _INT.match(text):
            self._report(Severity.ERROR, _position(node), path, f"an integer of {len(text)} digits is not a value "
                                                                "any setting takes")
            return None
        # Plain scalars are typed after interpolation, so an unquoted ${PORT} can be an int;
        # quoted and block scalars are text. Everything a config holds stays JSON-able.
        return text if node.style else resolve_plain(text)


# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution), for plain scalars.
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")


def resolve_plain(text: str) -> Any:
    """The typed value of an unquoted scalar: null, bool, int, float, or the text itself."""
    if _NULL.match(text):
        return None
    if _BOOL.match(text):
        return text.lower() == "true"
    if _INT.match(text):
        if text.startswith(("0o", "0x")):
            return int(text, 0)
        return int(text, 10)
    if _FLOAT.match(text):
        lowered = text.lower()
        if lowered.endswith(".inf"):
            return float("-inf") if lowered.startswith("-") else float("inf")
        return float("nan") if lowered == ".nan" else float(text)
    return text


def _same_node(a: Node, b: Node, budget: list[int] | None = None) -> bool:
    """Whether two nodes hold the same value. The same node (one alias twice) is, at once; past
    a budget of comparisons (aliases can make a tree exponentially large) they count as
    different, which only turns a duplicate-key warning into an error."""
    if a is b:
        return True
    budget = [10_000] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0 or type(a) is not type(b) or len(a.value) != len(b.value) and not isinstance(a, ScalarNode):
        return False
    if isinstance(a, ScalarNode):
        return a.value == b.value and a.tag == b.tag
    if isinstance(a, SequenceNode):
        return all(_same_node(x, y, budget) for x, y in zip(a.value, b.value))
    return all(_same_node(ka, kb, budget) and _same_node(va, vb, budget)
               for (ka, va), (kb, vb) in zip(a.value, b.value))
