"""``modelyard``: compile model configs into a launch plan, and serve them.

Only this module prints or exits. Exit codes: 0 clean (warnings allowed), 1 invalid config,
2 usage error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from modelyard.compiler import CompileOptions, CompileResult, LocalProbe, compile_sources, discover, format_report
from modelyard.compiler.explain import explain_model
from modelyard.compiler.overrides import OverrideSyntaxError, SetOverride, parse_set
from modelyard.compiler.plan import LaunchPlan, ServerPlan

from .chat import chat_command
from .gallery import galleries_from, gallery_group, gallery_option

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
DEFAULT_MODELS_DIR = "models"


class _Commands(click.Group):
    """A bug is one line and exit status 3, apart from a user's mistakes (1, 2): CI scripts that
    run ``compile`` can tell "my config is wrong" from "modelyard is"."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:  # anything else is a bug, reported as one
            if os.environ.get("MODELYARD_DEBUG"):
                raise
            click.echo(f"modelyard: internal error: {type(exc).__name__}: {exc} (a bug: please report it; "
                       "MODELYARD_DEBUG=1 shows the traceback)", err=True)
            sys.exit(EXIT_INTERNAL)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="modelyard")
def main() -> None:
    """modelyard: a local OpenAI-compatible text-generation server.

    Models are declared in YAML files (LocalAI's format), or dropped in as bare GGUF files.
    `modelyard compile` lints them and emits a launch plan; `modelyard launch` serves it (and
    the web console at /); `modelyard gallery` installs models from galleries; `modelyard chat`
    talks to a model in the terminal.
    """


main.add_command(gallery_group)
main.add_command(chat_command)


def _parse_sets(values: tuple[str, ...]) -> tuple[SetOverride, ...]:
    try:
        return tuple(parse_set(v) for v in values)
    except OverrideSyntaxError as exc:
        raise click.UsageError(str(exc)) from None


def _inputs(paths: tuple[str, ...], models_dir: str | None) -> list[str]:
    if paths:
        return list(paths)
    if models_dir:
        return [models_dir]
    if Path(DEFAULT_MODELS_DIR).is_dir():
        return [DEFAULT_MODELS_DIR]
    return []


def run_compile(
    paths: tuple[str, ...], models_dir: str | None, sets: tuple[str, ...], server: ServerPlan | None = None,
    check_files: bool = True, strict: bool = False,
) -> CompileResult:
    """Discover, then compile with this process's environment: shared by compile and launch."""
    if models_dir is not None and not Path(models_dir).is_dir():
        raise click.UsageError(f"--models-dir {models_dir!r} is not a directory")
    sources, problems = discover(_inputs(paths, models_dir), models_dir)
    options = CompileOptions(
        env=dict(os.environ), probe=LocalProbe(), overrides=_parse_sets(sets), server=server or ServerPlan(),
        check_files=check_files, strict=strict,
    )
    result = compile_sources(sources, options)
    if problems:
        return CompileResult(None, sorted(problems + result.diagnostics, key=lambda d: d.sort_key()))
    return result


@main.command("compile")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--models-dir", type=click.Path(), help="Directory of model files; relative model paths resolve "
              "against it. Default: the directory of each YAML file, or ./models when no PATH is given.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "github"]), default="text", show_default=True,
              help="text: file:line:col: model.path: message; json: for editors; github: workflow annotations.")
