"""Grammars and JSON Schemas a client may send, fuzzed against the real llama.cpp worker: each is
served (200) or refused (400), and the model's worker never dies (#17: a grammar able to match
NUL aborted llama.cpp; huge repetition counts overflowed or exhausted it)."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..conftest import REPO
from .server import launched, workers

pytestmark = [pytest.mark.real_model, pytest.mark.slow]
MODEL = "gemma-3-270m"

_CHARS = st.sampled_from(["a", "z", "0", "\\x00", "\\u0000", "\\n", "\\\\", "\\x7F", "-", "é", "\\x1F"])
_ATOMS = st.one_of(
    st.lists(_CHARS, min_size=1, max_size=3).map(lambda cs: '"' + "".join(cs) + '"'),
    st.tuples(st.booleans(), st.lists(_CHARS, min_size=1, max_size=3)).map(
        lambda t: "[" + ("^" if t[0] else "") + "".join(t[1]) + "]"),
    st.sampled_from(["root", "x", "undefined"]),
)
_SUFFIXES = st.sampled_from(["", "*", "+", "?", "{2}", "{0,3}", "{5000}", "{1,99999999}"])
GRAMMARS = st.lists(st.tuples(_ATOMS, _SUFFIXES).map("".join), min_size=1, max_size=4).map(
    lambda parts: "root ::= " + " ".join(parts) + "\nx ::= [a-c]")

_LEAVES = st.one_of(
    st.just({"type": "string"}), st.just({"type": "integer"}), st.just({"type": "boolean"}),
    st.builds(lambda n: {"type": "string", "maxLength": n}, st.sampled_from([0, 3, 4096, 100000, 10**9])),
    st.builds(lambda v: {"const": v}, st.sampled_from(["\u0000", "a\u0000b", "ok", 7])),
    st.builds(lambda v: {"enum": v}, st.lists(st.sampled_from(["x", "\u0000", "y"]), min_size=1, max_size=3)),
)
SCHEMAS = st.recursive(_LEAVES, lambda inner: st.one_of(
    st.builds(lambda items, n: {"type": "array", "items": items, "maxItems": n}, inner, st.sampled_from([2, 5000])),
    st.builds(lambda props: {"type": "object", "properties": props, "required": sorted(props)},
              st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, min_size=1, max_size=2)),
), max_leaves=4)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "server.log"
    with launched([str(REPO / "examples" / "gemma-3-270m.yaml")], log) as running:
        running["worker"] = workers(running["process"].pid)
        yield running


def _ask(server, **constraint) -> int:
    response = httpx.post(server["base"] + "/v1/chat/completions", timeout=120, json={
        "model": MODEL, "messages": [{"role": "user", "content": "Answer."}], "max_tokens": 6, **constraint})
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert response.json()["error"]["param"] in ("grammar", "response_format")
    assert workers(server["process"].pid) == server["worker"], "the model's worker died"
    return response.status_code


def test_a_grammar_that_can_match_nul_is_refused_and_the_worker_lives(server) -> None:
    assert _ask(server, grammar="root ::= [\\x00]") == 400
    assert _ask(server, response_format={"type": "json_schema", "json_schema": {
        "name": "n", "schema": {"const": "\u0000"}}}) in (200, 400)
    assert _ask(server, grammar='root ::= "ok"') == 200


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(grammar=GRAMMARS)
def test_fuzzed_grammars_never_kill_the_worker(server, grammar) -> None:
    _ask(server, grammar=grammar)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(schema=SCHEMAS)
def test_fuzzed_json_schemas_never_kill_the_worker(server, schema) -> None:
    _ask(server, response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}})
