"""OpenAI request bodies as pydantic models, and how a validation failure becomes a 400.

Unknown fields are ignored (as OpenAI and vLLM do); known fields are checked for type and range.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from starlette.requests import ClientDisconnect, Request

from .errors import ClientGone, OpenAIError


class RequestBody(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(RequestBody):
    include_usage: bool = False


class ResponseFormat(RequestBody):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _schema_present(self) -> ResponseFormat:
        if self.type == "json_schema" and not isinstance((self.json_schema or {}).get("schema"), dict):
            raise ValueError("json_schema.schema must be a JSON Schema object")
        return self


MAX_LOGIT_BIAS = 1024
MAX_STOPS = 256
MAX_STOP_CHARS = 4096


class Sampling(RequestBody):
    model: str | None = None
    temperature: float | None = Field(default=None, ge=0)  # no upper bound: LocalAI and llama.cpp take any
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=-1)  # 0 and -1 disable it (llama.cpp, vLLM)
    min_p: float | None = Field(default=None, ge=0, le=1)
    typical_p: float | None = Field(default=None, ge=0, le=1)
    repeat_penalty: float | None = Field(default=None, ge=0)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**64 - 1)  # a 64-bit seed, signed or not
    logit_bias: dict[str, float] | None = Field(
        default=None, description="Token id (as a string) to a bias from -100 to 100 added to its logit.")
    n: int = Field(default=1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    ignore_eos: bool = False
    n_keep: int | None = Field(default=None, ge=-1, le=2**31 - 1, description=(
        "Prompt tokens kept when a context shift makes room (-1: all of them; llama-cpp models with "
        "context_shift). LocalAI's extension."))

    @field_validator("stream_options")
    @classmethod
    def _only_when_streaming(cls, value: StreamOptions | None, info: ValidationInfo) -> StreamOptions | None:
        if value is not None and not info.data.get("stream"):
            raise ValueError("stream_options is only allowed when stream is true")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _token_ids_and_bounded_biases(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return value
        if len(value) > MAX_LOGIT_BIAS:
            raise ValueError(f"logit_bias may hold at most {MAX_LOGIT_BIAS} tokens")
        for key, bias in value.items():
            if not key.isascii() or not key.isdigit() or len(key) > 9:
                raise ValueError(f"keys are token ids, got {key!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"biases are from -100 to 100, got {bias} for token {key}")
        return value

    def biases(self) -> tuple[tuple[int, float], ...] | None:
        return None if not self.logit_bias else tuple(sorted((int(k), float(b)) for k, b in self.logit_bias.items()))

    @field_validator("stop")
    @classmethod
    def _bounded_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        # OpenAI allows 4; LocalAI appends any number (request.go l.376). A bound remains: each
        # stop is looked for after every token.
        if isinstance(value, list) and len(value) > MAX_STOPS:
            raise ValueError(f"stop may hold at most {MAX_STOPS} sequences")
        if sum(len(stop) for stop in ([value] if isinstance(value, str) else value or ())) > MAX_STOP_CHARS:
            raise ValueError(f"the stop sequences may hold at most {MAX_STOP_CHARS} characters in all")
        return value

    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [s for s in ([self.stop] if isinstance(self.stop, str) else self.stop) if s]


class ContentPart(RequestBody):
    type: str
    text: str | None = None


class FunctionCallPart(RequestBody):
    name: str
    arguments: str = "{}"  # a JSON text, as OpenAI sends it


class ToolCallPart(RequestBody):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallPart
    index: int = 0  # absent from OpenAI's requests; a client replaying streamed calls may send it


class ChatMessage(RequestBody):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallPart] | None = None  # assistant: the calls it made
    tool_call_id: str | None = None  # tool: the call this message answers
    function_call: FunctionCallPart | None = None  # legacy assistant call

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        unsupported = [p.type for p in self.content if p.type != "text"]
        if unsupported:
            raise OpenAIError(400, f"content parts of type {unsupported[0]!r} are not supported (text only)",
                              param="messages")
        return "".join(p.text or "" for p in self.content)


_REASONING_EFFORT = Field(default=None, min_length=1, max_length=32, description=(
    "How hard a reasoning model should think; reaches the templates (.ReasoningEffort; a tokenizer chat "
    "template's reasoning_effort)."))


class ChatCompletionRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=0)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool = True
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    grammar: str | None = Field(default=None, min_length=1, description="A GBNF grammar the output must match "
                                "(LocalAI extension; llama-cpp models).")
    reasoning_effort: str | None = _REASONING_EFFORT
    chat_template_kwargs: dict[str, Any] | None = Field(default=None, description=(
        "Extra variables for the model's own (tokenizer) chat template (vLLM's extension), over the YAML's."))


class CompletionRequest(Sampling):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        description="A string, or a token array (sent to the model as is), or a list holding one of either.")
    max_tokens: int | None = Field(default=None, ge=0)
    grammar: str | None = Field(default=None, min_length=1, description="A GBNF grammar the output must match "
                                "(LocalAI extension; llama-cpp models).")
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool = False
    suffix: str | None = None
    reasoning_effort: str | None = _REASONING_EFFORT


class EditRequest(Sampling):
    instruction: str
    input: str | list[str] = Field(default="", description="The text to edit, or a list of texts (one choice each).")
    max_tokens: int | None = Field(default=None, ge=0)
    reasoning_effort: str | None = _REASONING_EFFORT

    @field_validator("input")
    @classmethod
    def _some_inputs(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("input must not be an empty list")
        return value


class TokenizeRequest(RequestBody):
    """``/v1/tokenize``: LocalAI's ``{model, content}`` and llama.cpp's ``{content, add_special,
    with_pieces}``."""

    model: str | None = None
    content: str = Field(description="The text to tokenize.")
    add_special: bool = Field(default=True, description="Add the tokenizer's BOS (and the like), as a prompt gets.")
    with_pieces: bool = Field(default=False, description="Answer each token as {id, piece} (llama.cpp's form).")


class DetokenizeRequest(RequestBody):
    """``/v1/detokenize``: ``{model, tokens}`` (LocalAI's and llama.cpp's)."""

    model: str | None = None
    tokens: list[int] = Field(description="Token ids.")

    @field_validator("tokens")
    @classmethod
    def _ids(cls, value: list[int]) -> list[int]:
        if any(t < 0 or t > 2**31 - 1 for t in value):
            raise ValueError("token ids are from 0 to 2^31 - 1")
        return value


class EmbeddingRequest(RequestBody):
    model: str | None = None
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A string, a list of strings, a token array, or a list of token arrays.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("input must not be an empty list")
        if isinstance(value, list) and len(value) > 2048:
            raise ValueError("input may hold at most 2048 items")
        if isinstance(value, list) and any(isinstance(item, list) and not item for item in value):
            raise ValueError("a token array must not be empty")
        if any(t < 0 for item in (value if isinstance(value, list) else []) for t in
               (item if isinstance(item, list) else [item] if isinstance(item, int) else [])):
            raise ValueError("token ids are not negative")
        return value

    def inputs(self) -> list[str | list[int]]:
        """One entry per embedding to return: a text, or a token array."""
        if isinstance(self.input, str):
            return [self.input]
        if all(isinstance(item, int) for item in self.input):
            return [list(self.input)]  # one token array
        return list(self.input)


# pydantic names the union branch it tried ("str", "list[ContentPart]"): not part of the field path.
class ApplyRequest(RequestBody):
    """``POST /models/apply`` (LocalAI's shape)."""

    id: str | None = Field(default=None, min_length=1, description="A gallery entry: GALLERY@NAME or NAME.")
    url: str | None = Field(default=None, min_length=1, description="Or a base model config to fetch (https, github:).")
    name: str | None = Field(default=None, min_length=1, description="Install under this model name (required with url).")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Model YAML keys merged over the entry's.")
    files: list[dict[str, Any]] = Field(default_factory=list, description="With url: files to fetch "
                                        "({filename, uri, sha256}).")

    @model_validator(mode="after")
    def _one_source(self) -> ApplyRequest:
        if (self.id is None) == (self.url is None):
            raise ValueError("give either 'id' (a gallery entry) or 'url' (a model config)")
        if self.url is not None and self.name is None:
            raise ValueError("'name' is required with 'url'")
        return self


# A \uD800-\uDFFF escape: JSON lets a lone one through, and no UTF-8 text (a prompt for the
# tokenizer, a message to the worker) can hold it.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _refuse_lone_surrogates(data: Any) -> None:
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise OpenAIError(400, "the request body holds a lone UTF-16 surrogate (\\ud800-\\udfff): it is not text",
                          code="invalid_json") from None


_UNION_TAG = re.compile(r"^(str|int|float|bool|none|\w+\[.*\]|function-.*)$")


def parse_body(raw: bytes, model: type[BaseModel]) -> Any:
    """Parse and validate a JSON body; any problem is a 400 naming the offending field."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise OpenAIError(400, "the request body nests too deeply", code="invalid_json") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer past 4300 digits
        raise OpenAIError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise OpenAIError(400, "the request body must be a JSON object", code="invalid_json")
    if _SURROGATE_ESCAPE.search(raw):
        _refuse_lone_surrogates(data)
    return validate(data, model)


def validate(data: dict[str, Any], model: type[BaseModel]) -> Any:
    """``data`` as ``model``; a problem is a 400 naming the offending field (the adapters of other
    API surfaces validate the chat request they build from the client's with it too)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        location = [str(part) for part in error["loc"] if not _UNION_TAG.match(str(part))]
        param = ".".join(location) or None
        message = error["msg"].removeprefix("Value error, ")
        raise OpenAIError(400, f"{param}: {message}" if param else message, param=param,
                          code="invalid_value") from None


BODY_READ_TIMEOUT_S = 30.0


async def read_body(request: Request, limit: int, timeout_s: float = BODY_READ_TIMEOUT_S) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes, and with 408
    when it has not all arrived within ``timeout_s`` (a client trickling bytes holds no slot)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise OpenAIError(413, f"request body larger than {limit} bytes", code="request_too_large")

    async def receive() -> bytes:
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise OpenAIError(413, f"request body larger than {limit} bytes", code="request_too_large")
        except ClientDisconnect:
            raise ClientGone() from None
        return bytes(body)

    try:
        return await asyncio.wait_for(receive(), timeout_s)
    except asyncio.TimeoutError:
        raise OpenAIError(408, f"the request body did not arrive within {timeout_s:.0f} s",
                          code="request_timeout") from None