@click.option("--plan-out", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write the launch plan (JSON) here; '-' for standard output.")
@click.option("--explain", "explain", metavar="MODEL", help="Print MODEL's effective config and where each "
              "value came from (YAML line, default, environment, GGUF metadata, --set).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a value: server.port=9000, MODEL.context_size=2048, or context_size=2048 for "
                   "every model. Repeatable.")
@click.option("--no-file-checks", is_flag=True, help="Check the configs only: do not require model files to "
              "exist or read their metadata (for linting in CI where weights are absent).")
@click.option("--strict", is_flag=True, help="Treat every warning as an error: LocalAI keys modelyard does not "
              "act on, values read the way LocalAI reads them (top_p: 80), misplaced keys.")
def compile_command(paths, models_dir, fmt, plan_out, explain, sets, no_file_checks, strict) -> None:
    """Validate model configs and emit a deterministic launch plan.

    PATHS are model YAML files, GGUF files, or directories of them. Every problem is reported,
    sorted, one per line. Exit status: 0 valid (warnings allowed), 1 invalid, 2 usage error.
    """
    if not _inputs(paths, models_dir):
        raise click.UsageError("nothing to compile: give model files or directories, or --models-dir "
                               f"(./{DEFAULT_MODELS_DIR} is used when it exists)")
    result = run_compile(paths, models_dir, sets, check_files=not no_file_checks, strict=strict)
    to_stdout = plan_out == "-"
    report = format_report(result.diagnostics, fmt)
    if report:
        click.echo(report, err=to_stdout)
    if result.plan is None:
        sys.exit(EXIT_INVALID)
    if explain is not None:
        model = result.plan.model(explain)
        if model is None:
            names = ", ".join(m.name for m in result.plan.models) or "none"
            raise click.UsageError(f"--explain: no model named {explain!r} (models: {names})")
        click.echo(explain_model(model), nl=False)
    if plan_out:
        text = result.plan.to_json()
        if to_stdout:
            click.echo(text, nl=False)
        else:
            Path(plan_out).write_text(text, encoding="utf-8")
    sys.exit(EXIT_OK)



@main.command("launch")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--models-dir", type=click.Path(), help="Directory of model files (default ./models when it exists).")
@click.option("--plan", "plan_file", type=click.Path(exists=True, dir_okay=False),
              help="Serve a plan written by `modelyard compile --plan-out` instead of compiling.")
@click.option("--host", default=None, help="Address to listen on.  [default: 127.0.0.1]")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port to listen on.  [default: 8080]")
@click.option("--preload", is_flag=True, help="Load every model at start instead of on its first request.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a value, as for compile.")
@click.option("--api-key-env", metavar="NAME", help="Require API keys, read (comma-separated) from this environment "
              "variable. MODELYARD_API_KEYS is used when set and no key source is given.")
@click.option("--api-key-file", type=click.Path(dir_okay=False), help="Require API keys, read from this file "
              "(one per line).")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Allow browser requests from ORIGIN (repeatable; CORS is off by default).")
@click.option("--models", "install_refs", multiple=True, metavar="GALLERY@NAME",
              help="Install this gallery model into the models directory if it is missing, then serve it "
                   "(/readyz answers 503 until installs are done). Repeatable; default: MODELYARD_MODELS "
                   "(comma-separated).")
@gallery_option
@click.option("--allow-unverified", is_flag=True, help="Let installs fetch files that have no sha256.")
@click.option("--on-demand-install", is_flag=True, help="A request naming a gallery entry that is not installed "
              "starts its install (503 + Retry-After until it is served). Off by default.")
@click.option("--no-gallery-api", is_flag=True, help="Do not serve /models/apply, /models/available, "
              "/models/jobs and /models/delete (which write to the models directory).")
@click.option("--no-console", is_flag=True, help="Do not serve the web console at / (chat, models, gallery, "
                                                "status in the browser).")
@click.option("--idle-unload", "idle_unload_s", type=click.FloatRange(min=1), metavar="SECONDS",
              help="Stop a model's worker after SECONDS without requests, freeing its memory; the next request "
                   "loads it again.")
@click.option("--max-resident", "max_resident_models", type=click.IntRange(min=1), metavar="N",
              help="Keep at most N model workers loaded; loading another unloads the least recently used idle "
                   "one (a busy one never: the request gets 503 + Retry-After).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: one JSON object a line (time, level, logger, message, request_id, ...).")
def launch_command(paths, models_dir, plan_file, host, port, preload, sets, api_key_env, api_key_file, cors_origins,
                   install_refs, galleries, allow_unverified, on_demand_install, no_gallery_api, no_console, idle_unload_s,
                   max_resident_models, log_level, log_format) -> None:
    """Serve models behind the OpenAI API (/v1/chat/completions, /v1/completions, ...).

    PATHS are model YAML files, GGUF files, or directories of them; configs are compiled first
    and an invalid one stops the launch with the same report as `modelyard compile`. With no
    PATHS and no ./models directory, the embedded default model (Gemma 3 270M) is served.
    """
    from modelyard.launcher.backends import missing_backend_message
    from modelyard.launcher.logs import configure_logging
    from modelyard.launcher.server import KeySourceError, resolve_api_keys, serve

    if plan_file and (sets or paths or models_dir):
        given = "--set" if sets else "PATHS" if paths else "--models-dir"
        raise click.UsageError(f"{given} cannot be combined with --plan: a plan is already compiled; "
                               f"compile with {given} (modelyard compile ... --plan-out), then launch that plan")
    configure_logging(log_level, log_format)
    if plan_file:
        plan = LaunchPlan.from_json(Path(plan_file).read_text(encoding="utf-8"))
        served: tuple[str, ...] = ()
        _fetch_model_files(plan)
    else:
        inputs = paths or ((models_dir,) if models_dir else ())
        install_refs = install_refs or tuple(r.strip() for r in os.environ.get("MODELYARD_MODELS", "").split(",")
                                             if r.strip())
        if install_refs and not inputs:  # serve what is (or will be) installed, not the default model
            Path(DEFAULT_MODELS_DIR).mkdir(exist_ok=True)
            inputs = (DEFAULT_MODELS_DIR,)
        if not _inputs(inputs, None):
            inputs = (str(_default_model_file()),)
            click.echo("no models given and no ./models directory: serving the embedded default model", err=True)
        served = tuple(inputs)
        result = run_compile(tuple(inputs), models_dir, sets)
        if result.plan is not None and _fetch_model_files(result.plan):
            result = run_compile(tuple(inputs), models_dir, sets)  # now with the files' own metadata
        if result.diagnostics:
            click.echo(format_report(result.diagnostics, "text"), err=True)
        if result.plan is None:
            sys.exit(EXIT_INVALID)
        plan = result.plan
    if not (api_key_env or api_key_file or plan.server.api_key_env or plan.server.api_key_file) \
            and os.environ.get("MODELYARD_API_KEYS"):
        api_key_env = "MODELYARD_API_KEYS"
    updates = {k: v for k, v in (("host", host), ("port", port), ("api_key_env", api_key_env),
                                 ("api_key_file", api_key_file), ("cors_origins", cors_origins or None),
                                 ("idle_unload_s", idle_unload_s), ("max_resident_models", max_resident_models))
               if v is not None}
    if updates:
        plan = plan.model_copy(update={"server": plan.server.model_copy(update=updates)})
    try:
        api_keys = resolve_api_keys(plan, os.environ)
    except KeySourceError as exc:
        click.echo(f"cannot launch: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    refusals = [f"model {m.name!r}: {why}" for m in plan.models if (why := missing_backend_message(m.backend))]
    if refusals:
        click.echo("cannot launch:\n  " + "\n  ".join(refusals), err=True)
        sys.exit(EXIT_INVALID)
    installer = None
    if not no_gallery_api or install_refs or on_demand_install:
        from modelyard.launcher.installer import Installer

        installer = Installer(_install_directory(models_dir, served), galleries_from(galleries), os.environ,
                              allow_unverified=allow_unverified)
    if not plan.models and installer is None:
        raise click.UsageError("the plan has no models to serve")
    loose = None
    directory = _served_directory(models_dir, served)
    if directory is not None:  # GGUF files dropped in later are served when a request names them
        from modelyard.launcher.loose_models import LooseModels

        loose = LooseModels(directory, dict(os.environ))
    serve(plan, api_keys=api_keys, preload=preload, log_level=log_level, installer=installer,
          install_on_start=install_refs, on_demand_installs=on_demand_install, gallery_api=not no_gallery_api,
          loose_models=loose, console=not no_console)


def _fetch_model_files(plan: LaunchPlan) -> int:
    """Fetch the model files the plan names and lacks (LocalAI's model URLs, download_files),
    with progress on stderr; an unfetchable one stops the launch, naming the URI and the file."""
    from modelyard.launcher.model_files import ModelFileError, fetch_model_files

    try:
        return fetch_model_files(plan, os.environ, lambda line: click.echo(line, err=True))
    except ModelFileError as exc:
        click.echo(f"cannot launch: {exc}", err=True)
        sys.exit(EXIT_INVALID)


def _served_directory(models_dir: str | None, served: tuple[str, ...]) -> Path | None:
    """The models directory being served (--models-dir, or the one directory given), if any."""
    if models_dir:
        return Path(models_dir).resolve()
    directories = [Path(path) for path in served if Path(path).is_dir()]
    return directories[0].resolve() if len(directories) == 1 else None


def _install_directory(models_dir: str | None, served: tuple[str, ...]) -> Path:
    """Where gallery installs go: --models-dir, else the one directory being served (so the next
    `launch` of it serves them too), else ./models; absolute, as the log names it."""
    return _served_directory(models_dir, served) or Path(DEFAULT_MODELS_DIR).resolve()


def _default_model_file() -> Path:
    from importlib import resources

    return Path(str(resources.files("modelyard.gallery").joinpath("gemma-3-270m.yaml")))


if __name__ == "__main__":
    main()
