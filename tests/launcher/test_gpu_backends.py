"""vLLM and exllamav2: the plan → engine and request → sampler mappings, run here without the
libraries (they need CUDA), and the real thing under ``-m gpu`` on a machine with a GPU."""

from __future__ import annotations

import dataclasses

import pytest

from modelyard.compiler import backends
from modelyard.launcher.backends import missing_backend_message
from modelyard.launcher.backends.base import GenerationRequest, RequestError
from modelyard.launcher.backends.exllamav2_backend import cache_tokens, job_arguments, sampler_settings
from modelyard.launcher.backends.vllm_backend import (
    engine_arguments,
    finish_reason,
    sampling_arguments,
    structured_output,
)

from .fakes import make_plan

VLLM_MODEL = """
- name: small
  backend: vllm
  parameters: {model: meta-llama/Llama-3.2-1B-Instruct}
- name: big
  backend: vllm
  context_size: 8192
  quantization: awq
  dtype: float16
  gpu_memory_utilization: 0.85
  tensor_parallel_size: 2
  pipeline_parallel_size: 2
  distributed_executor_backend: ray
  enforce_eager: true
  swap_space: 8
  load_format: safetensors
  trust_remote_code: true
  disable_log_stats: true
  parameters: {model: Qwen/Qwen2.5-72B-Instruct-AWQ}
  engine_args: {max_num_seqs: 64, enable_prefix_caching: true}
- name: capped
  backend: vllm
  context_size: 8192
  max_model_len: 4096
  parameters: {model: meta-llama/Llama-3.2-1B-Instruct}
"""


def request(**changes) -> GenerationRequest:
    values = dict(prompt="p", max_tokens=32, temperature=0.7, top_p=0.9, top_k=40, min_p=0.05, typical_p=1.0,
                  repeat_penalty=1.1, presence_penalty=0.5, frequency_penalty=0.25, seed=7)
    return GenerationRequest(**{**values, **changes})


@pytest.fixture(scope="module")
def vllm_plan():
    return make_plan(VLLM_MODEL)


def test_engine_arguments_for_defaults_and_for_every_key(vllm_plan) -> None:
    assert engine_arguments(vllm_plan.model("small")) == {
        "model": "meta-llama/Llama-3.2-1B-Instruct", "trust_remote_code": False, "dtype": "auto",
        "tensor_parallel_size": 1, "pipeline_parallel_size": 1, "enforce_eager": False, "disable_log_stats": False,
        "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True}}
    assert engine_arguments(vllm_plan.model("big")) == {
        "model": "Qwen/Qwen2.5-72B-Instruct-AWQ", "trust_remote_code": True, "dtype": "float16",
        "tensor_parallel_size": 2, "pipeline_parallel_size": 2, "enforce_eager": True, "disable_log_stats": True,
        "max_model_len": 8192, "quantization": "awq", "gpu_memory_utilization": 0.85, "swap_space": 8,
        "load_format": "safetensors", "distributed_executor_backend": "ray", "max_num_seqs": 64,
        "enable_prefix_caching": True, "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True}}
    assert engine_arguments(vllm_plan.model("capped"))["max_model_len"] == 4096  # its own key beats context_size


def test_keys_the_installed_vllm_does_not_take_are_dropped_or_refused(vllm_plan, caplog) -> None:
    """vLLM's v1 engine has no swap_space (LocalAI's configs set it): a warning, not a TypeError
    at load; an engine_args key it does not know is the user's typo: refused, named."""
    big = vllm_plan.model("big")
    accepted = frozenset(engine_arguments(big)) - {"swap_space", "structured_outputs_config"}
    with caplog.at_level("WARNING"):
        arguments = engine_arguments(big, "bfloat16", accepted)
    assert "swap_space" not in arguments and "structured_outputs_config" not in arguments
    assert arguments["dtype"] == "bfloat16"
    assert "swap_space is not an engine argument of this vLLM (vLLM's v1 engine keeps no CPU swap space)" in caplog.text
    with pytest.raises(RequestError, match="engine_args max_num_seqs: not an engine argument"):
        engine_arguments(big, None, accepted - {"max_num_seqs"})


@pytest.mark.parametrize(("dtype", "device", "features", "chosen", "amx"), [
    ("auto", "cpu", {"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}, "bfloat16", True),  # Sapphire Rapids
    ("auto", "cpu", {"avx512f", "avx512_bf16"}, "bfloat16", False),  # AMD Zen 4
    ("auto", "cpu", {"avx2"}, "float32", False),  # no bf16 instructions
    ("float16", "cpu", {"avx2"}, "float16", False),  # the YAML's own choice stands
    ("auto", "cuda", {"amx_tile"}, "auto", False),  # vLLM's own choice on a GPU
])
def test_the_dtype_and_amx_follow_the_cpu(dtype, device, features, chosen, amx) -> None:
    from modelyard.compiler.backends.vllm import choose_device
    from modelyard.compiler.plan import Vllm

    choice = choose_device(Vllm(dtype=dtype), device, frozenset(features))
    assert (choice.dtype, choice.request_amx, choice.cuda_visible_devices) == (chosen, amx, None)
    assert bool(choice.notes) == (device == "cpu" and (dtype == "auto" or amx))


def test_main_gpu_picks_a_visible_gpu_and_is_unused_on_cpu_or_split_models() -> None:
    from modelyard.compiler.backends.vllm import choose_device
    from modelyard.compiler.plan import Vllm

    assert choose_device(Vllm(main_gpu=1), "cuda", frozenset()).cuda_visible_devices == "1"
    assert choose_device(Vllm(main_gpu=1), "cuda", frozenset(), "4,5,6").cuda_visible_devices == "5"
    out_of_range = choose_device(Vllm(main_gpu=3), "cuda", frozenset(), "4,5")
    assert out_of_range.cuda_visible_devices is None and "lists 2 device(s)" in out_of_range.notes[0]
    split = choose_device(Vllm(main_gpu=1, tensor_parallel_size=2), "cuda", frozenset())
    assert split.cuda_visible_devices is None and "split over several GPUs" in split.notes[0]
    cpu = choose_device(Vllm(main_gpu=1), "cpu", frozenset({"avx2"}))
    assert cpu.cuda_visible_devices is None and "not used: this vLLM runs on the CPU" in cpu.notes[-1]


def test_sampling_arguments_map_every_request_field() -> None:
    assert sampling_arguments(request(stop=("</s>",), logprobs=3, ignore_eos=True)) == {
        "n": 1, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "seed": 7, "max_tokens": 32,
        "presence_penalty": 0.5, "frequency_penalty": 0.25, "repetition_penalty": 1.1, "stop": ["</s>"],
        "ignore_eos": True, "logprobs": 3, "prompt_logprobs": None, "logit_bias": None, "skip_special_tokens": True}
    greedy = sampling_arguments(request(temperature=0.0, top_k=0, repeat_penalty=0.0, seed=None, max_tokens=None))
    assert (greedy["temperature"], greedy["top_k"], greedy["repetition_penalty"], greedy["seed"],
            greedy["max_tokens"], greedy["stop"]) == (0.0, -1, 1.0, None, None, None)
    with pytest.raises(RequestError, match="typical_p is not supported"):
        sampling_arguments(request(typical_p=0.5))


def test_structured_output_and_finish_reasons() -> None:
    schema = {"type": "object"}
    assert structured_output(request(json_schema=schema)) == {"json": schema, "disable_any_whitespace": True}
    assert structured_output(request(json_object=True)) == {"json_object": True, "disable_any_whitespace": True}
    assert structured_output(request(grammar='root ::= "a"')) == {"grammar": 'root ::= "a"'}
    assert structured_output(request()) is None
    assert [finish_reason(r) for r in ("stop", "length", "abort", None)] == ["stop", "length", "stop", "stop"]


def test_exllamav2_sampler_and_job_mapping() -> None:
    assert sampler_settings(request()) == {
        "temperature": 0.7, "top_k": 40, "top_p": 0.9, "min_p": 0.05, "typical": 0.0,
        "token_repetition_penalty": 1.1, "token_frequency_penalty": 0.25, "token_presence_penalty": 0.5}
    greedy = sampler_settings(request(temperature=0.0))
    assert (greedy["temperature"], greedy["top_k"], greedy["top_p"]) == (1.0, 1, 1.0)
    assert sampler_settings(request(typical_p=0.8))["typical"] == 0.8
    assert job_arguments(request(), 32, 2, "id-1") == {
        "max_new_tokens": 32, "stop_conditions": [2], "seed": 7, "identifier": "id-1",
        "decode_special_tokens": False, "return_logits": False}
    assert job_arguments(request(ignore_eos=True), 8, 2, "x")["stop_conditions"] == []
    assert [cache_tokens(c, p) for c, p in ((4096, 4), (1000, 1), (300, 2))] == [16384, 1024, 768]


@pytest.mark.parametrize(("backend", "extra"), [("vllm", "vllm"), ("exllama2", "exllama2")])
def test_launch_refuses_a_backend_whose_library_is_missing(backend, extra) -> None:
    import importlib.util

    module = {"vllm": "vllm", "exllama2": "exllamav2"}[backend]
    message = missing_backend_message(backend)
    if importlib.util.find_spec(module) is None:
        assert message == (f"the {backend} backend is not installed here (no '{module}' module): "
                           f"install it with pip install 'modelyard[{extra}]'")
    else:
        assert message is None


def test_the_request_defaults_stay_in_step_with_the_mapping() -> None:
    # Every GenerationRequest field is either mapped for vLLM or deliberately left to the server.
    handled = {"prompt", "max_tokens", "temperature", "top_p", "top_k", "min_p", "typical_p", "repeat_penalty",
               "presence_penalty", "frequency_penalty", "seed", "ignore_eos", "json_schema", "json_object",
               "grammar", "stop", "logprobs", "prompt_logprobs",
               "prompt_tokens",  # vLLM: the prompt ids the engine gets; exllama2: refused (registry: token_prompts)
               "schema_param",  # only names the request field in error messages
               "logit_bias",  # vLLM: SamplingParams.logit_bias; exllama2: refused (registry: logit_bias)
               "n_keep",  # llama.cpp's context shift only: the others never outgrow the context
               "call_shape"}  # GBNF around the call schema: set only for backends that take GBNF (llama-cpp)
    assert {f.name for f in dataclasses.fields(GenerationRequest)} == handled
    assert all(getattr(backends.get("vllm"), c) for c in ("token_prompts", "logit_bias"))
    assert not any(getattr(backends.get("exllama2"), c) for c in ("token_prompts", "logit_bias"))


# --- on a GPU: the real engines, through `modelyard launch` -----------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["vllm", "exllama2"])
def test_serves_a_small_locally_built_model(tmp_path, backend) -> None:
    """A tiny random Llama (fp16 safetensors: both engines load it) served for real."""
    from concurrent.futures import ThreadPoolExecutor

    import openai

    from ..e2e.server import launched
    from ..e2e.test_transformers import build_tiny_llama

    pytest.importorskip({"vllm": "vllm", "exllama2": "exllamav2"}[backend])
    build_tiny_llama(tmp_path / "tiny")
    (tmp_path / "tiny.yaml").write_text(
        f"name: tiny\nbackend: {backend}\ncontext_size: 256\nparameters: {{model: tiny, temperature: 0}}\n"
        + ("gpu_memory_utilization: 0.3\nenforce_eager: true\n" if backend == "vllm" else "")
        + "template: {use_tokenizer_template: true}\n")
    with launched([str(tmp_path)], tmp_path / "server.log", ready_timeout_s=600) as running:
        client = openai.OpenAI(base_url=running["base"] + "/v1", api_key="unused", max_retries=0, timeout=300)
        chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                              max_tokens=8)
        assert chat.usage.completion_tokens <= 8
        whole = client.completions.create(model="tiny", prompt="Hello world", max_tokens=12).choices[0].text
        streamed = "".join(c.choices[0].text for c in client.completions.create(
            model="tiny", prompt="Hello world", max_tokens=12, stream=True))
        assert streamed == whole
        if whole[3:5].strip():
            cut = client.completions.create(model="tiny", prompt="Hello world", max_tokens=12, stop=[whole[3:5]])
            assert cut.choices[0].text == whole[:whole.index(whole[3:5])]
        seeded = [client.completions.create(model="tiny", prompt="café", max_tokens=10, temperature=1.0, seed=3)
                  .choices[0].text for _ in range(2)]
        assert seeded[0] == seeded[1]
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(lambda _: client.completions.create(
                model="tiny", prompt="Hello world", max_tokens=12).choices[0].text, range(4)))
        assert together == [whole] * 4
