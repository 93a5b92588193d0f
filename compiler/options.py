"""LocalAI's ``options: ["key:value", ...]`` list, parsed into typed values.

Each known option is declared once in ``OPTIONS``: its canonical name, its aliases, how to
parse its value, the backends it applies to, the plan field it sets and the environment
variable that fills it when the YAML does not (``env_overrides``). Options LocalAI knows but
modelyard does not act on are accepted with a warning; unknown ones get a did-you-mean warning
(options are a pass-through in LocalAI, so a typo there never broke a LocalAI config either).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .diagnostics import Problem, Severity
from .suggestions import did_you_mean


class OptionValueError(ValueError):
    pass


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise OptionValueError(f"expected true or false, got {text!r}")


def _positive_int(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise OptionValueError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise OptionValueError(f"must be at least 1, got {value}")
    return value


def _cache_mib(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise OptionValueError(f"expected a size in MiB (-1 for unlimited), got {text!r}") from None
    if value < -1:
        raise OptionValueError(f"must be -1 (unlimited) or a size in MiB, got {value}")
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise OptionValueError(f"expected one of {', '.join(allowed)}, got {text!r}")
        return value
    return parse


def _negated_bool(text: str) -> bool:
    return not _bool(text)


_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$")


def _servers(text: str) -> tuple[str, ...]:
    servers = tuple(s.strip() for s in text.split(",") if s.strip())
    if not servers:
        raise OptionValueError("expected a comma-separated list of host:port")
    bad = [s for s in servers if not _HOST_PORT.match(s) or int(s.rsplit(":", 1)[1]) > 65535]
    if bad:
        raise OptionValueError(f"expected host:port, got {', '.join(repr(b) for b in bad)}")
    return servers


@dataclass(frozen=True)
class OptionSpec:
    name: str
    parse: Callable[[str], Any]
    backends: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    field: str = ""  # the field of the backend's plan section it sets (default: its name)
    env: str | None = None  # an environment variable that fills it when the YAML leaves it unset

    @property
    def plan_field(self) -> str:
        return self.field or self.name


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("use_jinja", _bool, ("llama-cpp",), ("jinja",)),
    OptionSpec("context_shift", _bool, ("llama-cpp",)),
    OptionSpec("cache_ram", _cache_mib, ("llama-cpp",), field="cache_ram_mib"),
    OptionSpec("parallel", _positive_int, ("llama-cpp",), ("n_parallel",), env="LLAMACPP_PARALLEL"),
    OptionSpec("grpc_servers", _servers, ("llama-cpp",), ("rpc_servers",), env="LLAMACPP_GRPC_SERVERS"),
    # LocalAI's grpc-server.cpp names that are llama-cpp-python context or model parameters.
    OptionSpec("ubatch", _positive_int, ("llama-cpp",), ("n_ubatch",)),
    OptionSpec("threads_batch", _positive_int, ("llama-cpp",), ("n_threads_batch",)),
    OptionSpec("split_mode", _choice("none", "layer", "row"), ("llama-cpp",), ("sm",)),
    OptionSpec("swa_full", _bool, ("llama-cpp",)),
    OptionSpec("no_op_offload", _negated_bool, ("llama-cpp",), field="op_offload"),
    OptionSpec("check_tensors", _bool, ("llama-cpp",)),
    OptionSpec("pooling_type", _choice("none", "mean", "cls", "last", "rank"), ("llama-cpp",), ("pooling",)),
)

# llama-server flags acted on (LocalAI passes raw '-flag' entries to llama-server's own parser):
# flag -> (the option it sets, its value). These options have no key:value form of their own.
_REPACK = OptionSpec("repack", _bool, ("llama-cpp",))
SETTABLE: tuple[OptionSpec, ...] = (*OPTIONS, _REPACK)  # every option that lands in a plan section


def options_of(backend: str) -> tuple[OptionSpec, ...]:
    return tuple(spec for spec in SETTABLE if backend in spec.backends)
RAW_FLAGS = {"--no-repack": (_REPACK, "false"), "-nr": (_REPACK, "false")}

# Options LocalAI's backends understand that modelyard accepts without acting on them.
LOCALAI_ONLY_OPTIONS = frozenset({
    "kv_unified", "unified_kv", "fit", "fit_ctx", "fit_target", "fit_params", "cache_reuse", "n_cache_reuse",
    "devices", "device", "tool_parser", "reasoning_parser", "torch_dtype", "spec_type", "speculative_type",
    "draft_max", "draft_min", "n_cpu_moe", "cpu_moe", "override_tensor", "tensor_buft_overrides", "warmup",
    "cont_batching", "continuous_batching", "slot_prompt_similarity", "cache_idle_slots", "ctx_checkpoints",
    "n_ctx_checkpoints", "reasoning_format", "reasoning_budget", "enable_reasoning", "prefill_assistant",
    "embd_normalize", "embedding_normalize", "direct_io", "use_direct_io", "mmproj_offload", "mmproj_use_gpu",
})

_BY_NAME = {alias: spec for spec in OPTIONS for alias in (spec.name, *spec.aliases)}


@dataclass(frozen=True)
class ParsedOption:
    index: int
    spec: OptionSpec
    value: Any


_SPLIT_SERVER_LIST = ("; a comma inside [...] separates YAML list items: quote the grpc_servers option "
                      "or write options as a block list")


def _continues_server_list(earlier: list, entry: str) -> bool:
    """``options: [grpc_servers:a:1,b:2]`` reaches us as two items, the second a bare ``b:2``."""
    servers = _BY_NAME["grpc_servers"]
    return bool(_HOST_PORT.match(entry)) and any(
        isinstance(e, str) and _BY_NAME.get(e.partition(":")[0].strip()) is servers for e in earlier)


def _problem(index: int, message: str, is_error: bool) -> Problem:
    return Problem(("options", index), message, Severity.ERROR if is_error else Severity.WARNING)


def parse_options(entries: list[str], backend: str) -> tuple[dict[str, ParsedOption], list[Problem]]:
    """Typed options by canonical name, and the problems found; a later entry wins."""
    parsed: dict[str, ParsedOption] = {}
    problems: list[Problem] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, str):
            continue  # the schema reports non-strings
        if entry.strip() in RAW_FLAGS:
            spec, raw = RAW_FLAGS[entry.strip()]
            if backend in spec.backends:
                parsed[spec.name] = ParsedOption(index, spec, spec.parse(raw))
            else:
                problems.append(_problem(index, f"flag {entry!r} applies to {', '.join(spec.backends)}, "
                                                     f"not {backend}", True))
            continue
        if entry.startswith("-"):
            problems.append(_problem(index, f"raw llama-server flag {entry!r} is not acted on", False))
            continue
        key, sep, raw = entry.partition(":")
        key = key.strip()
        if not sep:
            problems.append(_problem(index, f"expected 'key:value', got {entry!r}", True))
            continue
        spec = _BY_NAME.get(key)
        if spec is None:
            if key in LOCALAI_ONLY_OPTIONS:
                problems.append(_problem(index, f"option {key!r} is not acted on yet", False))
            else:
                hint = (_SPLIT_SERVER_LIST if _continues_server_list(entries[:index], entry)
                        else did_you_mean(key, list(_BY_NAME) + sorted(LOCALAI_ONLY_OPTIONS)))
                problems.append(_problem(index, f"unknown option {key!r}, passed to no backend{hint}", False))
            continue
        if backend not in spec.backends:
            problems.append(_problem(
                index, f"option {spec.name!r} applies to {', '.join(spec.backends)}, not {backend}", True
            ))
            continue
        try:
            parsed[spec.name] = ParsedOption(index, spec, spec.parse(raw))
        except OptionValueError as exc:
            problems.append(_problem(index, f"option {spec.name!r}: {exc}", True))
    return parsed, problems
