"""``JsonCloser``: any prefix of a JSON document plus its ``closing()`` parses (property test
over generated documents), and the closing is the short one a client expects."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.launcher.json_closer import JsonCloser

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12)


def closed(prefix: str) -> str:
    closer = JsonCloser()
    closer.feed(prefix)
    return prefix + closer.closing()


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=5), JSON, max_size=4), st.booleans(), st.data())
def test_every_prefix_of_an_object_closes_into_valid_json(document, indent, data) -> None:
    text = json.dumps(document, indent=2 if indent else None, ensure_ascii=data.draw(st.booleans()))
    cut = data.draw(st.integers(0, len(text)))
    completed = closed(text[:cut])
    assert isinstance(json.loads(completed), dict), completed


@pytest.mark.parametrize(("prefix", "closing"), [
    ("", "{}"),
    ('{"a": "tex', '"}'),
    ('{"a": [1, 2,', "null]}"),
    ('{"k"', ":null}"),
    ('{"k', '":null}'),
    ('{"a": tr', "ue}"),
    ('{"a": -', "0}"),
    ('{"a": "\\', 'n"}'),
    ('{"a": "\\u00', '00"}'),
    ('{"a": 1,', '"":null}'),
    ('{"a": {"b": [', "]}}"),
    ('{"a": 1}', ""),
])
def test_the_closing_is_the_short_one(prefix, closing) -> None:
    closer = JsonCloser()
    closer.feed(prefix)
    assert closer.closing() == closing
    assert json.loads(prefix + closing) is not None
