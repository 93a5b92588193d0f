"""``modelyard gallery``: list, show, install and remove gallery models."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from modelyard.compiler.diagnostics import format_text
from modelyard.compiler.gallery import GalleryError
from modelyard.compiler.overrides import OverrideSyntaxError, parse_set

EXIT_FAILED = 1

gallery_option = click.option(
    "--gallery", "galleries", multiple=True, metavar="[NAME=]PATH|URL",
    help="A gallery index to read besides the built-in one (modelyard's or LocalAI's format). Repeatable. "
         "Default: MODELYARD_GALLERIES (comma-separated, or LocalAI's JSON list).")


def galleries_from(given: tuple[str, ...]):
    from modelyard.launcher.galleries import Galleries, parse_specs

    try:
        return Galleries(parse_specs(given, os.environ), os.environ)
    except GalleryError as exc:
        raise click.UsageError(str(exc)) from None


@contextmanager
def _user_errors():
    """Gallery problems are the user's to fix: one line, no traceback, exit 1."""
    try:
        yield
    except GalleryError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)


@click.group("gallery")
def gallery_group() -> None:
    """Browse and install models from galleries.

    The built-in gallery ships with modelyard; add your own index (or LocalAI's) with
    --gallery. Entries are named NAME or GALLERY@NAME.
    """


@gallery_group.command("list")
@click.option("--tag", "tags", multiple=True, help="Only entries with this tag (repeatable: all must match).")
@click.option("--models-dir", type=click.Path(file_okay=False), default="models", show_default=True,
              help="Where installed models are (to mark them).")
@gallery_option
def list_command(tags, models_dir, galleries) -> None:
    """List gallery entries (installed ones are marked with *)."""
    from modelyard.launcher.installer import Installer

    store = galleries_from(galleries)
    with _user_errors():
        installed = set(Installer(Path(models_dir), store, os.environ).installed().values())
        for gallery in store.all():
            for diagnostic in gallery.diagnostics:
                if diagnostic.is_error:
                    click.echo(format_text(diagnostic), err=True)
            for entry in gallery.entries:
                if all(tag in entry.tags for tag in tags):
                    mark = "*" if entry.id in installed else " "
                    summary = entry.description.splitlines()[0] if entry.description else ""
                    click.echo(f"{mark} {entry.id:<48} {summary[:70]}")


@gallery_group.command("show")
@click.argument("name")
@gallery_option
def show_command(name, galleries) -> None:
    """Show an entry: description, tags, files and the model YAML it installs."""
    from modelyard.launcher.installer import Installer

    store = galleries_from(galleries)
    with _user_errors():
        entry = store.find(name)
        resolved, text = Installer(Path("models"), store, os.environ).resolve(entry.id)
        click.echo(f"{entry.id}\n")
        if entry.description:
            click.echo(entry.description + "\n")
        for label, value in (("license", entry.license), ("tags", ", ".join(entry.tags)),
                             ("urls", "\n      ".join(entry.urls))):
            if value:
                click.echo(f"{label}: {value}")
        click.echo("files:")
        for f in resolved.files:
            click.echo(f"  {f.filename}\n    from {f.uri}\n    sha256 {f.sha256 or '(none: unverified)'}")
        click.echo("\nmodel YAML:\n" + text)


@gallery_group.command("install")
@click.argument("name")
@click.option("--models-dir", type=click.Path(file_okay=False), default="models", show_default=True,
              help="Where to install (created if missing).")
@click.option("--name", "as_name", help="Install under this model name instead of the entry's.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a value of the installed model YAML, e.g. context_size=8192 or "
                   "parameters.temperature=0.2. Repeatable.")
@click.option("--allow-unverified", is_flag=True, help="Install files that have no sha256 in the gallery.")
@gallery_option
def install_command(name, models_dir, as_name, sets, allow_unverified, galleries) -> None:
    """Install a gallery model: check its config, download its files (verified), write its YAML.

    The model YAML is compiled before anything is downloaded and again once the files are in;
    it is written last, so a failed install leaves no model behind. Interrupted downloads
    resume where they stopped when the install is run again.
    """
    from modelyard.launcher.installer import Installer

    overrides = _nested_overrides(sets)
    installer = Installer(Path(models_dir), galleries_from(galleries), os.environ, allow_unverified=allow_unverified)
    with _user_errors(), _progress_bar() as progress:
        result = installer.install(name, name=as_name, overrides=overrides, progress=progress)
    size = f"{result.fetched_bytes / 1e6:.1f} MB fetched" if result.fetched_bytes else "no download needed"
    click.echo(f"installed {result.name} ({size}): {result.yaml_path}")
    click.echo(f"serve it with: modelyard launch --models-dir {models_dir}")


@gallery_group.command("remove")
@click.argument("name")
@click.option("--models-dir", type=click.Path(file_okay=False), default="models", show_default=True)
def remove_command(name, models_dir) -> None:
    """Remove an installed model: its YAML, templates and the files it installed (files
    another installed model also uses are kept)."""
    from modelyard.launcher.galleries import Galleries
    from modelyard.launcher.installer import Installer

    with _user_errors():
        removed = Installer(Path(models_dir), Galleries([], os.environ), os.environ).remove(name)
    click.echo(f"removed {name} ({len(removed)} files)")


def _nested_overrides(sets: tuple[str, ...]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for text in sets:
        try:
            item = parse_set(text)
        except OverrideSyntaxError as exc:
            raise click.UsageError(str(exc)) from None
        node = overrides
        for part in item.key[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise click.UsageError(f"--set {text!r} conflicts with another --set")
        node[item.key[-1]] = item.value
    return overrides


@contextmanager
def _progress_bar():
    """An InstallProgress that draws a rich progress bar on a terminal, and prints one line per
    file otherwise (logs, CI)."""
    from modelyard.launcher.installer import InstallProgress

    progress = InstallProgress()
    if not sys.stderr.isatty():
        announced: set[str] = set()

        def line(p: InstallProgress) -> None:
            if p.file_name and p.file_name not in announced:
                announced.add(p.file_name)
                click.echo(f"fetching {p.file_name}", err=True)

        progress.listeners.append(line)
        yield progress
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        tasks: dict[str, Any] = {}

        def draw(p: InstallProgress) -> None:
            if not p.file_name:
                return
            if p.file_name not in tasks:
                tasks[p.file_name] = bar.add_task(p.file_name, total=p.file_total)
            bar.update(tasks[p.file_name], completed=p.file_done, total=p.file_total)

        progress.listeners.append(draw)
        yield progress
