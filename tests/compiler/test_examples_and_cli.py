"""The examples compile, their plan is byte-for-byte golden, and the CLI keeps its contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelyard.cli.main import main
from modelyard.compiler.plan import plan_json_schema
from modelyard.compiler.sources import GGML_DEPRECATED

from ..conftest import REPO, assert_golden

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)
    for variable in ("LLAMACPP_PARALLEL", "LLAMACPP_GRPC_SERVERS", "GEMMA_CONTEXT_SIZE"):
        monkeypatch.delenv(variable, raising=False)


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_examples_plan_is_golden(in_repo) -> None:
    result = run("compile", "examples/", "--plan-out", "-")
    assert result.exit_code == 0, result.output
    assert_golden(GOLDEN / "examples.plan.json", result.stdout)


def test_plan_is_deterministic(in_repo) -> None:
    first = run("compile", "examples/", "--plan-out", "-").stdout
    second = run("compile", "examples/", "--plan-out", "-").stdout
    assert first == second


def test_plan_schema_file_is_current(repo) -> None:
    assert (repo / "schema" / "plan.schema.json").read_text() == plan_json_schema()


def test_plan_validates_against_plan_schema(in_repo) -> None:
    from jsonschema import Draft202012Validator

    plan = json.loads(run("compile", "examples/", "--plan-out", "-").stdout)
    schema = json.loads((REPO / "schema" / "plan.schema.json").read_text())
    assert list(Draft202012Validator(schema).iter_errors(plan)) == []


def test_explain_is_golden(in_repo, monkeypatch) -> None:
    # What this machine resolves ("on this machine:") depends on its CPUs: pinned to 2 here.
    monkeypatch.setattr("modelyard.compiler.machine.cpu_count", lambda: 2)
    result = run("compile", "examples/gemma-3-270m.yaml", "--explain", "gemma-3-270m")
    assert result.exit_code == 0
    assert_golden(GOLDEN / "explain-gemma-3-270m.txt", result.stdout)


@pytest.mark.parametrize(("cpus", "slots"), [(1, 2), (2, 2), (4, 2), (8, 4), (16, 4), (64, 8)])
def test_a_model_without_parallel_gets_slots_by_the_machine(cpus, slots) -> None:
    from modelyard.compiler.backends.llama_cpp import default_parallel

    assert default_parallel(cpus) == slots


def test_env_and_set_origins_show_in_explain(in_repo) -> None:
    result = run("compile", "examples/gemma-3-270m-parallel.yaml", "--explain", "gemma-3-270m-parallel",
                 "--set", "gemma-3-270m-parallel.threads=1",
                 env={"GEMMA_CONTEXT_SIZE": "1024", "LLAMACPP_GRPC_SERVERS": "10.1.1.1:50052"})
    lines = [line.split() for line in result.stdout.splitlines() if line.startswith("  ")]
    rows = {words[0]: (words[1], " ".join(words[2:])) for words in lines if len(words) >= 3}
    assert rows["context_size"] == ("1024", "[examples/gemma-3-270m-parallel.yaml:6:15]")
    assert rows["threads"] == ("1", "[--set]")
    assert rows["llama_cpp.grpc_servers"] == ('["10.1.1.1:50052"]', "[env LLAMACPP_GRPC_SERVERS]")
    assert rows["llama_cpp.parallel"] == ("4", "[examples/gemma-3-270m-parallel.yaml:12:5]")


def test_invalid_config_exits_1_with_sorted_report(tmp_path) -> None:
    (tmp_path / "b.yaml").write_text("name: b\nbackend: nope\nparameters: {model: x.gguf}\n")
    (tmp_path / "a.yaml").write_text("name: a\nbackend: llama-cpp\nparameters: {model: x.gguf, top_k: -2}\n")
    result = run("compile", str(tmp_path))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{tmp_path}/a.yaml:3:36: a.parameters.top_k: must be at least -1, got -2",
        f"{tmp_path}/b.yaml:2:10: b.backend: 'nope' is not one of 'llama-cpp', 'transformers', 'vllm', 'exllama2'",
        "error: 2 problems in 2 files",
    ]


def test_json_and_github_formats(tmp_path) -> None:
    (tmp_path / "m.yaml").write_text("name: m\nbackend: llama-cpp\ncontext_lenght: 1\nparameters: {model: x.gguf}\n")
    as_json = json.loads(run("compile", str(tmp_path), "--format", "json").stdout)
    assert as_json["errors"] == 1
    assert as_json["diagnostics"][0] == {
        "file": f"{tmp_path}/m.yaml", "line": 3, "column": 1, "path": "m.context_lenght",
        "severity": "error", "message": "unknown key (did you mean 'context_size'?)",
    }
    github = run("compile", str(tmp_path), "--format", "github").stdout.splitlines()
    assert github[0] == (f"::error file={tmp_path}/m.yaml,line=3,col=1,title=m.context_lenght::"
                         "unknown key (did you mean 'context_size'?)")


@pytest.mark.parametrize("args", [
    ("compile", "--set", "no-equals-sign", "examples/"),
    ("compile", "--format", "xml", "examples/"),
    ("compile", "examples/", "--explain", "no-such-model"),
    ("compile", "--models-dir", "/definitely/not/here"),
])
def test_usage_errors_exit_2(in_repo, args) -> None:
    assert run(*args).exit_code == 2


def test_launch_refuses_set_and_paths_beside_a_plan(in_repo, tmp_path) -> None:
    plan = tmp_path / "plan.json"
    assert run("compile", "examples/", "--plan-out", str(plan)).exit_code == 0
    refused = run("launch", "--plan", str(plan), "--set", "gemma-3-270m.context_size=512")
    assert refused.exit_code == 2
    assert refused.output.splitlines()[-1] == (
        "Error: --set cannot be combined with --plan: a plan is already compiled; compile with --set "
        "(modelyard compile ... --plan-out), then launch that plan")
    assert run("launch", "--plan", str(plan), "examples/").exit_code == 2


def test_no_inputs_is_a_usage_error(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("compile")
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == ("Error: nothing to compile: give model files or directories, or "
                                              "--models-dir (./models is used when it exists)")


def test_plan_out_file(in_repo, tmp_path) -> None:
    out = tmp_path / "plan.json"
    assert run("compile", "examples/", "--plan-out", str(out)).exit_code == 0
    assert out.read_text() == (GOLDEN / "examples.plan.json").read_text()


def test_bare_gguf_becomes_an_implicit_model(tmp_path) -> None:
    from gguf import GGUFWriter

    writer = GGUFWriter(str(tmp_path / "tiny.gguf"), "llama")
    writer.add_context_length(1024)
    writer.add_token_list(["<s>", "é", "hello", ""] * 1000)  # skipped on the way to the template
    writer.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    (tmp_path / "old.bin").write_bytes(b"tjgg" + b"\0" * 16)
    result = run("compile", str(tmp_path), "--plan-out", "-")
    assert result.exit_code == 1  # the ggml file is refused...
    assert result.stderr.splitlines() == [
        f"{tmp_path}/old.bin:1:1: {GGML_DEPRECATED}",
        "error: 1 problem in 1 file",
    ]
    (tmp_path / "old.bin").unlink()
    plan = json.loads(run("compile", str(tmp_path), "--plan-out", "-").stdout)
    [model] = plan["models"]
    assert (model["name"], model["context_size"], model["usecases"]) == ("tiny.gguf", 1024, ["chat", "completion", "edit"])
    assert model["templates"]["tokenizer_template"]["dialect"] == "tokenizer"
    assert model["origins"]["context_size"] == "gguf llama.context_length (1024, capped at 8192)"


def test_an_internal_error_is_one_line_and_exit_status_3(in_repo, monkeypatch) -> None:
    import modelyard.cli.main as cli

    def broken(*args, **kwargs):
        raise KeyError("boom")

    monkeypatch.setattr(cli, "run_compile", broken)
    monkeypatch.delenv("MODELYARD_DEBUG", raising=False)
    result = run("compile", "examples/")
    assert result.exit_code == 3
    assert result.output.strip().splitlines() == [
        "modelyard: internal error: KeyError: 'boom' (a bug: please report it; MODELYARD_DEBUG=1 shows the traceback)"]


def test_gallery_installs_go_to_the_served_directory(tmp_path, monkeypatch) -> None:
    """`launch other/` installs into other/ (the next launch of it serves them); the log names it whole."""
    from modelyard.cli.main import _install_directory

    monkeypatch.chdir(tmp_path)
    served, second = tmp_path / "other", tmp_path / "more"
    served.mkdir()
    second.mkdir()
    (tmp_path / "a.yaml").write_text("")
    assert _install_directory(None, ("other",)) == served
    assert _install_directory("elsewhere", ("other",)) == tmp_path / "elsewhere"
    assert _install_directory(None, ("other", "more")) == tmp_path / "models"  # which one? the default
    assert _install_directory(None, ("a.yaml",)) == tmp_path / "models"
