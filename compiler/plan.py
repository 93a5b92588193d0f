"""The launch plan: what ``compile`` emits and ``launch`` runs, as frozen pydantic models.

The plan is plain data (JSON with sorted keys, so the same inputs give the same bytes).
``schema/plan.schema.json`` is generated from these models (``python -m modelyard.compiler.plan``)
and a test keeps the committed file in step.

Every model value has an origin in ``ModelPlan.origins``, keyed by the same dotted path as the
value: ``models/qwen.yaml:7:3``, ``default``, ``env LLAMACPP_PARALLEL``, ``gguf
llama.context_length``, ``--set``, or ``inferred from …``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, GetJsonSchemaHandler, ValidationInfo
from pydantic_core import CoreSchema

PLAN_VERSION = 1


def _registered_backend(name: str, info: ValidationInfo) -> str:
    from . import backends  # imported here: the backend modules import this module's sections

    # A worker process reads a plan its server already checked, and is told its engine.
    if not (info.context or {}).get("checked_by_server") and name not in backends.names():
        raise ValueError(f"unknown backend {name!r}: not one of {', '.join(backends.names())}")
    return name


class _BackendJsonSchema:
    """The plan schema lists the registry's backends (read when the schema is generated)."""

    @classmethod
    def __get_pydantic_json_schema__(cls, core: CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        from . import backends

        return {"enum": list(backends.names()), "title": "Backend", "type": "string"}


# A backend's canonical name, one of compiler/backends/ (the registry).
Backend = Annotated[str, AfterValidator(_registered_backend), _BackendJsonSchema]
Usecase = Literal["chat", "completion", "edit", "embeddings"]
Dialect = Literal["go", "jinja", "tokenizer"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Template(_Frozen):
    """A prompt template ready to render with ``template_environment(dialect)``."""

    dialect: Dialect
    source: str = Field(description="Jinja2 source (translated, for the go dialect).")
    original: str | None = Field(default=None, description="The Go template it was translated from.")
    from_file: str | None = Field(default=None, description="The .tmpl file it was read from, if any.")


class Templates(_Frozen):
    chat: Template | None = None
    chat_message: Template | None = None
    completion: Template | None = None
    edit: Template | None = None
    function: Template | None = None
    use_tokenizer_template: bool = False
    tokenizer_template: Template | None = Field(
        default=None, description="The model's own chat template, when read at compile time (GGUF)."
    )
    join_chat_messages_by_character: str = "\n"


class Sampling(_Frozen):
    """Defaults for request fields; a request's own values win."""

    temperature: float = 0.9
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.0
    max_tokens: int | None = None
    seed: int | None = None
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    n_keep: int = 0
    n: int = 1
    ignore_eos: bool = False
    echo: bool = False


class ModelDownload(_Frozen):
    """A file fetched into a models directory before the model loads (a URL ``parameters.model``,
    or a ``download_files`` entry); a file already there is not fetched again."""

    uri: str
    directory: str = Field(description="The models directory it goes into.")
    filename: str = Field(description="Its path inside that directory (checked: no '..', not absolute).")
    sha256: str | None = None


class OutputRules(_Frozen):
    """What happens to a reply on its way out. Stop words end every reply; the rest is LocalAI's
    ``Finetune`` (core/backend/llm.go l.473), applied to non-streamed replies only, as there."""

    stopwords: tuple[str, ...] = ()
    cutstrings: tuple[str, ...] = ()
    extract_regex: tuple[str, ...] = ()
    trimspace: tuple[str, ...] = ()
    trimsuffix: tuple[str, ...] = ()
    echo: bool = False  # the rendered prompt first (the YAML's parameters.echo)
    reply_prefix: str = ""  # sent first, streamed too (template.reply_prefix)


class XmlToolFormat(_Frozen):
    """An XML-like tool-call syntax (LocalAI's ``XMLToolCallFormat``; ``compiler/xml_tool_formats.py``)."""

    scope_start: str = ""
    tool_start: str
    tool_sep: str
    key_start: str
    key_val_sep: str
    key_val_sep2: str = ""
    val_end: str
    tool_end: str
    scope_end: str = ""
    raw_values: bool | None = None  # values are text (true), JSON (false), or JSON where they parse (None)
    trim_values: bool = False


class FunctionParsing(_Frozen):
    """How tool calls are read out of a reply (LocalAI's ``function:`` parsing keys,
    pkg/functions/parse.go ``ParseFunctionCall``); patterns are already in Python's syntax."""

    response_regex: tuple[str, ...] = ()
    json_regex_match: tuple[str, ...] = ()
    argument_regex: tuple[str, ...] = ()
    argument_key: str = "key"
    argument_value: str = "value"
    replace_function_results: tuple[tuple[str, str], ...] = ()  # (pattern, replacement) before calls are read
    replace_llm_results: tuple[tuple[str, str], ...] = ()  # on the text content
    capture_llm_results: tuple[str, ...] = ()
    name_key: str = "name"
    arguments_key: str = "arguments"
    xml_format: XmlToolFormat | None = None  # xml_format, or xml_format_preset's: tried first


class ToolGrammar(_Frozen):
    """LocalAI's tool-call grammar (``function.grammar``, chat.go l.327): with it on, a request that
    offers tools under ``auto`` is constrained to a call, or to the no-action function whose
    ``message`` is the answer. On for models whose YAML's templates render the chat."""

    enabled: bool = False
    parallel_calls: bool = False  # a list of calls as well as one call
    no_action: str | None = "answer"  # the no-action function (None: disable_no_action)
    no_action_description: str = "use this action to answer without performing any action"
    # LocalAI's GBNF refinements, applied where the backend takes GBNF (llama-cpp):
    mixed_mode: bool = False  # text, text then a call, or a call
    no_mixed_free_string: bool = False  # with mixed_mode: text or a call, not both
    expect_strings_after_json: bool = False  # with mixed_mode: text after a call too, alternating
    prefix: str = ""  # before the call


class Reasoning(_Frozen):
    """What happens to reasoning blocks (``<think>...</think>``) in chat answers (LocalAI's ``reasoning:``)."""

    extract: bool = True  # move them out of the content
    return_reasoning: bool = True  # into message.reasoning_content (false: strip them only)
    prefill: bool = True  # a prompt that ends inside a block means the answer starts inside it
    start_tokens: tuple[str, ...] = ()  # checked before the built-in ones
    tag_pairs: tuple[tuple[str, str], ...] = ()  # (start, end), checked before the built-in ones


class LlamaCpp(_Frozen):
    gpu_layers: int | None = None
    mmap: bool = True
    mlock: bool = False
    f16_kv: bool = True
    main_gpu: int = 0
    batch: int = 512
    rope_freq_base: float = 0.0
    rope_freq_scale: float = 0.0
    parallel: int | None = None  # slots; None: by the machine the worker runs on (llama_cpp.default_parallel)
    grpc_servers: tuple[str, ...] = ()
    use_jinja: bool = False
    context_shift: bool = False
    cache_ram_mib: int | None = 8192  # llama.cpp's --cache-ram default; None: unlimited (-1)
    flash_attention: Literal["auto", "on", "off"] = "auto"  # llama.cpp's default: on where it is supported
    repack: bool = True  # llama.cpp's extra CPU buffer types (repacked weights); the --no-repack flag turns them off
    # LocalAI's llama.cpp load settings (backend/cpp/llama-cpp/grpc-server.cpp l.499-1354).
    tensor_split: tuple[float, ...] = ()  # the share of each GPU
    split_mode: Literal["none", "layer", "row"] | None = None  # None: llama.cpp's (layer)
    cache_type_k: str | None = None  # KV cache types (f16, q8_0, q4_0, ...); None: f16
    cache_type_v: str | None = None
    offload_kqv: bool = True  # False: the KV cache stays on the CPU (no_kv_offloading)
    op_offload: bool = True
    swa_full: bool = False  # sliding-window layers keep the whole context (more memory, any prefix reusable)
    check_tensors: bool = False
    ubatch: int | None = None  # physical batch; None: the same as batch
    threads_batch: int | None = None  # prompt threads; None: the same as threads
    pooling_type: Literal["none", "mean", "cls", "last", "rank"] | None = None  # embeddings; None: the model's
    rope_scaling: Literal["none", "linear", "yarn"] | None = None  # None: the model's
    yarn_ext_factor: float | None = None
    yarn_attn_factor: float | None = None
    yarn_beta_fast: float | None = None
    yarn_beta_slow: float | None = None
    lora_adapter: str | None = None  # a LoRA file, and the base model it was trained on
    lora_base: str | None = None
    lora_scale: float = 1.0
    kv_overrides: dict[str, bool | int | float | str] = Field(default_factory=dict)  # GGUF metadata overrides
    # Sampling LocalAI reads from the model YAML only (top level; core/backend/options.go l.568).
    mirostat: Literal[0, 1, 2] = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1


class Transformers(_Frozen):
    model_class: str = "AutoModelForCausalLM"
    quantization: str | None = None
    device: str | None = None
    f16: bool = False
    trust_remote_code: bool = False
    low_vram: bool = False


class Vllm(_Frozen):
    quantization: str | None = None
    dtype: str = "auto"
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    distributed_executor_backend: str | None = None
    max_model_len: int | None = None
    enforce_eager: bool = False
    swap_space: float | None = None
    load_format: str | None = None
    disable_log_stats: bool = False
    trust_remote_code: bool = False
    main_gpu: int | None = None  # the GPU a one-GPU model runs on (CUDA_VISIBLE_DEVICES); unused on CPU
    engine_args: dict[str, object] = Field(default_factory=dict)


class Exllama2(_Frozen):
    gpu_split: tuple[float, ...] = ()


class ModelPlan(_Frozen):
    name: str
    backend: Backend
    source: str = Field(description="file:line where the model was declared.")
    description: str | None = None
    usecases: tuple[Usecase, ...]
    model: str | None = Field(description="Local path (relative to the working directory) or hub id.")
    model_is_local: bool = True
    downloads: tuple[ModelDownload, ...] = Field(default=(), description="Files the launcher fetches before the "
                                                 "model loads (LocalAI's model URLs and download_files).")
    context_size: int | None = Field(description="None: the backend's own default for this model.")
    threads: int | None = Field(description="None: the physical cores available to the worker.")
    system_prompt: str | None = None
    reasoning_effort: str | None = None  # the templates' default (a request's wins)
    chat_template_kwargs: dict[str, object] = Field(default_factory=dict)  # extra tokenizer-template variables
    roles: dict[str, str] = Field(default_factory=dict)
    sampling: Sampling
    output: OutputRules
    reasoning: Reasoning = Field(default_factory=Reasoning)
    function_parsing: FunctionParsing = Field(default_factory=FunctionParsing)
    tool_grammar: ToolGrammar = Field(default_factory=ToolGrammar)
    templates: Templates
    embeddings: bool = False
    grammar: str | None = Field(default=None, description="A GBNF grammar every generation must match (llama-cpp).")
    llama_cpp: LlamaCpp | None = None
    transformers: Transformers | None = None
    vllm: Vllm | None = None
    exllama2: Exllama2 | None = None
    origins: dict[str, str] = Field(description="Where each value came from, keyed by dotted path.")


class ServerPlan(_Frozen):
    host: str = "127.0.0.1"
    port: int = 8080
    api_key_env: str | None = Field(default=None, description="Name of the env var holding API keys, comma-separated "
                                    "(the plan never holds the keys).")
    api_key_file: str | None = Field(default=None, description="A file holding API keys, one per line.")
    max_body_bytes: int = 8 * 1024 * 1024
    max_n: int = 8
    max_tokens_cap: int | None = Field(default=None, description="Largest max_tokens a request may ask for.")
    max_queue_per_model: int = Field(default=64, description="Generations queued or running per model; more: 429.")
    max_in_flight: int = Field(default=256, description="Generations in the whole server; more: 503.")
    cors_origins: tuple[str, ...] = ()
    models_dir: str | None = None
    idle_unload_s: float | None = Field(default=None, description="Stop a model's worker after this many seconds "
                                        "without requests (None: keep it loaded).")
    max_resident_models: int | None = Field(default=None, description="Most model workers loaded at once; loading "
                                            "another evicts the least recently used idle one.")
    stream_send_timeout_s: float = Field(default=60.0, description="A streaming client that takes no bytes for this "
                                         "long is dropped and its generation cancelled.")
    drain_timeout_s: int = Field(default=10, description="On SIGTERM, how long in-flight requests may finish "
                                 "before the workers stop.")
    header_timeout_s: float = Field(default=10.0, gt=0, description="A connection that sends no complete request "
                                    "head for this long is answered 408 and closed.")
    worker_stall_timeout_s: float = Field(default=120.0, gt=0, description="A worker with requests in flight that "
                                          "sends nothing for this long (stopped, or stuck in native code) is "
                                          "killed; its requests fail and it restarts.")
    max_connections: int = Field(default=1024, ge=1, description="Open connections in the whole server; more are "
                                 "answered 503 and closed.")
    max_connections_per_client: int = Field(default=128, ge=1, description="Open connections from one client "
                                            "address; more are answered 429 and closed.")


class LaunchPlan(_Frozen):
    plan_version: int = PLAN_VERSION
    server: ServerPlan = Field(default_factory=ServerPlan)
    models: tuple[ModelPlan, ...] = ()

    def model(self, name: str) -> ModelPlan | None:
        return next((m for m in self.models if m.name == name), None)

    def to_json(self) -> str:
        """Deterministic bytes: sorted keys, fixed indentation, trailing newline."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> LaunchPlan:
        return cls.model_validate_json(text)


def plan_json_schema() -> str:
    schema = LaunchPlan.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "modelyard launch plan"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # regenerate schema/plan.schema.json
    import sys

    sys.stdout.write(plan_json_schema())
