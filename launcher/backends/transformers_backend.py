"""Hugging Face transformers: causal LMs for generation, encoders for embeddings.

The model loads once in the worker; generations run in a ``BatchScheduler``
(``transformers_batch.py``) that decodes concurrent requests together. Device, precision and
quantization follow the YAML (``main_gpu``, ``f16``, ``quantization``); anything the machine or
the installed libraries cannot do is a load error naming what is missing, never a silent
fallback. ``trust_remote_code`` is passed only when the YAML sets it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

from modelyard.compiler.plan import ModelPlan

from ..json_closer import JsonCloser
from .base import (
    Finish,
    GenerationRequest,
    Item,
    RequestError,
    Sink,
    Started,
    check_token_ids,
    fit_context,
    generate_with,
)
from .transformers_batch import MAX_BATCH, BatchScheduler, Row

log = logging.getLogger(__name__)

OPENVINO_DEVICES = ("AUTO", "CPU", "GPU", "NPU")


class LoadError(RuntimeError):
    """The model cannot load here; the message names what is missing."""


def pick_device(requested: str | None, torch: Any, openvino: bool) -> str:
    """``main_gpu`` → a torch device (or an OpenVINO device string for OV model classes)."""
    if openvino:
        device = (requested or "AUTO").upper()
        if device in OPENVINO_DEVICES or device.startswith(("MULTI:", "HETERO:", "AUTO:")):
            return device
        raise LoadError(f"main_gpu {requested!r} is not an OpenVINO device (AUTO, CPU, GPU, NPU, MULTI:..., "
                        "HETERO:..., AUTO:-CPU)")
    if requested is None or requested == "":
        return "cuda" if torch.cuda.is_available() else "cpu"
    device = requested.replace(".", ":")  # LocalAI writes cuda.1
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise LoadError(f"main_gpu {requested!r} asks for CUDA, but torch sees no CUDA device "
                            f"(torch {torch.__version__})")
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise LoadError(f"main_gpu {requested!r}: there are {torch.cuda.device_count()} CUDA device(s)")
        return device
    if device == "cpu":
        return "cpu"
    if device.startswith("xpu"):
        if not (hasattr(torch, "xpu") and torch.xpu.is_available()):
            raise LoadError(f"main_gpu {requested!r} asks for an Intel XPU, but torch sees none")
        return device
    raise LoadError(f"main_gpu {requested!r} is not a device: use cuda, cuda.N, xpu or cpu")


def pick_dtype(f16: bool, device: str, torch: Any) -> Any:
    """``f16: true``: bfloat16 where the hardware has it, float16 on CUDA otherwise."""
    if not f16:
        return torch.float32
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def quantization_config(mode: str | None, device: str, transformers: Any) -> Any:
    if mode is None:
        return None
    if mode in ("bnb_8bit", "bnb_4bit"):
        if not device.startswith("cuda"):
            raise LoadError(f"quantization {mode} needs a CUDA device (bitsandbytes); this model runs on {device}")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise LoadError(f"quantization {mode} needs the bitsandbytes package: pip install bitsandbytes")
        return transformers.BitsAndBytesConfig(load_in_8bit=mode == "bnb_8bit", load_in_4bit=mode == "bnb_4bit")
    if mode in ("xpu_8bit", "xpu_4bit"):
        if not device.startswith("xpu"):
            raise LoadError(f"quantization {mode} needs an Intel XPU device (main_gpu: xpu); this model runs on "
                            f"{device}")
        if importlib.util.find_spec("intel_extension_for_pytorch") is None:
            raise LoadError(f"quantization {mode} needs intel-extension-for-pytorch")
        return transformers.TorchAoConfig("int8_weight_only" if mode == "xpu_8bit" else "int4_weight_only")
    raise LoadError(f"quantization {mode!r} is not a transformers quantization")


class TransformersBackend:
    def __init__(self, model: ModelPlan) -> None:
        import torch  # heavy: imported in the worker process only
        import transformers

        settings = model.transformers
        assert settings is not None and model.model is not None
        self._torch = torch
        openvino = settings.model_class.startswith("OV")
        self.device = pick_device(settings.device, torch, openvino)
        location, gguf_file = _location(model.model)
        common: dict[str, Any] = {"trust_remote_code": settings.trust_remote_code}
        if gguf_file:
            common["gguf_file"] = gguf_file
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(location, **common)
        if self.tokenizer.pad_token is None:  # batches are padded (masked out): any token will do
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._embedding = model.embeddings or settings.model_class in ("AutoModel", "OVModelForFeatureExtraction")
        class_name = settings.model_class
        if self._embedding and class_name == "AutoModelForCausalLM":
            class_name = "AutoModel"  # the encoder without its LM head: hidden states to pool
        model_class = self._model_class(class_name, transformers)
        if openvino:
            self.model = model_class.from_pretrained(location, device=self.device, **common)
        else:
            dtype = pick_dtype(settings.f16, self.device, torch)
            quantization = quantization_config(settings.quantization, self.device, transformers)
            kwargs: dict[str, Any] = {"dtype": dtype, **common}
            if quantization is not None:
                kwargs.update(quantization_config=quantization, device_map=self.device)
            self.model = model_class.from_pretrained(location, **kwargs)
            if quantization is None:
                self.model.to(self.device)
            self.model.eval()
        if model.threads and self.device == "cpu":
            torch.set_num_threads(model.threads)
        config = self.model.config
        trained = getattr(config, "max_position_embeddings", None) or 2048
        self._context = model.context_size or trained
        self.concurrency = MAX_BATCH
        self._vocab_size = getattr(config, "vocab_size", None) or len(self.tokenizer)
        self._grammar_compiler: Any = None
        self._grammar_lock = threading.Lock()
        self.scheduler = None if self._embedding else BatchScheduler(
            self.model, self.tokenizer, self.device, _eos_ids(self.model, self.tokenizer), torch, batched=not openvino)
        log.info("loaded %s with transformers on %s (context %d)", model.model, self.device, self._context)

    @staticmethod
    def _model_class(name: str, transformers: Any) -> Any:
        if name.startswith("OV"):
            if importlib.util.find_spec("optimum") is None or importlib.util.find_spec("optimum.intel") is None:
                raise LoadError(f"type {name} needs optimum-intel: pip install 'optimum[openvino]'")
            import optimum.intel

            return getattr(optimum.intel, name)
        return getattr(transformers, name)

    @property
    def context_size(self) -> int:
        return self._context

    # --- generation ----------------------------------------------------------------------------

    def generate(self, request: GenerationRequest, cancelled: threading.Event) -> Iterator[Item]:
        return generate_with(self.start, request, cancelled)

    def start(self, request: GenerationRequest, cancelled: threading.Event, sink: Sink) -> None:
        """Check and tokenize ``request`` and queue it for the batch; the decode thread delivers
        its items into ``sink``."""
        if self.scheduler is None:
            raise RequestError("this model serves embeddings only", code="unsupported_usecase", param="model")
        if request.logit_bias:
            check_token_ids(tuple(token for token, _ in request.logit_bias), self._vocab_size, "logit_bias")
            if not self.scheduler.batched:
                raise RequestError("logit_bias is not supported for OpenVINO models yet", param="logit_bias")
        if request.prompt_tokens is not None:
            check_token_ids(request.prompt_tokens, self._vocab_size)
            prompt = list(request.prompt_tokens)
        else:
            prompt = self.tokenizer(request.prompt, add_special_tokens=True)["input_ids"]
        limit = fit_context(len(prompt), request.max_tokens, self._context)
        matcher = self._grammar_matcher(request)
        if request.prompt_logprobs is not None and not self.scheduler.batched:
            raise RequestError("echo with logprobs is not supported for OpenVINO models yet", param="echo")
        if matcher is not None and not self.scheduler.batched:
            raise RequestError("response_format is not supported for OpenVINO models yet", param="response_format")
        sink.put(Started(len(prompt)))
        if limit == 0:
            sink.put(Finish("length", len(prompt), 0))
            return
        closer = JsonCloser() if matcher is not None else None  # matchers are JSON (response_format, forced calls)
        self.scheduler.submit(Row(request, prompt, limit, cancelled, out=sink, matcher=matcher, closer=closer))

    def _grammar_matcher(self, request: GenerationRequest) -> Any:
        """An xgrammar matcher for ``response_format`` (and forced tool calls), or None.

        xgrammar was chosen by measurement: about 0.97x of unconstrained decode speed on a 32k
        vocabulary (``benchmarks/grammar_bench.py`` covers llama.cpp's grammars); the other
        candidate, lm-format-enforcer, does not import with transformers 5.
        """
        if request.json_schema is None and not request.json_object:
            return None
        try:
            import xgrammar
        except ImportError:
            raise RequestError("response_format on transformers models needs xgrammar: "
                               "pip install 'modelyard[transformers]'", param="response_format") from None
        with self._grammar_lock:
            if self._grammar_compiler is None:
                info = xgrammar.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self._vocab_size)
                self._grammar_compiler = xgrammar.GrammarCompiler(info, max_threads=2)
        try:
            compiled = self._grammar_compiler.compile_json_schema(json.dumps(request.json_schema), any_whitespace=False) \
                if request.json_schema is not None else self._grammar_compiler.compile_builtin_json_grammar()
        except Exception as exc:  # noqa: BLE001 - xgrammar raises plain errors for schemas it cannot compile
            param = request.schema_param if request.json_schema is not None else "response_format"
            raise RequestError(f"{param}: the JSON Schema cannot be used: {exc}", param=param) from None
        return xgrammar.GrammarMatcher(compiled)

    # --- embeddings ----------------------------------------------------------------------------

    def close(self) -> None:
        return None  # the decode thread is a daemon: it ends with the worker process

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def detokenize(self, tokens: list[int]) -> str:
        check_token_ids(tuple(tokens), self._vocab_size, "tokens")
        return self.tokenizer.decode(tokens)

    def embed(self, inputs: list[str | list[int]]) -> tuple[list[list[float]], int]:
        """Mean of the last hidden states over the attention mask, L2-normalized. Inputs are
        texts or token arrays; one longer than the context is a 400, not silently truncated."""
        torch = self._torch
        encoded = []
        for index, item in enumerate(inputs):
            ids = item if isinstance(item, list) else self.tokenizer(item, add_special_tokens=True)["input_ids"]
            if len(ids) > self._context:
                raise RequestError(f"input {index} is {len(ids)} tokens, more than the model's {self._context}",
                                   param="input", code="context_length_exceeded")
            if any(t >= self._vocab_size for t in ids):
                raise RequestError(f"input {index} holds a token id outside the model's vocabulary of "
                                   f"{self._vocab_size}", param="input")
            encoded.append(ids)
        vectors, tokens = [], 0
        for start in range(0, len(encoded), 32):
            batch = self.tokenizer.pad({"input_ids": encoded[start:start + 32]}, padding=True,
                                       return_tensors="pt").to(self.device)
            with torch.inference_mode():
                output = self.model(**batch)
            hidden = output.last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
            vectors += pooled.cpu().tolist()
            tokens += int(batch["attention_mask"].sum())
        return vectors, tokens


def _location(model: str) -> tuple[str, str | None]:
    """A directory (or hub id), and the GGUF file in it when ``parameters.model`` names one."""
    if model.lower().endswith(".gguf") and os.path.isfile(model):
        return os.path.dirname(model) or ".", os.path.basename(model)
    return model, None


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """The end tokens: the generation config's, and the tokenizer's."""
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (configured, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids
